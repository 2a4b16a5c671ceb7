#!/usr/bin/env bash
# Cluster mode with real processes on 127.0.0.1: etcd and three `aqueduct server
# --cluster` nodes on free ports in a scratch directory, a real Kafka client
# (confluent-kafka, idempotent, acks=all) producing to a 3-partition topic while one
# node is SIGKILLed (mode kill) or SIGSTOPped past its lease and resumed (mode pause);
# then every acknowledged record must be read back exactly once, at its offset, in
# order. Everything is stopped by PID.
#
# Mode etcd: etcd is killed and restarted on its data while records flow: metadata
# changes stall, nothing acknowledged is lost.
#
# Mode drain: node 2 is drained over the HTTP API while records flow: its partitions
# move to the others, nothing acknowledged is lost.
#
# Mode group: a consumer group consumes while records flow and the node coordinating
# it is SIGKILLed (cluster_group.py): the group and the partitions move, the member
# goes on consuming, its commits end at every partition's end.
#
# Mode remove: four nodes; node 2 is SIGKILLed for good while records flow, then removed
# (POST /v1/cluster/nodes/2/remove): the under-replicated count rises, returns to zero,
# and every acknowledged record is read back with node 2 gone (cluster_remove.py).
#
# Mode topology: the word-count example program is uploaded to one node, submitted on
# another, runs where the cluster puts it; that node is SIGKILLed: its containers stop
# by themselves, another node runs the topology, later sentences are counted too
# (cluster_topology.py).
#
#   Tests/compat/cluster.sh [path/to/aqueduct] [kill|pause|etcd|drain|group|remove|topology]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-${AQUEDUCT_BINARY:-$ROOT/.build/debug/aqueduct}}
MODE=${2:-kill}
VENV=${AQUEDUCT_TEST_VENV:-$HOME/.cache/aqueduct-test-venv}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/aqueduct-cluster.XXXXXX")
command -v etcd >/dev/null || { echo "etcd is not installed (scripts/test.sh installs etcd-server)"; exit 1; }
"$VENV/bin/python" -c "import confluent_kafka" 2>/dev/null || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q confluent-kafka; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}" $(cat "$SCRATCH/etcd.pids" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port)
start_etcd() {
  etcd --name test --data-dir "$SCRATCH/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "test=http://127.0.0.1:$ETCD_PEER" >>"$SCRATCH/etcd.log" 2>&1 &
  ETCD_PID=$!
  PIDS+=($ETCD_PID)
  echo $ETCD_PID >> "$SCRATCH/etcd.pids"
  for _ in $(seq 200); do [ "$(grep -c "ready to serve client requests" "$SCRATCH/etcd.log")" -ge "$1" ] && break; sleep 0.1; done
}
start_etcd 1
declare -A NODE_PID KAFKA HTTP
NODES="1 2 3"
[ "$MODE" = remove ] && NODES="1 2 3 4"
for node in $NODES; do
  KAFKA[$node]=127.0.0.1:$(free_port)
  HTTP[$node]=127.0.0.1:$(free_port)
  # A short lease, so the killed node's partitions move within seconds.
  AQUEDUCT_CLUSTER_LEASE_SECONDS=3 AQUEDUCT_CLUSTER_AUDIT_SECONDS=2 "$BIN" server --cluster "etcd://127.0.0.1:$ETCD_PORT" --node-id "$node" --data-dir "$SCRATCH/node-$node" \
    --kafka-listen "${KAFKA[$node]}" --http-listen "${HTTP[$node]}" --log-level info >"$SCRATCH/node-$node.log" 2>&1 &
  NODE_PID[$node]=$!
  PIDS+=($!)
done
for node in $NODES; do
  for _ in $(seq 600); do grep -q "aqueduct is serving" "$SCRATCH/node-$node.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "aqueduct is serving" "$SCRATCH/node-$node.log" || { echo "node $node did not start:"; tail -20 "$SCRATCH/node-$node.log"; exit 1; }
done
echo "== etcd on 127.0.0.1:$ETCD_PORT; nodes $NODES on Kafka ${KAFKA[*]}"
status=0
VICTIM=${NODE_PID[2]}
[ "$MODE" = drain ] && VICTIM=http://${HTTP[1]}
if [ "$MODE" = remove ]; then
  "$VENV/bin/python" "$HERE/cluster_remove.py" "${KAFKA[1]},${KAFKA[3]}" "http://${HTTP[1]}" "${NODE_PID[2]}" removal 2>&1 | grep --line-buffered -v '^%' || status=$?
  if [ $status -ne 0 ]; then
    for node in $NODES; do echo "--- node $node"; grep -vE "^\s*$" "$SCRATCH/node-$node.log" | tail -15; done
  fi
  exit $status
fi
if [ "$MODE" = group ]; then
  "$VENV/bin/python" "$HERE/cluster_group.py" "${KAFKA[1]},${KAFKA[2]},${KAFKA[3]}" "1=${NODE_PID[1]},2=${NODE_PID[2]},3=${NODE_PID[3]}" grouped 2>&1 | grep --line-buffered -v '^%' || status=$?
  if [ $status -ne 0 ]; then
    for node in 1 2 3; do echo "--- node $node"; grep -vE "^\s*$" "$SCRATCH/node-$node.log" | tail -15; done
  fi
  exit $status
fi
if [ "$MODE" = topology ]; then
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  EXAMPLES=${AQUEDUCT_EXAMPLES_BINARY:-$(dirname "$BIN")/aqueduct-examples}
  [ -x "$EXAMPLES" ] || { echo "no aqueduct-examples next to $BIN (swift build --product aqueduct-examples)"; exit 1; }
  (cd "$HERE" && "$VENV/bin/python" "$HERE/cluster_topology.py" "$BIN" "$EXAMPLES" "${KAFKA[1]},${KAFKA[2]},${KAFKA[3]}" \
    "1=${HTTP[1]}=${NODE_PID[1]},2=${HTTP[2]}=${NODE_PID[2]},3=${HTTP[3]}=${NODE_PID[3]}") 2>&1 | grep --line-buffered -v '^%' || status=$?
  if [ $status -ne 0 ]; then
    for node in 1 2 3; do echo "--- node $node"; grep -vE "^\s*$" "$SCRATCH/node-$node.log" | tail -20; done
    for log in "$SCRATCH"/node-*/topologies/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -5 "$log"; }; done
  fi
  exit $status
fi
if [ "$MODE" = etcd ]; then
  # On SIGUSR1 from the client: kill etcd, keep it down 5 s, start it again on its data.
  ( trap 'kill -9 $ETCD_PID; sleep 5; start_etcd 2; echo "etcd restarted" >&2' USR1; while true; do sleep 0.2; done ) &
  VICTIM=$!
  PIDS+=($VICTIM)
fi
"$VENV/bin/python" "$HERE/cluster_failover.py" "${KAFKA[1]},${KAFKA[3]}" "$VICTIM" "failover-$MODE" "$MODE" 2>&1 | grep --line-buffered -v '^%' || status=$?
if [ $status -ne 0 ]; then
  for node in 1 2 3; do echo "--- node $node"; grep -vE "^\s*$" "$SCRATCH/node-$node.log" | tail -15; done
fi
if [ "$MODE" = pause ]; then grep -h "lease is lost" "$SCRATCH/node-2.log" | head -1 | cut -c1-160 || true; fi
if [ "$MODE" = etcd ]; then
  echo "etcd started $(grep -c "ready to serve client requests" "$SCRATCH/etcd.log") times; nodes that lost their lease meanwhile: $(grep -l "lease is lost" "$SCRATCH"/node-*.log | wc -l)"
fi
exit $status
