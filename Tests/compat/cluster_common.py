"""What the cluster tests share: a keyed producer (idempotent, acks=all) that remembers
what was acknowledged, and reading partitions back from the start."""
import time
from confluent_kafka import Producer, Consumer, TopicPartition


class KeyedProducer:
    """Produces records key k{i}, value v{i}; `acked` holds (partition, offset, value)."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.acked, self.errors = [], []
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "message.timeout.ms": 120000, "linger.ms": 5})

    def _delivered(self, err, msg):
        if err: self.errors.append(str(err))
        else: self.acked.append((msg.partition(), msg.offset(), msg.value()))

    def send(self, i):
        while True:
            try:
                self.producer.produce(self.topic, value=f"v{i}".encode(), key=f"k{i}".encode(), callback=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, seconds):
        return self.producer.flush(seconds)


def read_back(bootstrap, topic, partitions, count, seconds=60):
    """(partition, offset, value) of up to `count` records read from every partition's start."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "none", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    got = []
    deadline = time.time() + seconds
    while len(got) < count and time.time() < deadline:
        m = consumer.poll(1)
        if m is None or m.error(): continue
        got.append((m.partition(), m.offset(), m.value()))
    consumer.close()
    return got
