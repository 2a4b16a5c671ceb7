#!/usr/bin/env bash
# The stream-processing benchmark of issue #4, with its reference in the same run:
# Apache Flink 2.3 (PyFlink's local MiniCluster, ../shared/bench/peer-flink.sh) running
# datagen → filter → blackhole and datagen → GROUP BY k COUNT(*) → blackhole at
# parallelism 1 and 2, then Aqueduct's topology engine running the same two jobs (and
# WordCount) in local mode, acking off and on. Prints rows/s side by side and the
# ratios against Flink's best figure for the job (any parallelism; for the count, with
# or without mini-batch aggregation).
#
#   scripts/bench-topology.sh                 # ROWS=20000000 (Flink's default)
#   ROWS=5000000 FLINK=0 scripts/bench-topology.sh
set -u
cd "$(dirname "$0")/.."
BENCH=${BENCH_DIR:-$PWD/../shared/bench}
ROWS=${ROWS:-20000000}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-bench-topology.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
[ -x .build/release/aqueduct-bench ] || swift build -c release --product aqueduct-bench

{
  echo "== $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg), ROWS=$ROWS"
  if [ "${FLINK:-1}" = 1 ]; then
    echo "== Apache Flink"
    # To a file, not a pipe: peer-flink.sh's watchdog (a background sleep) would hold a
    # pipe open for its 900 s.
    bash "$BENCH/peer-flink.sh" "$ROWS" >"$OUT/flink.txt" 2>&1
    grep -E "rows/s|install|total" "$OUT/flink.txt"
  fi
  # Threads: every task on its own thread (Heron's model, the default). Chained:
  # TopologyConfig.chaining, local-or-shuffle successors run on their upstream task's
  # thread (Flink's chaining, which its SQL jobs use).
  for setup in "threads 1 1" "threads 2 2" "chained 2 2"; do
    set -- $setup
    flags=(--spouts "$2" --parallelism "$3")
    [ "$1" = chained ] && flags+=(--chaining)
    echo "== Aqueduct topologies, $1, spouts $2, bolt parallelism $3"
    .build/release/aqueduct-bench topology --rows "$ROWS" "${flags[@]}" 2>&1 | grep -E "acking"
  done
} | tee "$OUT/report.txt"

echo "== summary (tuples or rows per second; ratio against Flink's best figure for the job)"
awk '
  /stateless filter/ { v = $0; sub(/.*-> /, "", v); sub(/ rows.*/, "", v); gsub(/,/, "", v); if (v + 0 > flink["filter"]) flink["filter"] = v + 0 }
  /GROUP BY k COUNT\(\*\)/ { v = $0; sub(/.*-> /, "", v); sub(/ rows.*/, "", v); gsub(/,/, "", v); if (v + 0 > flink["count"]) flink["count"] = v + 0 }
  /^== Aqueduct topologies/ { p = $0; sub(/^== Aqueduct topologies, /, "", p); gsub(/spouts /, "s=", p); gsub(/bolt parallelism /, "p=", p); gsub(/,/, "", p) }
  / acking / {
    job = $1; mode = $3; sub(/:$/, "", mode)
    v = $0; sub(/.*= /, "", v); sub(/ tuples\/s.*/, "", v); gsub(/,/, "", v)
    ref = flink[job]
    if (ref > 0) printf "  %-9s acking %-3s %-17s %10d tuples/s  Flink %10d rows/s  ratio %.2f\n", job, mode, p, v, ref, v / ref
    else printf "  %-9s acking %-3s %-17s %10d tuples/s\n", job, mode, p, v
  }' "$OUT/report.txt"
