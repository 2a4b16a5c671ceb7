#!/usr/bin/env bash
# Replication's cost, in one run on this machine: the same sarama load (the shared
# kafka-go-bench: acks=all, 1 KiB, 3 partitions) against one node (1/1/1, today's
# path) and against three nodes with etcd (3/3/2), all on 127.0.0.1; prints throughput,
# ack latency and the brokers' CPU per million messages summed over nodes, and the
# ratios; then NATS JetStream with three clustered servers and an R3 stream fsyncing
# every write (scripts/bench-nats-r3.sh; AQUEDUCT_BENCH_NATS=0 skips it). Release
# build; everything stopped by PID.
# Usage: scripts/bench-cluster.sh [MESSAGES=200000] [SIZE=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
SIZE=${2:-1024}
BIN=${AQUEDUCT_BINARY:-.build/release/aqueduct}
[ -x "$BIN" ] || swift build -c release --product aqueduct
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-bench-cluster.XXXXXX")
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SCRATCH" /dev/shm/aqueduct-bench.*; }
trap cleanup EXIT
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-shopify-sarama-dev >/dev/null
fi
command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
(cd ../shared/bench/kafka-go-bench && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$SCRATCH/gocache" go build -o "$SCRATCH/gobench" .)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_seconds() {  # utime + stime of the given PIDs, in seconds
  local total=0 pid
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "scale=2; $total / $(getconf CLK_TCK)" | bc
}
wait_serving() { for _ in $(seq 600); do grep -q "aqueduct is serving" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not serving: $1"; tail -5 "$1"; exit 1; }
run_load() {  # brokers, label, pids...
  local brokers=$1 label=$2; shift 2
  local before after out
  before=$(cpu_seconds "$@")
  # Batches bounded (512 messages) so both runs store the same batches, well under
  # the topic's 1 MiB limit.
  out=$(timeout 600 "$SCRATCH/gobench" -brokers "$brokers" -n "$N" -size "$SIZE" -acks all -partitions 3 -flush-max-msgs 512 -consume=false 2>&1 | grep -E "GO PUB|first produce error")
  after=$(cpu_seconds "$@")
  echo "$label: $out"
  echo "$label: broker CPU $(echo "$after - $before" | bc) s for $N messages"
  # Latency without queueing: a fixed 5,000 msg/s.
  local paced
  [ -n "${STAGE_URLS:-}" ] && python3 scripts/stage-latency.py snapshot "$SCRATCH/stages-before.json" $STAGE_URLS
  # AQUEDUCT_BENCH_GENERATOR_NICE=N runs the paced generator at that niceness (the
  # servers then win a contended core; an experiment on scheduling, not a setting).
  paced=$(timeout 300 nice -n "${AQUEDUCT_BENCH_GENERATOR_NICE:-0}" "$SCRATCH/gobench" -brokers "$brokers" -n 30000 -size "$SIZE" -acks all -partitions 3 -rate 5000 -consume=false 2>&1 | grep "GO PUB")
  if [ -n "${STAGE_URLS:-}" ]; then
    python3 scripts/stage-latency.py snapshot "$SCRATCH/stages-after.json" $STAGE_URLS
    echo "$label at 5,000 msg/s, by stage (summed over nodes):"
    python3 scripts/stage-latency.py report "$SCRATCH/stages-before.json" "$SCRATCH/stages-after.json"
  fi
  echo "$label at 5,000 msg/s: $(echo "$paced" | grep -oE 'ack latency [^|]+')"
  PACED_P99=$(echo "$paced" | sed -nE 's/.*p99 ([0-9.]+) ms.*/\1/p' | head -1)
  RATE=$(echo "$out" | sed -E 's/.*= ([0-9]+) msg\/s.*/\1/')
  P99=$(echo "$out" | sed -nE 's/.*p99 ([0-9.]+) ms.*/\1/p' | head -1)
  CPU=$(echo "scale=2; ($after - $before) * 1000000 / $N" | bc)
}

echo "== one node (1/1/1)"
K=$(free_port); H=$(free_port)
"$BIN" server --data-dir "$SCRATCH/single" --kafka-listen "127.0.0.1:$K" --http-listen "127.0.0.1:$H" >"$SCRATCH/single.log" 2>&1 &
SINGLE=$!; PIDS+=($SINGLE)
wait_serving "$SCRATCH/single.log"
STAGE_URLS="http://127.0.0.1:$H"
run_load "127.0.0.1:$K" "single" "$SINGLE"
STAGE_URLS=""
SINGLE_RATE=$RATE; SINGLE_P99=$P99; SINGLE_CPU=$CPU; SINGLE_PACED_P99=$PACED_P99
kill "$SINGLE"; wait "$SINGLE" 2>/dev/null || true

echo "== three nodes (3/3/2) and etcd"
EP=$(free_port); PEER=$(free_port)
etcd --name bench --data-dir "$SCRATCH/etcd" --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" --initial-cluster "bench=http://127.0.0.1:$PEER" \
  >"$SCRATCH/etcd.log" 2>&1 &
ETCD=$!; PIDS+=($ETCD)
for _ in $(seq 100); do grep -q "ready to serve client requests" "$SCRATCH/etcd.log" && break; sleep 0.1; done
NODES=(); BOOT=""
for node in 1 2 3; do
  K=$(free_port)
  data="$SCRATCH/node-$node"
  # AQUEDUCT_BENCH_SPREAD_DISKS=1: node 3 keeps its data in /dev/shm, so two replica
  # syncs, not three, queue on the one disk; every ack still includes a real sync.
  if [ "${AQUEDUCT_BENCH_SPREAD_DISKS:-0}" = 1 ] && [ $node -eq 3 ]; then data=$(mktemp -d /dev/shm/aqueduct-bench.XXXXXX); fi
  H=$(free_port)
  "$BIN" server --cluster "etcd://127.0.0.1:$EP" --node-id $node --data-dir "$data" --kafka-listen "127.0.0.1:$K" \
    --http-listen "127.0.0.1:$H" >"$SCRATCH/node-$node.log" 2>&1 &
  NODES+=($!); PIDS+=($!); BOOT="$BOOT${BOOT:+,}127.0.0.1:$K"
  STAGE_URLS="${STAGE_URLS:-}${STAGE_URLS:+ }http://127.0.0.1:$H"
done
for node in 1 2 3; do wait_serving "$SCRATCH/node-$node.log"; done
run_load "$BOOT" "cluster" "${NODES[@]}"
echo "   etcd CPU (not counted above): $(cpu_seconds "$ETCD") s"
for pid in "${NODES[@]}" "$ETCD"; do kill "$pid" 2>/dev/null || true; done
wait "${NODES[@]}" "$ETCD" 2>/dev/null || true

if [ "${AQUEDUCT_BENCH_NATS:-1}" = 1 ]; then
  NATS_OUT=$(AQUEDUCT_NATS_WINDOW=20000 scripts/bench-nats-r3.sh "$N" "$SIZE" always 2>&1)
  echo "$NATS_OUT"
  NATS_RATE=$(echo "$NATS_OUT" | sed -nE 's/^NATS PUB [0-9]+ B x [0-9]+, R3: ([0-9]+) msg\/s.*/\1/p')
  NATS_PACED_P99=$(echo "$NATS_OUT" | sed -nE 's/^NATS PUB at 5,000.*p99 ([0-9.]+) ms.*/\1/p')
  NATS_CPU=$(echo "$NATS_OUT" | sed -nE 's/^NATS PUB [0-9]+ B x.*\(([0-9.]+) s per million\).*/\1/p')
fi

echo "== ratios (cluster / single)"
echo "throughput: $RATE / $SINGLE_RATE msg/s = $(echo "scale=2; $RATE / $SINGLE_RATE" | bc)x (target >= 0.4x)"
echo "ack p99 at full load: $P99 ms vs $SINGLE_P99 ms = $(echo "scale=2; $P99 / $SINGLE_P99" | bc)x"
echo "ack p99 at 5,000 msg/s: $PACED_P99 ms vs $SINGLE_PACED_P99 ms = $(echo "scale=2; $PACED_P99 / $SINGLE_PACED_P99" | bc)x (target <= 2x)"
echo "broker CPU per million messages: $CPU s (three nodes) vs $SINGLE_CPU s (one) = $(echo "scale=2; $CPU / $SINGLE_CPU" | bc)x"
if [ -n "${NATS_RATE:-}" ]; then
  echo "== ratios (Aqueduct three nodes 3/3/2 / NATS JetStream three servers R3, both fsync every write)"
  echo "throughput: $RATE / $NATS_RATE msg/s = $(echo "scale=2; $RATE / $NATS_RATE" | bc)x (target >= 2x)"
  echo "ack p99 at 5,000 msg/s: $PACED_P99 ms vs $NATS_PACED_P99 ms"
  echo "server CPU per million messages: $CPU s vs $NATS_CPU s = $(echo "scale=2; $CPU / $NATS_CPU" | bc)x"
fi
