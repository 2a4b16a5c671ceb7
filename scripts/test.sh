#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds everything (the `aqueduct`
# binary included, which the integration tests run as a child process on
# 127.0.0.1), then runs unit and integration tests. Installs anything the tests
# need first (nothing beyond the Swift toolchain yet; the Kafka client suite will
# add its clients here, idempotently).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

echo "== build (debug, with tests)"
swift build --build-tests

echo "== tests"
rm -rf "${TMPDIR:-/tmp}/aqueduct-tests"
swift test --skip-build "$@"

echo "== all tests passed in $(( $(date +%s) - started )) s"
