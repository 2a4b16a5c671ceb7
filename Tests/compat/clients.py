#!/usr/bin/env python3
"""Kafka client compatibility scenarios against a running Aqueduct server.

Each scenario checks content, keys, headers and order, not exit codes.
Usage: clients.py BOOTSTRAP SCENARIO   (run.sh starts the server and runs them all)
"""
import asyncio
import os
import subprocess
import sys
import time
import uuid

BOOTSTRAP = sys.argv[1]


def fresh(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def http_records(topic, partition, count):
    """Reads `count` records from offset 0 through the server's HTTP API."""
    import json
    import urllib.request
    base = os.environ["AQUEDUCT_HTTP"]
    records, offset = [], 0
    while len(records) < count:
        url = f"http://{base}/v1/topics/{topic}/partitions/{partition}/records?offset={offset}&maxRecords=1000"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        if not answer["records"]:
            break
        records += answer["records"]
        offset = answer["nextOffset"]
    return records


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------- confluent-kafka

def confluent_compression():
    """acks=all idempotent producer with every codec; read back in order."""
    from confluent_kafka import Producer, Consumer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = fresh(f"cf-{codec}")
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(10)
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
                             "compression.type": codec, "linger.ms": 5})
        sent = [(f"key-{i % 7}".encode(), f"{codec}-value-{i}-".encode() * 20, [("n", str(i).encode())]) for i in range(500)]
        errors = []
        for key, value, headers in sent:
            producer.produce(topic, value=value, key=key, headers=headers,
                             on_delivery=lambda err, msg: errors.append(err) if err else None)
        check(producer.flush(30) == 0, f"{codec}: messages left unflushed")
        check(not errors, f"{codec}: delivery errors {errors[:3]}")
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": fresh("cf-reader"),
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        got = []
        deadline = time.time() + 30
        while len(got) < len(sent) and time.time() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            check(message.error() is None, f"{codec}: consume error {message.error()}")
            got.append((message.key(), message.value(), message.headers(), message.offset()))
        consumer.close()
        check([g[:3] for g in got] == [(k, v, h) for k, v, h in sent], f"{codec}: read back differs ({len(got)} of {len(sent)})")
        check([g[3] for g in got] == list(range(len(sent))), f"{codec}: offsets not dense")
        # The same records over the HTTP API, decompressed by the server.
        over_http = http_records(topic, 0, len(sent))
        check([(r["key"].encode(), r["value"].encode()) for r in over_http] == [(k, v) for k, v, _ in sent],
              f"{codec}: the HTTP API returns different records ({len(over_http)} of {len(sent)})")
        print(f"  confluent-kafka {codec}: 500 records, idempotent acks=all, read back in order, same over HTTP")


CONSUMER_SCRIPT = r"""
import sys, time, json, os
from confluent_kafka import Consumer
bootstrap, topic, group, name, stop_file, strategy = sys.argv[1:7]
def report(**fields):
    print(json.dumps(dict(who=name, **fields)), flush=True)
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                     "partition.assignment.strategy": strategy})
# Eager strategies revoke everything, then assign the whole new set; cooperative ones
# add and remove partitions incrementally. Reported as events, applied by the test.
consumer.subscribe([topic], on_assign=lambda c, ps: report(assigned=sorted(p.partition for p in ps)),
                   on_revoke=lambda c, ps: report(revoked=sorted(p.partition for p in ps)))
while not os.path.exists(stop_file):
    message = consumer.poll(0.2)
    if message is None or message.error():
        continue
    # Committed before it is reported, so a record seen by the test is never re-read.
    consumer.commit(message=message, asynchronous=False)
    report(partition=message.partition(), offset=message.offset(), value=message.value().decode())
consumer.close()
report(closed=True)
"""


class ConsumerProcess:
    """A consumer in its own process; its reports are collected by a thread."""

    def __init__(self, script, topic, group, name, strategy):
        import json
        import threading
        self.stop_file = os.path.join(os.path.dirname(script), f"stop-{name}-{uuid.uuid4().hex[:6]}")
        self.process = subprocess.Popen([sys.executable, script, BOOTSTRAP, topic, group, name, self.stop_file, strategy],
                                        stdout=subprocess.PIPE, text=True)
        self.reports = []
        self.thread = threading.Thread(target=lambda: [self.reports.append(json.loads(line)) for line in self.process.stdout], daemon=True)
        self.thread.start()

    def values(self):
        return [r["value"] for r in list(self.reports) if "value" in r]

    def assigned(self):
        owned = set()
        for report in list(self.reports):
            owned |= set(report.get("assigned", []))
            owned -= set(report.get("revoked", []))
        return sorted(owned)

    def stop(self):
        open(self.stop_file, "w").close()
        self.process.wait(30)
        self.thread.join(5)


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def confluent_group(strategy="range"):
    """Two consumer processes share four partitions; one leaves, the other takes over;
    after a restart the group resumes from its committed offsets."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    topic, group = fresh("cf-group"), fresh("cf-group")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})

    def produce(prefix, count):
        for i in range(count):
            producer.produce(topic, key=f"k{i}".encode(), value=f"{prefix}-{i}".encode(), partition=i % 4)
        producer.flush(10)

    script = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"consumer-{uuid.uuid4().hex[:6]}.py")
    open(script, "w").write(CONSUMER_SCRIPT)
    a = ConsumerProcess(script, topic, group, "a", strategy)
    b = ConsumerProcess(script, topic, group, "b", strategy)
    wait_for(lambda: len(a.assigned()) == 2 and len(b.assigned()) == 2 and set(a.assigned() + b.assigned()) == {0, 1, 2, 3},
             40, "the two consumers to share the four partitions")
    produce("first", 40)
    wait_for(lambda: len(a.values()) + len(b.values()) == 40, 30, "the first 40 records")
    check(a.values() and b.values(), "both consumers must have received records")
    check(sorted(a.values() + b.values()) == sorted(f"first-{i}" for i in range(40)), "first records differ")
    b.stop()
    wait_for(lambda: a.assigned() == [0, 1, 2, 3], 30, "the remaining consumer to take every partition")
    produce("second", 40)
    wait_for(lambda: sum(v.startswith("second") for v in a.values()) == 40, 30, "the take-over to read the second 40")
    a.stop()
    produce("third", 8)
    c = ConsumerProcess(script, topic, group, "c", strategy)
    wait_for(lambda: len(c.values()) >= 8, 40, "the restarted group to read the third batch")
    time.sleep(1)
    c.stop()
    check(sorted(c.values()) == sorted(f"third-{i}" for i in range(8)), f"restart did not resume at the committed offsets: {c.values()[:5]}")
    print(f"  confluent-kafka group ({strategy}): 2 processes share 4 partitions, take-over after a leave, resume after restart")


# ---------------------------------------------------------------- kafka-python

def kafka_python():
    from kafka import KafkaProducer, KafkaConsumer, KafkaAdminClient
    from kafka.admin import NewTopic, NewPartitions
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topic, doomed = fresh("kp"), fresh("kp-doomed")
    admin.create_topics([NewTopic(topic, 3, 1), NewTopic(doomed, 1, 1)])
    check({topic, doomed} <= set(admin.list_topics()), "created topics not listed")
    admin.delete_topics([doomed])
    check(doomed not in admin.list_topics(), "deleted topic still listed")
    grown = fresh("kp-grown")
    admin.create_topics([NewTopic(grown, 1, 1)])
    admin.create_partitions({grown: NewPartitions(total_count=3)})
    described = admin.describe_topics([grown])[0]
    check(len(described["partitions"]) == 3, f"partitions not added: {described}")
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    sent = [(f"key-{i}".encode(), f"value-{i}".encode(), [("trace", f"t{i}".encode()), ("empty", b"")]) for i in range(60)]
    for key, value, headers in sent:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    group = fresh("kp-group")
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, enable_auto_commit=False)
    got = {}
    for message in consumer:
        got.setdefault(message.partition, []).append((message.key, message.value, message.headers, message.offset))
    consumer.commit()
    consumer.close()
    flat = [m for messages in got.values() for m in messages]
    check(sorted((k, v, list(h)) for k, v, h, _ in flat) == sorted((k, v, list(h)) for k, v, h in sent), "kafka-python: content differs")
    for partition, messages in got.items():
        check([m[3] for m in messages] == list(range(len(messages))), f"partition {partition} out of order")
        # Same key, same partition, in send order.
        by_key = [int(m[1].split(b"-")[1]) for m in messages]
        check(by_key == sorted(by_key), f"partition {partition} not in send order")
    offsets = admin.list_group_offsets(group)[group]
    check(sum(o.offset for o in offsets.values()) == 60, f"committed offsets {offsets}")
    admin.delete_groups([group])
    check(not admin.list_group_offsets(group)[group], "offsets of a deleted group remain")
    print("  kafka-python: admin create/list/delete/add partitions, 60 records with headers, group commit, group delete")


def aiokafka_scenario():
    from aiokafka import AIOKafkaProducer, AIOKafkaConsumer

    async def run():
        topic, group = fresh("aio"), fresh("aio-group")
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("i", str(i).encode())])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            while len(got) < 30:
                batch = await consumer.getmany(timeout_ms=5000)
                if not batch:
                    break
                for messages in batch.values():
                    got += [(m.key, m.value, list(m.headers), m.offset) for m in messages]
            await consumer.commit()
        finally:
            await consumer.stop()
        expected = [(f"k{i}".encode(), f"v{i}".encode(), [("i", str(i).encode())], i) for i in range(30)]
        check(got == expected, f"aiokafka: read back differs: {got[:3]}")

    asyncio.run(run())
    print("  aiokafka: auto-created topic, 30 records with headers, group consume and commit")


def crash_producer():
    """Idempotent acks=all producer that keeps going while run.sh kills the server with
    SIGKILL and restarts it. Prints the values it saw acknowledged, one per line, to
    the file named by $CRASH_ACKED."""
    from confluent_kafka import Producer
    topic, count = os.environ["CRASH_TOPIC"], int(os.environ.get("CRASH_COUNT", "30000"))
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 2, "message.timeout.ms": 120000, "reconnect.backoff.max.ms": 200})
    acked, errors = [], []

    def delivered(err, message):
        if err:
            errors.append(str(err))
        else:
            acked.append(message.value().decode())

    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=f"seq-{i}".encode(), partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 500 == 0:
            producer.poll(0)
            time.sleep(0.1)  # about 6 s in all, so the crash lands mid-stream
    producer.flush(120)
    with open(os.environ["CRASH_ACKED"], "w") as out:
        out.write("\n".join(acked) + "\n")
    check(not errors, f"delivery errors across the crash: {errors[:3]} ({len(errors)} in all)")
    print(f"  confluent-kafka idempotent producer across kill -9: {len(acked)} of {count} acknowledged")


def crash_verify():
    """Every acknowledged value is stored exactly once, in the order produced."""
    from confluent_kafka import Consumer
    topic, count = os.environ["CRASH_TOPIC"], int(os.environ.get("CRASH_COUNT", "30000"))
    acked = [line for line in open(os.environ["CRASH_ACKED"]).read().split("\n") if line]
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": fresh("crash-verify"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    stored, idle = [], time.time()
    while time.time() - idle < 5 and len(stored) < count + 100:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        idle = time.time()
        stored.append(message.value().decode())
    consumer.close()
    check(len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} duplicates stored (idempotence failed)")
    numbers = [int(v.split("-")[1]) for v in stored]
    check(numbers == sorted(numbers), "records stored out of order")
    check(set(acked) <= set(stored), f"{len(set(acked) - set(stored))} acknowledged records lost")
    print(f"  after kill -9: {len(stored)} records stored, every acknowledged one exactly once, in order")


SCENARIOS = {
    "confluent-compression": confluent_compression,
    "confluent-group": confluent_group,
    "confluent-group-cooperative": lambda: confluent_group("cooperative-sticky"),
    "kafka-python": kafka_python,
    "aiokafka": aiokafka_scenario,
    "crash-producer": crash_producer,
    "crash-verify": crash_verify,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[2]]()
