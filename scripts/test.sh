#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds everything (the `aqueduct`
# binary included, which the integration tests run as a child process on
# 127.0.0.1), then runs unit and integration tests, then the Kafka client
# compatibility suite (Tests/compat/run.sh), which installs its clients itself,
# idempotently: kcat, Go and sarama via apt, confluent-kafka, kafka-python and
# aiokafka into a venv under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

# Servers and topology containers a crashed test process left behind (it could not
# stop them by PID): this checkout's binaries whose parent is gone (adopted by init).
stop_orphans() {
  local pid
  for pid in $(pgrep -f "$PWD/.build/" || true); do
    if [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = 1 ]; then
      echo "   stopping orphaned test process $pid: $(ps -o args= -p "$pid" | cut -c1-120)"
      kill "$pid" 2>/dev/null || true
    fi
  done
}
stop_orphans
trap stop_orphans EXIT

echo "== generated Kafka codecs match their definitions"
python3 scripts/kafka-codegen.py --check

echo "== build (debug, with tests)"
swift build --build-tests

echo "== tests"
rm -rf "${TMPDIR:-/tmp}/aqueduct-tests"
swift test --skip-build "$@"

echo "== Kafka client compatibility"
Tests/compat/run.sh .build/debug/aqueduct

echo "== all tests passed in $(( $(date +%s) - started )) s"
