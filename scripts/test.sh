#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds everything (the `aqueduct`
# binary included, which the integration tests run as a child process on
# 127.0.0.1), then runs unit and integration tests, then the Kafka client
# compatibility suite (Tests/compat/run.sh), which installs its clients itself,
# idempotently: kcat, Go and sarama via apt, confluent-kafka, kafka-python and
# aiokafka into a venv under ~/.cache. etcd (for the cluster tests, which start their
# own on loopback ports) is installed from Debian here.
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

echo "== etcd for the cluster tests (Debian's etcd-server; installed once, its service not started)"
if ! command -v etcd >/dev/null; then
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_added=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null; }
  [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
fi
etcd --version | head -1

echo "== build (debug, with tests)"
swift build --build-tests

echo "== tests"
rm -rf "${TMPDIR:-/tmp}/aqueduct-tests"
swift test --skip-build "$@"

echo "== Kafka client compatibility"
Tests/compat/run.sh .build/debug/aqueduct

echo "== cluster mode: three nodes and etcd; a node SIGKILLed, one SIGSTOPped past its lease, etcd killed and restarted, a node drained, a consumer group's coordinator SIGKILLed, a node removed for good (four nodes, HTTP on any node), a topology's node SIGKILLed"
Tests/compat/cluster.sh .build/debug/aqueduct kill
Tests/compat/cluster.sh .build/debug/aqueduct pause
Tests/compat/cluster.sh .build/debug/aqueduct etcd
Tests/compat/cluster.sh .build/debug/aqueduct drain
Tests/compat/cluster.sh .build/debug/aqueduct group
Tests/compat/cluster.sh .build/debug/aqueduct remove
Tests/compat/cluster.sh .build/debug/aqueduct topology

echo "== all tests passed in $(( $(date +%s) - started )) s"
