#!/usr/bin/env bash
# The Kafka-protocol benchmark of issue #3, with its references in the same run: the
# Go sarama load generator (../shared/bench/kafka-go-bench) against Aqueduct (fsync and
# interval durability), Tansu (memory storage: the only one its build has), and NATS
# JetStream driven by its Go client (../shared/bench/peer-nats.sh). Loopback only; every
# server is started here and stopped by PID. Prints each run, then throughput ratios and
# broker CPU seconds per million messages.
#
#   scripts/bench-kafka.sh            # N=1000000 messages per size
#   N=200000 NATS=0 scripts/bench-kafka.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
export N=${N:-1000000}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-bench-kafka.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
[ -x .build/release/aqueduct ] || swift build -c release --product aqueduct

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
} | tee "$OUT/report.txt"

echo "== summary (produce msg/s; broker CPU s per million messages)"
awk '
  /^== Aqueduct, durability/ { broker = "aqueduct-" $4 }
  /^== Tansu/ { broker = "tansu" }
  /GO PUB/ && broker != "" {
    size = $3; rate = $0; sub(/.*= /, "", rate); sub(/ msg\/s.*/, "", rate)
    n = $0; sub(/.*PUB +[0-9]+ B acks=[a-z0-9]+: /, "", n); sub(/ msgs.*/, "", n)
    cpu = $0; sub(/.*server /, "", cpu); sub(/s .*/, "", cpu)
    if (n + 0 > 0 && $0 !~ /window 1/) printf "  %-22s %5s B  %9d msg/s  broker CPU %.2f s per million\n", broker, size, rate, cpu * 1000000 / n
  }' "$OUT/report.txt"
