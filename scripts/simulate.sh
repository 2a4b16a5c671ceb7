#!/usr/bin/env bash
# Runs the whole-log replication simulation (Tests/AqueductReplicationTests/
# ClusterSimulation.swift) for many seeds: crashes with torn tails, lost and delayed
# messages, cut links, takeovers racing the old writer.
# Usage: scripts/simulate.sh [SEEDS=5000] [FIRST_SEED]
# A failing seed is printed with the command that replays it exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5000}
first=${2:-$(( (RANDOM << 15) | RANDOM ))}
swift build --build-tests >/dev/null 2>&1 || swift build --build-tests
echo "== $seeds runs from seed $first"
AQUEDUCT_SIM_SEEDS=$seeds AQUEDUCT_TEST_SEED=$first swift test --skip-build \
  --filter 'ClusterSimulationTests' 2>&1 | grep -E 'simulation|recorded|Test run with'
