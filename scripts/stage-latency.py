#!/usr/bin/env python3
"""Replication's latency by stage, from the nodes' Prometheus histograms.

    stage-latency.py snapshot FILE URL...   saves the stage histograms of every node
    stage-latency.py report BEFORE AFTER    p50/p99 of what happened between two snapshots,
                                             summed over nodes (bucket upper bounds)"""
import json, re, sys, urllib.request

STAGES = [
    ("aqueduct_kafka_produce_seconds", "Kafka produce request: decoded -> answered"),
    ("aqueduct_replica_writer_handover_seconds", "submit -> writer's loop"),
    ("aqueduct_replica_add_round_trip_seconds", "writer: add sent -> answer read (network, both loops)"),
    ("aqueduct_replica_add_seconds", "replica: add received -> durable"),
    ("aqueduct_replica_log_queue_seconds", "replica: queued -> taken by the log's thread"),
    ("aqueduct_replica_log_fsync_seconds", "replica: one sync"),
    ("aqueduct_replica_writer_confirm_seconds", "writer's loop -> confirmed"),
]
BUCKET = re.compile(r'^(\w+)_bucket\{.*le="([^"]+)".*\}\s+([0-9.e+]+)')


def snapshot(path, urls):
    totals = {}
    for url in urls:
        text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
        for line in text.splitlines():
            match = BUCKET.match(line)
            if not match or match.group(1) not in dict(STAGES):
                continue
            key = f"{match.group(1)} {match.group(2)}"
            totals[key] = totals.get(key, 0) + float(match.group(3))
    json.dump(totals, open(path, "w"))


def report(before_path, after_path):
    before, after = json.load(open(before_path)), json.load(open(after_path))
    for name, label in STAGES:
        buckets = sorted(((float("inf") if k.split()[1] == "+Inf" else float(k.split()[1])), after[k] - before.get(k, 0))
                         for k in after if k.split()[0] == name)
        if not buckets or buckets[-1][1] == 0:
            print(f"   {label}: no samples")
            continue
        count = buckets[-1][1]
        def quantile(q):
            for bound, cumulative in buckets:
                if cumulative >= q * count:
                    return "> 1 s" if bound == float("inf") else f"<= {bound * 1000:g} ms"
        print(f"   {label}: {int(count)} samples, p50 {quantile(0.5)}, p99 {quantile(0.99)}")


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(sys.argv[2], sys.argv[3:])
    else:
        report(sys.argv[2], sys.argv[3])
