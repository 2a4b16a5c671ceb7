#!/usr/bin/env bash
# Kafka client compatibility: real clients against the real `aqueduct` binary on
# 127.0.0.1. Installs the clients first, idempotently (kcat, Go and Debian's sarama
# 1.22 via apt; confluent-kafka, kafka-python and aiokafka into a venv), starts the
# server on free ports in a scratch directory, runs every scenario, stops the server
# by PID. Each scenario checks content, keys, headers and order.
#
#   Tests/compat/run.sh [path/to/aqueduct]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-${AQUEDUCT_BINARY:-$ROOT/.build/debug/aqueduct}}
VENV=${AQUEDUCT_TEST_VENV:-$HOME/.cache/aqueduct-test-venv}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-compat.XXXXXX")
started=$(date +%s)

echo "== installing Kafka clients (skipped when present)"
if ! command -v kcat >/dev/null || ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq kcat golang-go golang-github-shopify-sarama-dev >/dev/null
fi
if ! "$VENV/bin/python" -c "import confluent_kafka, kafka, aiokafka" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q confluent-kafka kafka-python aiokafka
fi
"$VENV/bin/python" -c "import confluent_kafka, kafka, aiokafka; print('   confluent-kafka', confluent_kafka.version(), '(librdkafka', confluent_kafka.libversion()[0] + '), kafka-python', kafka.__version__, ', aiokafka', aiokafka.__version__)"
echo "   kcat $(kcat -V 2>&1 | grep -o 'Version [0-9.]*' | head -1 | cut -d' ' -f2) ($(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1)), $(go version | cut -d' ' -f3), sarama 1.22 (Debian)"
(cd "$HERE/sarama" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$SCRATCH/gocache" go build -o "$SCRATCH/sarama-compat" . 2>"$SCRATCH/go-build.log") \
  || { echo "sarama scenario did not build:"; tail -20 "$SCRATCH/go-build.log"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export AQUEDUCT_HTTP=127.0.0.1:$HTTP_PORT
start_server() {
  "$BIN" server --data-dir "$SCRATCH/data" --http-listen 127.0.0.1:$HTTP_PORT --kafka-listen "$BOOTSTRAP" \
    --durability fsync --log-level warning >>"$SCRATCH/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null && return 0
    kill -0 "$SERVER" 2>/dev/null || { echo "the server exited:"; cat "$SCRATCH/server.log"; exit 1; }
    sleep 0.1
  done
}
cleanup() {
  kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
start_server
echo "== server pid $SERVER, Kafka on $BOOTSTRAP"

failures=0
run() {
  local name=$1; shift
  echo "-- $name"
  if ! "$@"; then
    echo "FAILED: $name"
    failures=$((failures + 1))
  fi
}

kcat_scenario() {
  local topic=kcat-$RANDOM$RANDOM group=kcat-group-$RANDOM
  printf 'alpha:one\nbeta:two\nalpha:three\ngamma:four\nbeta:five\n' | kcat -b "$BOOTSTRAP" -t "$topic" -P -K: || return 1
  kcat -b "$BOOTSTRAP" -L -t "$topic" | grep -q "topic \"$topic\" with 1 partitions" || { echo "metadata does not list $topic"; return 1; }
  local got
  got=$(kcat -b "$BOOTSTRAP" -t "$topic" -C -o beginning -e -q -K: -f '%k=%s@%o\n')
  [ "$got" = $'alpha=one@0\nbeta=two@1\nalpha=three@2\ngamma=four@3\nbeta=five@4' ] || { echo "consumed: $got"; return 1; }
  # Offsets by time: a timestamp before everything gives the first offset.
  kcat -b "$BOOTSTRAP" -Q -t "$topic:0:1" | grep -q "\[0\] offset 0" || { echo "offset query failed"; return 1; }
  got=$(timeout 30 kcat -b "$BOOTSTRAP" -G "$group" -o beginning -e -q -f '%s\n' "$topic" | sort | tr '\n' ' ')
  [ "$got" = "five four one three two " ] || { echo "group consumed: $got"; return 1; }
  echo "  kcat: metadata, keyed produce, consume in order, offsets by time, consumer group"
}

run kcat kcat_scenario
for scenario in kafka-python aiokafka confluent-compression confluent-group confluent-group-cooperative; do
  run "$scenario" timeout 300 "$VENV/bin/python" "$HERE/clients.py" "$BOOTSTRAP" "$scenario"
done
run sarama timeout 120 "$SCRATCH/sarama-compat" "$BOOTSTRAP"

# An idempotent producer keeps sending while the server is killed (SIGKILL) and
# restarted; afterwards every acknowledged record is there exactly once, in order.
crash_scenario() {
  export CRASH_TOPIC=crash-$RANDOM$RANDOM CRASH_ACKED="$SCRATCH/crash-acked.txt" CRASH_COUNT=30000
  timeout 300 "$VENV/bin/python" "$HERE/clients.py" "$BOOTSTRAP" crash-producer &
  local producer=$!
  sleep 2
  kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null
  echo "  server killed with SIGKILL mid-stream; restarting"
  start_server
  wait "$producer" || return 1
  timeout 120 "$VENV/bin/python" "$HERE/clients.py" "$BOOTSTRAP" crash-verify
}
run "kill -9 under an idempotent producer" crash_scenario

kill -0 "$SERVER" 2>/dev/null || { echo "the server died during the scenarios:"; tail -20 "$SCRATCH/server.log"; exit 1; }
if [ "$failures" -gt 0 ]; then
  echo "== $failures Kafka client scenario(s) failed; server log:"
  tail -40 "$SCRATCH/server.log"
  exit 1
fi
echo "== Kafka clients: all scenarios passed in $(( $(date +%s) - started )) s"
