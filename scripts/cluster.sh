#!/usr/bin/env bash
# A three-node Aqueduct cluster on this machine, for trying cluster mode:
# etcd on 127.0.0.1:2379 and nodes 1-3 with Kafka on 127.0.0.1:9092-9094, HTTP on
# 127.0.0.1:8092-8094 and storage (replication) on 127.0.0.1:7092-7094; data and PID
# files under ./aqueduct-cluster (or $AQUEDUCT_CLUSTER_DIR). Stopped by PID.
# Usage: scripts/cluster.sh start|stop|status
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${AQUEDUCT_CLUSTER_DIR:-$PWD/aqueduct-cluster}
binary=${AQUEDUCT_BINARY:-}
if [ -z "$binary" ]; then
  if [ -x .build/release/aqueduct ]; then binary=.build/release/aqueduct; else binary=.build/debug/aqueduct; fi
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  mkdir -p "$dir"
  if ! command -v etcd >/dev/null; then
    echo "installing etcd (Debian's etcd-server)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
  fi
  [ -x "$binary" ] || { echo "building aqueduct"; swift build --product aqueduct; }
  if ! alive "$dir/etcd.pid"; then
    etcd --name aqueduct --data-dir "$dir/etcd" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster aqueduct=http://127.0.0.1:2380 > "$dir/etcd.log" 2>&1 &
    echo $! > "$dir/etcd.pid"
    for _ in $(seq 100); do grep -q "ready to serve client requests" "$dir/etcd.log" 2>/dev/null && break; sleep 0.1; done
    echo "etcd     pid $(cat "$dir/etcd.pid")  127.0.0.1:2379"
  fi
  for node in 1 2 3; do
    if alive "$dir/node-$node.pid"; then continue; fi
    "$binary" server --cluster etcd://127.0.0.1:2379 --node-id "$node" --data-dir "$dir/node-$node" \
      --kafka-listen "127.0.0.1:$((9091 + node))" --http-listen "127.0.0.1:$((8091 + node))" \
      --storage-listen "127.0.0.1:$((7091 + node))" > "$dir/node-$node.log" 2>&1 &
    echo $! > "$dir/node-$node.pid"
  done
  for node in 1 2 3; do
    for _ in $(seq 300); do grep -q "aqueduct is serving" "$dir/node-$node.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "aqueduct is serving" "$dir/node-$node.log" || { echo "node $node did not start; see $dir/node-$node.log"; tail -5 "$dir/node-$node.log"; exit 1; }
    echo "node $node   pid $(cat "$dir/node-$node.pid")  kafka 127.0.0.1:$((9091 + node))  http 127.0.0.1:$((8091 + node))"
  done
  echo "bootstrap servers: 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
}

stop() {
  for name in node-1 node-2 node-3 etcd; do
    if alive "$dir/$name.pid"; then
      kill "$(cat "$dir/$name.pid")"
      for _ in $(seq 100); do alive "$dir/$name.pid" || break; sleep 0.1; done
      echo "stopped $name"
    fi
    rm -f "$dir/$name.pid"
  done
}

status() {
  for name in etcd node-1 node-2 node-3; do
    if alive "$dir/$name.pid"; then echo "$name: running (pid $(cat "$dir/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
