#!/usr/bin/env bash
# Starts an Aqueduct server with its defaults on free loopback ports, floods it with
# scripts/abuse.py (unknown groups, group joins, producer ids, abandoned long polls,
# connections, stalled and unread requests, auto-created topics, big HTTP bodies) and
# reports its resident memory and a well-behaved client's latency during each flood.
# Stops the server by PID. Not part of the test command (it takes a few minutes).
#
#   scripts/abuse.sh [--only FLOOD ...]        AQUEDUCT_BINARY=... to pick the binary
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${AQUEDUCT_BINARY:-}
if [ -z "$binary" ]; then
  if [ -x .build/release/aqueduct ]; then binary=.build/release/aqueduct; else binary=.build/debug/aqueduct; fi
fi
[ -x "$binary" ] || { echo "abuse: no server binary; run 'swift build' (or set AQUEDUCT_BINARY)"; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kafka_port=$(free_port); http_port=$(free_port)
data=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-abuse.XXXXXX")
log="$data/server.log"
echo "abuse: $binary on 127.0.0.1:$kafka_port (Kafka) and :$http_port (HTTP), data in $data"
"$binary" server --data-dir "$data/data" --kafka-listen "127.0.0.1:$kafka_port" --http-listen "127.0.0.1:$http_port" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  grep -q "aqueduct is serving" "$log" && break
  kill -0 "$pid" 2>/dev/null || { echo "abuse: the server did not start:"; cat "$log"; exit 1; }
  sleep 0.1
done
status=0
python3 scripts/abuse.py --kafka "127.0.0.1:$kafka_port" --http "127.0.0.1:$http_port" --pid "$pid" "$@" || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "abuse: the server died; the end of its log:"; tail -50 "$log"; exit 1
fi
grep -E "critical|Fatal error" "$log" | head -5 || true
exit $status
