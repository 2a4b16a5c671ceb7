"""A consumer group keeps consuming through a partition move: a producer (idempotent,
acks=all) writes 6000 keyed records to a 3-partition topic of a three-node cluster
while a consumer group member (confluent-kafka, manual commits) reads them; a third of
the way in, the node coordinating the group is SIGKILLed, so both the group's
coordinator and the partitions that node wrote move to the others. Checks: every
acknowledged record is consumed (at least once: records after the last commit before
the kill come again), and the group's committed offsets end at every partition's end,
stored by the new coordinator.

    cluster_group.py BOOTSTRAP NODE=PID,NODE=PID,... TOPIC"""
import sys, threading, time, os, signal
from confluent_kafka import Consumer, TopicPartition, KafkaException
from cluster_common import KeyedProducer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, pid_list, topic = sys.argv[1], sys.argv[2], sys.argv[3]
pids = {int(node): int(pid) for node, pid in (item.split("=") for item in pid_list.split(","))}
group = "movers"
admin = AdminClient({"bootstrap.servers": bootstrap})
for _, future in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=-1)]).items():
    future.result()

N = 6000
p = KeyedProducer(bootstrap, topic)
acked, errors = p.acked, p.errors
produced_all = threading.Event()
def produce():
    for i in range(N):
        p.send(i)
        time.sleep(0.002)
    p.flush(150)
    produced_all.set()
producer = threading.Thread(target=produce, daemon=True)
producer.start()

c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
c.subscribe([topic])
consumed = []
killed = None
commit_errors = 0
deadline = time.time() + 240
while time.time() < deadline:
    batch = [m for m in c.consume(num_messages=200, timeout=0.5) if not m.error()]
    if batch:
        consumed += [(m.partition(), m.offset(), m.value()) for m in batch]
        try:
            c.commit(asynchronous=False)
        except KafkaException:
            commit_errors += 1  # the coordinator moved: the next commit goes to the new one
    if killed is None and len(consumed) >= N // 3:
        described = admin.describe_consumer_groups([group])[group].result()
        killed = described.coordinator.id
        print(f"consumed {len(consumed)}; SIGKILL node {killed} (the group's coordinator)", flush=True)
        os.kill(pids[killed], signal.SIGKILL)
    if produced_all.is_set() and len(set(consumed)) >= len(acked) and set(acked) <= set(consumed):
        break
producer.join(5)

missing = set(acked) - set(consumed)
print(f"acked {len(acked)} produce errors {len(errors)} {errors[:3]}; consumed {len(consumed)} "
      f"({len(consumed) - len(set(consumed))} again after the move), missing {len(missing)}, failed commits {commit_errors}", flush=True)
# The last commits reach the new coordinator: committed offsets end at each partition's end.
ends = {}
for partition in range(3):
    ends[partition] = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
committed = {}
for _ in range(60):
    try:
        committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)}
        if committed == ends: break
    except KafkaException:
        pass
    time.sleep(1)
c.close()
print(f"committed {committed} ends {ends}", flush=True)
ok = killed is not None and not missing and not errors and committed == ends
print("OK" if ok else "FAILED", flush=True)
sys.exit(0 if ok else 1)
