#!/usr/bin/env bash
# Kafka conformance measured by librdkafka's own integration test suite, against one
# Aqueduct node on 127.0.0.1.
#
# Gets librdkafka's source of the version Debian ships (apt's source-package support,
# through a private sources list with `deb-src` for this machine's Debian suite, so the
# machine's own apt configuration is left alone), builds the library and
# tests/test-runner once into a cache directory, starts `aqueduct server` on free
# ports, runs each test that applies to one plaintext broker in its own test-runner
# process with a timeout, and prints a table (test, result, seconds, first error) and a
# final "N passed, M failed" line. Tests that need what a later issue brings (or a
# Java tool, or several brokers) are listed as SKIP with the reason.
#
#   scripts/conformance-librdkafka.sh [path/to/aqueduct] [test-id ...]
#
#   AQUEDUCT_CONFORMANCE_CACHE   build cache (default ~/.cache/aqueduct-conformance)
#   AQUEDUCT_CONFORMANCE_TIMEOUT seconds per test (default 300)
#   AQUEDUCT_CONFORMANCE_QUICK=1 test-runner's quick mode (-Q): less data, fewer rounds
#
# Not part of the README's test command: the whole run takes 20–40 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-${AQUEDUCT_BINARY:-$ROOT/.build/release/aqueduct}}
[ $# -gt 0 ] && shift
[ -x "$BIN" ] || BIN=$ROOT/.build/debug/aqueduct
[ -x "$BIN" ] || { echo "no aqueduct binary: build one first (swift build -c release)"; exit 2; }
CACHE=${AQUEDUCT_CONFORMANCE_CACHE:-$HOME/.cache/aqueduct-conformance}
TIMEOUT=${AQUEDUCT_CONFORMANCE_TIMEOUT:-300}
SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME")
mkdir -p "$CACHE"

# --- librdkafka, the version Debian ships, built once -------------------------------
APT=$CACHE/apt
apt_private() { apt-get -q -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null \
  -o Dir::State::Lists="$APT/lists" -o Debug::NoLocking=1 "$@"; }
RUNNER=$(ls -d "$CACHE"/librdkafka-*/tests/test-runner 2>/dev/null | tail -1 || true)
if [ -z "$RUNNER" ]; then
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$APT/lists/partial"
  echo "deb-src http://deb.debian.org/debian $SUITE main" >"$APT/sources.list"
  apt_private update >/dev/null
  VERSION=$(apt_private showsrc librdkafka 2>/dev/null | awk '/^Version:/ {print $2; exit}')
  [ -n "$VERSION" ] || { echo "Debian $SUITE has no librdkafka source package (see $APT/sources.list)"; exit 2; }
  UPSTREAM=${VERSION%-*}
  echo "== librdkafka $VERSION: source from Debian $SUITE, built into $CACHE (once, ~15 min)"
  command -v make >/dev/null && command -v gcc >/dev/null || apt-get install -y -qq build-essential >/dev/null
  dpkg -s zlib1g-dev libssl-dev >/dev/null 2>&1 || apt-get install -y -qq zlib1g-dev libssl-dev >/dev/null
  (cd "$CACHE" && apt_private source --download-only "librdkafka=$VERSION" >/dev/null 2>&1)
  rm -rf "$CACHE/librdkafka-$UPSTREAM"
  tar -xzf "$CACHE/librdkafka_$UPSTREAM.orig.tar.gz" -C "$CACHE"
  (cd "$CACHE/librdkafka-$UPSTREAM" && ./configure --disable-gssapi --disable-curl >"$CACHE/configure.log" 2>&1 \
    && make -j"$(nproc)" libs >"$CACHE/make.log" 2>&1 && make -C tests build >>"$CACHE/make.log" 2>&1) \
    || { echo "librdkafka did not build; see $CACHE/configure.log and $CACHE/make.log"; tail -20 "$CACHE/make.log"; exit 1; }
  RUNNER=$CACHE/librdkafka-$UPSTREAM/tests/test-runner
fi
SOURCE=$(dirname "$(dirname "$RUNNER")")
UPSTREAM=${SOURCE##*librdkafka-}

# --- which tests apply to one plaintext broker ---------------------------------------
# Every broker test of the suite is here (the local ones, -l, need no broker). A reason
# means: not run, and why.
declare -A WHY=(
  [0009_mock_cluster]="mock cluster only"
  [0038_performance]="a benchmark, not a check"
  [0047_partial_buf_tmout]="marked known issue by librdkafka"
  [0052_msg_timestamps]="needs Kafka's Java tools (kafka-topics.sh)"
  [0066_plugins]="needs librdkafka's test plugin, not built"
  [0077_compaction]="compacted topics: after #14"
  [0079_fork]="a fork() check of the client"
  [0097_ssl_verify]="TLS: after #17"
  [0098_consumer_txn]="transactions: after #16 (needs Java tools too)"
  [0101_fetch_from_follower]="needs racks and three brokers"
  [0103_transactions]="transactions: after #16"
  [0109_auto_create_topics]="ACLs set with kafka-acls.sh (Java): after #17"
  [0115_producer_auth]="ACLs: after #17"
  [0119_consumer_auth]="ACLs: after #17"
  [0126_oauthbearer_oidc]="SASL/OAUTHBEARER: after #17"
  [0129_fetch_aborted_msgs]="transactions: after #16"
  [0135_sasl_credentials]="SASL: after #17"
  [8000_idle]="manual test"
)
# Tests with subtests that need a later issue run the others, one SUBTESTS match each
# (test-runner matches it as a substring of the subtest's name); PASS means all passed.
# and 0113's subtests each get their own timeout (its u_ variants alone take ~5 min).
# A part marked "fixed:" hits a bug of the client, not of the broker: it runs against the
# same librdkafka with our one-line fix for it (see fixed_library below).
declare -A PARTS=(
  [0055]="standard|low linger|microsecond|high linger|linger.ms < 1000|no acks|idempotence"
  [0061]="without transactions"
  [0081]="CreateTopics|DeleteTopics|CreatePartitions|AlterConfigs|DescribeConfigs|DeleteRecords|DeleteGroups|ListConsumerGroups|DescribeConsumerGroups|DeleteConsumerGroupOffsets|AlterConsumerGroupOffsets|ListConsumerGroupOffsets|unclean"
  [0113]="a_assign|b_subscribe_with_cb_test|c_subscribe_no_cb_test|d_change_subscription_add_topic|e_change_subscription_remove_topic|f_assign_call_cooperative|g_incremental_assign_call_eager|k_add_partition|l_unsubscribe|m_unsubscribe_2|o_java_interop|s_subscribe_when_rebalancing|t_max_poll_interval_exceeded|use_rebalance_cb: 1|use_rebalance_cb: 0|v_commit_during_rebalance|x_incremental_rebalances|fixed:h_delete_topic|fixed:i_delete_topic_2|fixed:j_delete_topic_no_rb_callback|fixed:n_wildcard"
)
declare -A PARTS_WHY=(
  [0055]="transactions subtest: after #16"
  [0061]="transactions subtest: after #16"
  [0081]="ACL subtests: after #17"
  [0113]="h_, i_, j_, n_ with the client's close-after-topic-deletion fix (docs/KAFKA.md)"
)

# librdkafka 2.0.2 hangs in rd_kafka_destroy() once a topic its consumer had assigned is
# deleted, whatever the broker (upstream fixed it in 2.1.0 and 2.6.1). Subtests marked
# "fixed:" load a copy of the library with scripts/conformance/librdkafka-<version>-*.patch
# applied; the test-runner is the same binary. Built once (~3 min), next to the stock one.
fixed_library() {
  local fixed=$CACHE/librdkafka-$UPSTREAM-fixed patches
  patches=$(ls "$ROOT"/scripts/conformance/librdkafka-"$UPSTREAM"-*.patch 2>/dev/null || true)
  if [ -z "$patches" ]; then echo "$SOURCE/src"; return; fi # another version: run it stock
  if [ ! -f "$fixed/src/librdkafka.so.1" ] || [ "$fixed/src/librdkafka.so.1" -ot "$(ls -t $patches | head -1)" ]; then
    echo "== building librdkafka $UPSTREAM with $(echo "$patches" | xargs -n1 basename | paste -sd' ')" >&2
    rm -rf "$fixed" && cp -a "$SOURCE" "$fixed"
    for p in $patches; do patch -s -d "$fixed" -p1 <"$p" >&2; done
    make -C "$fixed/src" -j"$(nproc)" librdkafka.so.1 >"$CACHE/make-fixed.log" 2>&1 \
      || { echo "the fixed librdkafka did not build; see $CACHE/make-fixed.log" >&2; exit 1; }
  fi
  echo "$fixed/src"
}
TABLE=$(sed -n '/^struct test tests\[\]/,/^};/p' "$SOURCE/tests/test.c" | tr -d '\n' | sed 's/_TEST(/\n/g' | tail -n +2)
# Broker tests (not TEST_F_LOCAL), by name; test-runner matches TESTS as a substring,
# so tests are run by their number, which runs every variant of it at once.
BROKER_TESTS=$(echo "$TABLE" | grep -v 'TEST_F_LOCAL' | grep -o '^[0-9]*_[a-z0-9_]*')
if [ $# -gt 0 ]; then IDS=("$@"); else mapfile -t IDS < <(echo "$BROKER_TESTS" | cut -d_ -f1 | uniq); fi

# --- the server -------------------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-conformance.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Topics the tests name are created on first use with 4 partitions, as on the
# brokers librdkafka's suite is written for (num.partitions=4 in its trivup cluster).
# start_server NAME [VAR=value…]: a server with its own data directory and free ports;
# its client configuration is $SCRATCH/NAME.conf. Stopped by stop_server or at exit.
declare -A SERVERS=()
start_server() {
  local name=$1 kafka http pid
  shift
  kafka=$(free_port)
  http=$(free_port)
  env AQUEDUCT_KAFKA_AUTO_CREATE_PARTITIONS=4 "$@" "$BIN" server --data-dir "$SCRATCH/$name-data" \
    --http-listen 127.0.0.1:$http --kafka-listen 127.0.0.1:$kafka --log-level warning >"$SCRATCH/$name.log" 2>&1 &
  pid=$!
  SERVERS[$name]=$pid
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/$kafka) 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "the server exited:"; cat "$SCRATCH/$name.log"; exit 1; }
    sleep 0.1
  done
  # enable.random.seed=false: the first client of a process otherwise reseeds rand()
  # from the clock's milliseconds (1,000 seeds), and the test-runner draws its "random"
  # topic names from rand(): runs in separate processes against one server then reuse
  # names (0113's h_ once found the 2-partition topic of an earlier part under its own).
  printf 'bootstrap.servers=127.0.0.1:%s\nenable.random.seed=false\n' "$kafka" >"$SCRATCH/$name.conf"
  echo "== $BIN (pid $pid) on 127.0.0.1:$kafka${*:+ with $*}"
}
stop_server() { kill "${SERVERS[$1]}" 2>/dev/null && wait "${SERVERS[$1]}" 2>/dev/null || true; unset "SERVERS[$1]"; }
cleanup() { for name in "${!SERVERS[@]}"; do stop_server "$name"; done; rm -rf "$SCRATCH"; }
trap cleanup EXIT
start_server main
SERVER=${SERVERS[main]}
echo "== librdkafka $UPSTREAM test-runner, ${TIMEOUT}s per test"

# Tests run against a server of their own, configured as named here. 0018's second
# subtest counts messages in a global the first one already filled, so every poll of
# the first consumer returns at once: when that consumer draws the two partitions that
# hold the messages (the assignor orders random member ids: half the runs) it drains
# them before the second consumer is polled, and the survivor of the close then waits
# out its full 9 s. Under Kafka's default group.initial.rebalance.delay.ms (3 s, once
# more when a second member joins during it: a 6 s first join) that branch needs ~27 s
# of the subtest's 23 s; with the delay at 0, as in the config/server.properties Kafka
# ships, it fits. The rest of the suite keeps the 3 s (0113 depends on it).
declare -A SERVER_SETTINGS=(
  [0018]="AQUEDUCT_GROUPS_INITIAL_REBALANCE_DELAY_MS=0"
)

# --- run ---------------------------------------------------------------------------------
passed=0 failed=0 skipped=0
printf '%-44s %-6s %7s  %s\n' test result seconds "first error / reason"
for id in "${IDS[@]}"; do
  id=${id%%_*}
  name=$(echo "$BROKER_TESTS" | grep "^${id}_" | paste -sd+ || true)
  [ -n "$name" ] || continue
  why=""
  for variant in ${name//+/ }; do why=${why:-${WHY[$variant]:-}}; done
  if [ -n "$why" ]; then
    printf '%-44s %-6s %7s  %s\n' "$name" SKIP - "$why"
    skipped=$((skipped + 1))
    continue
  fi
  kill -0 "$SERVER" 2>/dev/null || { echo "the server died:"; tail -30 "$SCRATCH/main.log"; exit 1; }
  target=main
  if [ -n "${SERVER_SETTINGS[$id]:-}" ]; then
    target=t$id
    # shellcheck disable=SC2086 # the settings are words
    start_server "$target" ${SERVER_SETTINGS[$id]} >/dev/null
  fi
  log=$SCRATCH/$name.log
  start=$(date +%s.%N)
  : >"$log"
  rc=0
  IFS='|' read -r -a parts <<<"${PARTS[$id]:-}"
  [ ${#parts[@]} -gt 0 ] || parts=("")
  for part in "${parts[@]}"; do
    library=$SOURCE/src
    if [[ $part == fixed:* ]]; then part=${part#fixed:}; library=$(fixed_library) || exit 1; fi
    set +e
    (cd "$SOURCE/tests" && LD_LIBRARY_PATH="$library:$SOURCE/src-cpp" RDKAFKA_TEST_CONF="$SCRATCH/$target.conf" TEST_KAFKA_VERSION=3.0.0 \
      TESTS="$id" SUBTESTS="$part" timeout -k 10 "$TIMEOUT" ./test-runner -L -p1 -S ${AQUEDUCT_CONFORMANCE_QUICK:+-Q} >>"$log" 2>&1) 2>/dev/null
    part_rc=$?
    set -e
    [ $part_rc -eq 0 ] || rc=$part_rc
  done
  [ "$target" = main ] || stop_server "$target"
  seconds=$(printf '%.0f' "$(echo "$(date +%s.%N) - $start" | bc)")
  note=${PARTS_WHY[$id]:-${SERVER_SETTINGS[$id]:+on a server with ${SERVER_SETTINGS[$id]} (docs/KAFKA.md)}}
  if [ $rc -eq 0 ] && grep -q "SKIPPING\|skipping" "$log" && ! grep -q "PASSED" "$log"; then
    printf '%-44s %-6s %7s  %s\n' "$name" SKIP "$seconds" "$(grep -m1 -i 'skipping' "$log" | cut -c1-90 || true)"
    skipped=$((skipped + 1))
  elif [ $rc -eq 0 ]; then
    printf '%-44s %-6s %7s  %s\n' "$name" PASS "$seconds" "$note"
    passed=$((passed + 1))
  else
    # test-runner's own verdict (the line after "### Test ... failed"), else the first error it logged.
    first=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -A1 -m1 '^### Test' | tail -1 | cut -c1-120 || true)
    [ -n "$first" ] || first=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 -E 'FAIL|ERROR|Assert' | cut -c1-120 || true)
    [ $rc -eq 124 ] && first="timed out after ${TIMEOUT}s; ${first}"
    printf '%-44s %-6s %7s  %s\n' "$name" FAIL "$seconds" "$first${note:+ ($note)}"
    failed=$((failed + 1))
    mkdir -p "$CACHE/failed" && cp "$log" "$CACHE/failed/$name.log"
  fi
done
kill -0 "$SERVER" 2>/dev/null || { echo "the server died during the run:"; tail -30 "$SCRATCH/main.log"; exit 1; }
echo "$passed passed, $failed failed, $skipped skipped (logs of failures in $CACHE/failed)"
[ $failed -eq 0 ]
