#!/usr/bin/env bash
# The Kafka-protocol benchmark of issue #3, with its references in the same run: the
# Go sarama load generator (../shared/bench/kafka-go-bench) against Aqueduct (fsync and
# interval durability), Tansu (memory storage: the only one its build has), and NATS
# JetStream driven by its Go client (../shared/bench/peer-nats.sh). Loopback only; every
# server is started here and stopped by PID. Prints each run, then throughput ratios and
# broker CPU seconds per million messages.
#
# Then the throughput runs again with GENERATORS (default 2) generator processes at once,
# each on its own topic: one sarama process saturates a core of this 2-core machine before
# any broker does, so the issue asks for several. Rates are summed; broker CPU is read
# from /proc over the whole phase (10 ms ticks).
#
#   scripts/bench-kafka.sh            # N=1000000 messages per size
#   N=200000 NATS=0 GENERATORS=0 scripts/bench-kafka.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
export N=${N:-1000000}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-bench-kafka.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
[ -x .build/release/aqueduct ] || swift build -c release --product aqueduct

GENERATORS=${GENERATORS:-2}
TANSU=${TANSU:-${BENCH_VENVS:-$HOME/.cache/bench-venvs}/tansu/bin/tansu}  # installed by peer-tansu.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

aqueduct_run() {  # $1 durability
  local port http pid
  port=$(free_port); http=$(free_port)
  AQUEDUCT_TOPIC_MAX_MESSAGE_BYTES=16777216 .build/release/aqueduct server --data-dir "$OUT/data-$RANDOM" \
    --http-listen 127.0.0.1:$http --kafka-listen 127.0.0.1:$port --durability "$1" --log-level warning >"$OUT/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  echo "== Aqueduct, durability $1 (sarama producer: topic max message bytes 16 MiB, as Tansu has no limit)"
  SPID=$pid bash "$BENCH/peer-tansu.sh" 127.0.0.1:$port | grep -E "GO |PUB|E2E|READ"
  echo "   aqueduct RSS after run: $(awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$pid/status)"
  kill $pid; wait $pid 2>/dev/null
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# $1 bootstrap, $2 broker pid, $3 label: GENERATORS processes per size, N/GENERATORS each.
parallel_load() {
  local size g t0 t1 c0 c1 per=$((N / GENERATORS)) rate pids
  for size in 100 1024; do
    c0=$(ticks "$2"); t0=$(date +%s%N); pids=()
    for g in $(seq "$GENERATORS"); do
      "$OUT/kafkagobench" -brokers "$1" -n "$per" -size "$size" -acks all -window 20000 -consume=false >"$OUT/gen$g.txt" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s%N); c1=$(ticks "$2")
    rate=$(awk -v n=$((per * GENERATORS)) -v ns=$((t1 - t0)) 'BEGIN { printf "%d", n / (ns / 1e9) }')
    printf "   %d GENERATORS %5d B: %d msgs in %.2f s = %d msg/s | broker CPU %.2f s per million | clients:" \
      "$GENERATORS" "$size" $((per * GENERATORS)) "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$rate" \
      "$(echo "($c1 - $c0) / 100 * 1000000 / ($per * $GENERATORS)" | bc -l)"
    grep -h "GO PUB" "$OUT"/gen*.txt | sed -E 's/.*(ack latency p50 [0-9.]+ ms).*CPU client ([0-9.]+s \([0-9]+%\)).*failed ([0-9]+).*/ \1, CPU \2, failed \3;/' | tr -d '\n'
    echo
  done
}

parallel_runs() {
  local port http pid
  (cd "$BENCH/kafka-go-bench" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=${GOCACHE:-/tmp/gocache} \
    go build -o "$OUT/kafkagobench" .) >"$OUT/gobuild.log" 2>&1 || { echo "go build failed"; return; }
  for durability in fsync interval:1000; do
    port=$(free_port); http=$(free_port)
    AQUEDUCT_TOPIC_MAX_MESSAGE_BYTES=16777216 .build/release/aqueduct server --data-dir "$OUT/pdata-$RANDOM" \
      --http-listen 127.0.0.1:$http --kafka-listen 127.0.0.1:$port --durability $durability --log-level warning >"$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    echo "== Aqueduct, durability $durability, $GENERATORS generators"
    parallel_load 127.0.0.1:$port $pid
    kill $pid; wait $pid 2>/dev/null
  done
  port=$(free_port)
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$OUT/tansu.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  echo "== Tansu, $GENERATORS generators"
  parallel_load 127.0.0.1:$port $pid
  kill $pid; wait $pid 2>/dev/null
}

{
  echo "== $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg), N=$N"
  aqueduct_run fsync
  aqueduct_run interval:1000
  echo "== Tansu"
  PORT=$(free_port) bash "$BENCH/peer-tansu.sh" | grep -E "GO |PUB|E2E|READ|RSS|tansu [0-9]"
  if [ "${NATS:-1}" = 1 ]; then
    echo "== NATS JetStream"
    bash "$BENCH/peer-nats.sh" "$N" 2>&1 | grep -vE "^== install|^== context"
  fi
  if [ "$GENERATORS" -gt 0 ]; then parallel_runs; fi
} | tee "$OUT/report.txt"

echo "== summary (produce msg/s; broker CPU s per million messages)"
awk '
  /^== Aqueduct, durability/ { broker = "aqueduct-" $4; sub(/,$/, "", broker) }
  /^== Tansu/ { broker = "tansu" }
  /GO PUB/ && broker != "" {
    size = $3; rate = $0; sub(/.*= /, "", rate); sub(/ msg\/s.*/, "", rate)
    n = $0; sub(/.*PUB +[0-9]+ B acks=[a-z0-9]+: /, "", n); sub(/ msgs.*/, "", n)
    cpu = $0; sub(/.*server /, "", cpu); sub(/s .*/, "", cpu)
    if (n + 0 > 0 && $0 !~ /window 1/) printf "  %-22s %5s B  %9d msg/s  broker CPU %.2f s per million\n", broker, size, rate, cpu * 1000000 / n
  }
  / GENERATORS / {
    rate = $0; sub(/.*= /, "", rate); sub(/ msg\/s.*/, "", rate)
    cpu = $0; sub(/.*broker CPU /, "", cpu); sub(/ s per.*/, "", cpu)
    printf "  %-22s %5s B  %9d msg/s  broker CPU %.2f s per million (%d generators)\n", broker, $3, rate, cpu, $1
  }' "$OUT/report.txt"
