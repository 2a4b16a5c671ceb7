"""Produces 6000 keyed records (idempotent, acks=all) to a 3-partition topic of a
three-node cluster while one node is SIGKILLed (mode kill) or SIGSTOPped past its lease
and then resumed (mode pause); then reads every partition from the start and checks
that every acknowledged record is there exactly once, at its offset, offsets dense.
Mode etcd: the victim is etcd, killed and restarted (by cluster.sh, on the signal file
given as the victim) while records flow."""
import sys, time, os, signal, json, urllib.request
from cluster_common import KeyedProducer, read_back
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, victim, topic, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
victim_pid = int(victim) if victim.isdigit() else 0
admin = AdminClient({"bootstrap.servers": bootstrap})
for t, f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=-1)]).items(): f.result()
time.sleep(2)
p = KeyedProducer(bootstrap, topic)
acked, errors = p.acked, p.errors
N = 6000
start = time.time()
for i in range(N):
    p.send(i)
    if i == N // 3:
        p.flush(30)
        if mode == "drain":
            # victim: the HTTP API of node 1; node 2 is drained.
            request = urllib.request.Request(victim + "/v1/cluster/nodes/2/drain", method="POST")
            urllib.request.urlopen(request, timeout=30).read()
            print(f"acked {len(acked)} before the fault; node 2 is draining", flush=True)
        elif mode == "etcd":
            print(f"acked {len(acked)} before the fault; etcd is killed and restarted", flush=True)
            os.kill(victim_pid, signal.SIGUSR1)  # cluster.sh's fault injector
        else:
            print(f"acked {len(acked)} before the fault; {'SIGKILL' if mode == 'kill' else 'SIGSTOP'} pid {victim_pid}", flush=True)
            os.kill(victim_pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
    if mode == "pause" and i == 2 * N // 3:
        p.flush(60)
        print(f"acked {len(acked)} while it was paused; SIGCONT pid {victim_pid}", flush=True)
        os.kill(victim_pid, signal.SIGCONT)
    time.sleep(0.001)
left = p.flush(150)
print(f"unflushed {left} acked {len(acked)} errors {len(errors)} {errors[:3]} in {time.time()-start:.1f}s", flush=True)
got = read_back(bootstrap, topic, 3, len(acked))
ack_set = set(acked)
dups = len(got) - len(set(got))
missing = [a for a in acked if a not in set(got)]
by_value = {}
for part, off, v in got: by_value.setdefault(v, []).append((part, off))
dup_values = {v: l for v, l in by_value.items() if len(l) > 1}
print(f"consumed {len(got)}; acknowledged missing {len(missing)}; duplicate offsets {dups}; values stored twice {len(dup_values)}")
for part in range(3):
    offs = [o for (pp, o, v) in got if pp == part]
    print(f"partition {part}: {len(offs)} records, dense {offs == list(range(len(offs)))}")
ok = not missing and not dup_values
if mode == "drain":
    status = json.load(urllib.request.urlopen(victim + "/v1/cluster", timeout=30))
    owners = sorted({p["owner"] for p in status["partitions"]})
    print(f"owners after the drain: {owners}")
    ok = ok and 2 not in owners
sys.exit(0 if ok else 1)
