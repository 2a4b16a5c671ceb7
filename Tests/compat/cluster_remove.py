"""A node removed for good: four nodes, 3/3/2. Produces 3000 keyed records (idempotent,
acks=all) to a 3-partition topic, SIGKILLs node 2, produces 3000 more, waits until the
cluster reports segments that lost their copy on node 2 (the under-replicated count
rises), removes node 2 (POST /v1/cluster/nodes/2/remove), waits until the count is back
to zero (copies re-made on the other nodes), then reads every partition from the start
with node 2 gone: every acknowledged record exactly once, at its offset.

    cluster_remove.py BOOTSTRAP HTTP_URL VICTIM_PID TOPIC"""
import sys, time, os, signal, json, urllib.request
from cluster_common import KeyedProducer, read_back
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, http, victim_pid, topic = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
admin = AdminClient({"bootstrap.servers": bootstrap})
for _, future in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=-1)]).items():
    future.result()

def status():
    with urllib.request.urlopen(http + "/v1/cluster", timeout=30) as response:
        return json.load(response)

def wait_for(what, condition, seconds):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            current = status()
            last = current["underReplicatedSegments"]
            if condition(current):
                return current
        except OSError:
            pass
        time.sleep(0.5)
    print(f"gave up waiting for {what} after {seconds}s (under-replicated: {last})", flush=True)
    sys.exit(1)

def call(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)

# The HTTP API answers on any node: records for partitions other nodes write, their
# reads, and a group coordinated elsewhere are forwarded to the node that serves them.
for _, future in admin.create_topics([NewTopic("viahttp", num_partitions=3, replication_factor=-1)]).items():
    future.result()
wait_for("every partition of viahttp to have an owner",
         lambda s: sum(1 for p in s["partitions"] if p["topic"] == "viahttp" and p.get("owner") is not None) == 3, 60)
owners = {p["partition"]: p.get("owner") for p in status()["partitions"] if p["topic"] == "viahttp"}
records = [{"key": f"h{i}", "value": f"via-http-{i}"} for i in range(30)]
produced = call(http + "/v1/topics/viahttp/records", "POST", {"records": records})["offsets"]
assert len(produced) == 30, produced
read = {}
for partition in range(3):
    for record in call(f"{http}/v1/topics/viahttp/partitions/{partition}/records?offset=earliest&maxWaitMs=1000")["records"]:
        read[record["value"]] = (record["partition"], record["offset"])
expected = {r["value"]: (o["partition"], o["offset"]) for r, o in zip(records, produced)}
assert read == expected, (read, expected)
elsewhere = sorted({p for p, owner in owners.items() if owner != 1})
call(http + "/v1/groups/http-group/offsets", "POST", {"topic": "viahttp", "offsets": [{"partition": 0, "offset": 7}]})
other = status()["nodes"][-1]["http"]
committed = call(f"http://{other}/v1/groups/http-group/offsets?topic=viahttp")["offsets"]
assert committed == [{"partition": 0, "offset": 7}], committed
listed = [g["name"] for g in call(f"http://{other}/v1/groups")["groups"]]
assert "http-group" in listed, listed
print(f"HTTP on node 1: 30 records produced and read back over partitions owned by {owners} "
      f"(forwarded for partitions {elsewhere}); a group's offsets committed on node 1 read and listed on {other}", flush=True)

p = KeyedProducer(bootstrap, topic)
acked, errors = p.acked, p.errors
def produce(first, count):
    for i in range(first, first + count):
        p.send(i)
    p.flush(150)

produce(0, 3000)
print(f"acked {len(acked)}; SIGKILL node 2 (pid {victim_pid}) for good", flush=True)
os.kill(victim_pid, signal.SIGKILL)
produce(3000, 3000)
print(f"acked {len(acked)} errors {len(errors)} {errors[:3]}", flush=True)
risen = wait_for("node 2 to be reported gone with segments under-replicated",
                 lambda s: s["underReplicatedSegments"] > 0 and not any(n["id"] == 2 and n["live"] for n in s["nodes"]), 60)
print(f"under-replicated segments: {risen['underReplicatedSegments']}; removing node 2", flush=True)
urllib.request.urlopen(urllib.request.Request(http + "/v1/cluster/nodes/2/remove", method="POST"), timeout=30).read()
started = time.time()
wait_for("the under-replicated count to return to zero", lambda s: s["underReplicatedSegments"] == 0, 240)
print(f"under-replicated segments back to 0 in {time.time() - started:.1f}s", flush=True)

got = read_back(bootstrap, topic, 3, len(acked))
missing = set(acked) - set(got)
duplicates = len(got) - len(set(got))
print(f"read back {len(got)} of {len(acked)}: missing {len(missing)}, duplicates {duplicates}", flush=True)
ok = not errors and not missing and duplicates == 0 and len(acked) == 6000
print("OK" if ok else "FAILED", flush=True)
sys.exit(0 if ok else 1)
