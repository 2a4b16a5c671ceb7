"""A topology keeps running when its node dies: on a three-node cluster, the word-count
example program is uploaded to node 1 and submitted on node 2 with the CLI
(`aqueduct topology submit --name wc aqueduct-examples word-count-topics sentences counts
2`, two containers); the cluster starts it on one node (its program copied there). Sentences v0..v299 go in and
are counted; then the node running the topology is SIGKILLed. Checks: its containers
stop by themselves (nobody is left to stop them, and the topology must not run twice),
another node starts the topology, and sentences v300..v599 are counted too (at least
once: every sentence's word appears on the counts topic, which keeps two copies of
each segment: replication factor 2). Killing the topology through any node removes it
everywhere.

    cluster_topology.py AQUEDUCT_BINARY EXAMPLES_BINARY BOOTSTRAP NODE=HTTP=PID,..."""
import json, os, signal, subprocess, sys, time, urllib.request
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from cluster_common import KeyedProducer

binary, examples, bootstrap, node_list = sys.argv[1:5]
nodes = {}
for item in node_list.split(","):
    node, http, pid = item.split("=")
    nodes[int(node)] = {"http": "http://" + http, "pid": int(pid)}


def call(node, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(nodes[node]["http"] + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def wait_for(what, condition, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            value = condition()
            if value: return value
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"FAIL: {what} within {seconds} s")


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


admin = AdminClient({"bootstrap.servers": bootstrap})
# counts keeps two copies of each segment (a replication factor is the topic's ensemble).
for _, future in admin.create_topics([NewTopic("sentences", num_partitions=3, replication_factor=-1),
                                      NewTopic("counts", num_partitions=1, replication_factor=2)]).items():
    future.result()
described = list(admin.describe_configs([ConfigResource("topic", "counts")]).values())[0].result()
shape = "/".join(described[f"replication.{name}"].value for name in ("ensemble", "write", "ack"))
if shape != "2/2/2": raise SystemExit(f"FAIL: counts has replication {shape}, not 2/2/2")
print(f"counts: replication {shape}")

producer = KeyedProducer(bootstrap, "sentences")
def produce(numbers):
    for i in numbers: producer.send(i)
    if producer.flush(120) != 0 or producer.errors:
        raise SystemExit(f"FAIL: sentences not acknowledged: {producer.errors[:3]}")

counted = set()
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False})
consumer.assign([TopicPartition("counts", 0, 0)])
def all_counted(numbers):
    while True:
        m = consumer.poll(0.5)
        if m is None: break
        if not m.error() and m.key(): counted.add(m.key().decode())
    return all(f"v{i}" in counted for i in numbers)

# Uploaded to node 1, submitted on node 2: whichever node the cluster picks runs it.
env = dict(os.environ, AQUEDUCT_TOKEN="")
subprocess.run([binary, "topology", "upload", "--server", nodes[1]["http"], "--name", "aqueduct-examples", examples], check=True, env=env)
submitted = subprocess.run([binary, "topology", "submit", "--server", nodes[2]["http"], "--name", "wc", "aqueduct-examples",
                            "word-count-topics", "sentences", "counts", "2"], env=env, capture_output=True, text=True)
print(submitted.stdout.strip(), submitted.stderr.strip())
if submitted.returncode != 0: raise SystemExit("FAIL: submit failed")

def running_on():
    listed = {t["name"]: t for t in call(3, "GET", "/v1/topologies")["topologies"]}
    wc = listed.get("wc")
    if wc and wc["state"] == "running" and wc.get("node") and wc["containers"] and all(c.get("pid") for c in wc["containers"]):
        return wc
    return None

first = wait_for("the topology running on a node", running_on)
victim = first["node"]
print(f"wc runs on node {victim} with containers {[c['pid'] for c in first['containers']]}")
status = call(1, "GET", "/v1/topologies/wc")  # forwarded to its node
assert status["node"] == victim and status["state"] == "running", status

produce(range(0, 300))
wait_for("sentences v0..v299 counted", lambda: all_counted(range(0, 300)))
print(f"v0..v299 counted ({len(counted)} words seen); SIGKILL node {victim}")

os.kill(nodes[victim]["pid"], signal.SIGKILL)
containers = [c["pid"] for c in first["containers"]]
wait_for("the dead node's containers to stop by themselves", lambda: not any(alive(pid) for pid in containers), seconds=60)
survivor = min(n for n in nodes if n != victim)

def moved():
    listed = {t["name"]: t for t in call(survivor, "GET", "/v1/topologies")["topologies"]}
    wc = listed.get("wc")
    if wc and wc["state"] == "running" and wc.get("node") not in (None, victim) and all(c.get("pid") for c in wc["containers"]):
        return wc
    return None
second = wait_for("the topology restarted on another node", moved)
print(f"wc moved to node {second['node']}")

produce(range(300, 600))
wait_for("sentences v300..v599 counted after the move", lambda: all_counted(range(300, 600)), seconds=180)
print(f"v300..v599 counted after the move ({len(counted)} words seen)")

call(survivor, "DELETE", "/v1/topologies/wc")
wait_for("the topology gone from every node", lambda: call(survivor, "GET", "/v1/topologies")["topologies"] == [], seconds=60)
print("OK: the topology moved off the killed node, nothing went uncounted, kill removed it")
