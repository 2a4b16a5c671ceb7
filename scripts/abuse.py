#!/usr/bin/env python3
"""Floods a running Aqueduct server the way a hostile or buggy client would, with
nothing but sockets on loopback, and reports what each flood cost the server (resident
memory before, at peak and after) and what a well-behaved client saw meanwhile (its
produce round trips: p50, p99, max, failures).

    scripts/abuse.py --kafka 127.0.0.1:9092 --http 127.0.0.1:8092 --pid <server pid> [--only NAME ...]

Every flood is bounded in count and in time. Run by scripts/abuse.sh, which starts the
server itself; see docs/KAFKA.md ("Limits") for the bounds each flood runs into.
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.request

# ---------------------------------------------------------------------------------------
# Kafka wire encoding (non-flexible versions only: enough for every flood here).

def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)
def string(s):
    if s is None: return i16(-1)
    b = s.encode()
    return i16(len(b)) + b
def nbytes(b):
    if b is None: return i32(-1)
    return i32(len(b)) + b
def array(items): return i32(len(items)) + b"".join(items)

def varint(v):
    v = (v << 1) ^ (v >> 63)
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80]); v >>= 7
    return out + bytes([v])

_CRC_TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _CRC_TABLE.append(c)

def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def record_batch(values, producer_id=-1, epoch=-1, sequence=-1, timestamp=None):
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    records = b""
    for i, value in enumerate(values):
        body = i8(0) + varint(0) + varint(i) + varint(-1) + varint(len(value)) + value + varint(0)
        records += varint(len(body)) + body
    after_crc = (i16(0) + i32(len(values) - 1) + i64(ts) + i64(ts) + i64(producer_id) + i16(epoch)
                 + i32(sequence) + i32(len(values)) + records)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return i64(0) + i32(batch_length) + i32(-1) + i8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc

def request(key, version, correlation, body, client_id="abuse"):
    frame = i16(key) + i16(version) + i32(correlation) + string(client_id) + body
    return i32(len(frame)) + frame

def produce(topic, partition, batch, acks=1):  # v3
    return (string(None) + i16(acks) + i32(30000)
            + array([string(topic) + array([i32(partition) + nbytes(batch)])]))

def fetch(topic, partition, offset, max_wait_ms, max_bytes=1 << 20, partition_max_bytes=1 << 20):  # v4
    return (i32(-1) + i32(max_wait_ms) + i32(1) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([i32(partition) + i64(offset) + i32(partition_max_bytes)])]))

def metadata(topics):  # v1
    return array([string(t) for t in topics])

def heartbeat(group, generation, member): return string(group) + i32(generation) + string(member)  # v0
def sync_group(group, generation, member): return string(group) + i32(generation) + string(member) + array([])  # v0
def leave_group(group, member): return string(group) + string(member)  # v0
def offset_commit(group, generation, member, topic):  # v2
    return (string(group) + i32(generation) + string(member) + i64(-1)
            + array([string(topic) + array([i32(0) + i64(1) + string(None)])]))
def join_group(group, member="", session_ms=10000):  # v1 (v4 adds nothing to the body)
    return (string(group) + i32(session_ms) + i32(session_ms) + string(member) + string("consumer")
            + array([string("range") + nbytes(b"\x00\x00\x00\x00\x00\x00")]))

PRODUCE, FETCH, METADATA, OFFSET_COMMIT, JOIN, HEARTBEAT, LEAVE, SYNC = 0, 1, 3, 8, 11, 12, 13, 14


class Connection:
    def __init__(self, address, timeout=30):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation = 0

    def send(self, key, version, body):
        self.correlation += 1
        self.sock.sendall(request(key, version, self.correlation, body))

    def receive(self):
        size = struct.unpack(">i", self._read(4))[0]
        return self._read(size)

    def call(self, key, version, body):
        self.send(key, version, body)
        return self.receive()

    def _read(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def drain(connection, count):
    """Reads `count` answers; returns how many arrived before the server closed."""
    got = 0
    try:
        for _ in range(count):
            connection.receive()
            got += 1
    except (ConnectionError, OSError):
        pass
    return got

# ---------------------------------------------------------------------------------------
# Observation: the server's memory, and a well-behaved client's latency.

def heap_mib(args):
    """The server's live heap (aqueduct_heap_in_use_bytes), as opposed to its RSS."""
    try:
        with urllib.request.urlopen(f"http://{args.http}/metrics", timeout=30) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("aqueduct_heap_in_use_bytes"):
                    return float(line.split()[-1]) / (1 << 20)
    except Exception:
        pass
    return float("nan")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Observer:
    """Samples the server's RSS and runs a well-behaved producer (one small batch with
    acks=all every 20 ms on its own connection) while a flood runs."""

    def __init__(self, args, topic):
        self.args, self.topic = args, topic
        self.stop = threading.Event()
        self.latencies, self.failures, self.peak, self.reasons = [], 0, 0.0, []

    def __enter__(self):
        self.before = rss_mib(self.args.pid)
        self.peak = self.before
        self.threads = [threading.Thread(target=self._sample, daemon=True), threading.Thread(target=self._produce, daemon=True)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.args.pid))
            time.sleep(0.1)

    def _produce(self):
        connection = None
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                if connection is None:
                    connection = Connection(self.args.kafka, timeout=30)
                answer = connection.call(PRODUCE, 3, produce(self.topic, 0, record_batch([b"probe"]), acks=-1))
                # correlation id, topics count, name, partitions count, index, error code
                error = struct.unpack(">h", answer[4 + 4 + 2 + len(self.topic) + 4 + 4:][:2])[0]
                if error != 0:
                    self.failures += 1
                    self.reasons.append(f"error code {error}")
                else:
                    self.latencies.append((time.monotonic() - began) * 1000)
            except Exception as e:
                self.failures += 1
                self.reasons.append(str(e) or type(e).__name__)
                if connection:
                    connection.close()
                connection = None
            time.sleep(0.02)
        if connection:
            connection.close()

    def report(self, name, detail):
        after = rss_mib(self.args.pid)
        heap = heap_mib(self.args)
        lat = sorted(self.latencies)
        def pct(p): return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else float("nan")
        row = {
            "flood": name, "detail": detail,
            "rss_before_mib": round(self.before, 1), "rss_peak_mib": round(self.peak, 1), "rss_after_mib": round(after, 1),
            "heap_after_mib": round(heap, 1),
            "probe_ok": len(lat), "probe_failed": self.failures,
            "probe_failures": sorted(set(self.reasons))[:5],
            "probe_p50_ms": round(pct(0.50), 2), "probe_p99_ms": round(pct(0.99), 2), "probe_max_ms": round(lat[-1], 2) if lat else None,
        }
        print(f"{name:20} rss {row['rss_before_mib']:7.1f} -> peak {row['rss_peak_mib']:7.1f} -> {row['rss_after_mib']:7.1f} MiB (heap in use {row['heap_after_mib']:6.1f}) | "
              f"probe ok {row['probe_ok']:4} failed {row['probe_failed']:3} p50 {row['probe_p50_ms']:7.2f} p99 {row['probe_p99_ms']:8.2f} "
              f"max {row['probe_max_ms']} ms | {detail}" + (f" | probe failures: {row['probe_failures']}" if self.reasons else ""), flush=True)
        return row

# ---------------------------------------------------------------------------------------
# The floods.

def pipelined(args, connections, requests, make, read=True):
    """Sends `requests` requests over `connections` connections, pipelined in windows
    of 50, reading the answers; returns (answered, closed connections)."""
    answered, closed = 0, 0
    per = max(1, requests // connections)
    def run(index):
        nonlocal answered, closed
        try:
            c = Connection(args.kafka)
        except OSError:
            closed += 1
            return
        sent = 0
        try:
            while sent < per:
                window = min(50, per - sent)
                for i in range(window):
                    key, version, body = make(index * per + sent + i)
                    c.send(key, version, body)
                sent += window
                if read:
                    got = drain(c, window)
                    answered += got
                    if got < window:
                        closed += 1
                        return
        except OSError:
            closed += 1
        finally:
            c.close()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads: t.start()
    for t in threads: t.join()
    return answered, closed


def flood_unknown_groups(args):
    count = 40_000
    def make(i):
        group = f"ghost-{i}-{random.getrandbits(32)}"
        kind = i % 4
        if kind == 0: return HEARTBEAT, 0, heartbeat(group, 7, "m")
        if kind == 1: return SYNC, 0, sync_group(group, 7, "m")
        if kind == 2: return LEAVE, 0, leave_group(group, "m")
        return OFFSET_COMMIT, 2, offset_commit(group, 7, "m", args.topic)
    answered, closed = pipelined(args, 8, count, make)
    return f"{count} heartbeat/sync/leave/commit naming unknown groups: {answered} answered, {closed} connections closed"


def flood_join_groups(args):
    count = 15_000
    answered, closed = pipelined(args, 8, count, lambda i: (JOIN, 1, join_group(f"g-{i}-{random.getrandbits(32)}", session_ms=6000)))
    # Member ids handed out with MEMBER_ID_REQUIRED (v4) on one group.
    required, _ = pipelined(args, 4, 4_000, lambda i: (JOIN, 4, join_group("one-group", session_ms=6000)))
    return (f"{count} joins to distinct groups ({answered} answered; past groups.max they are refused), "
            f"4000 v4 joins with no member id on one group ({required} answered)")


def flood_producer_ids(args):
    count = 20_000
    began = time.monotonic()
    base = random.getrandbits(40)
    answered, closed = pipelined(args, 4, count, lambda i: (PRODUCE, 3, produce(args.topic, 1, record_batch([b"x"], producer_id=base + i, epoch=0, sequence=0))))
    rate = answered / (time.monotonic() - began)
    return f"{count} idempotent batches, each from a new producer id: {answered} stored at {rate:,.0f} requests/s"


def flood_abandoned_fetches(args):
    rounds, per_round = 10, 200
    for _ in range(rounds):
        opened = []
        for _ in range(per_round):
            try:
                c = Connection(args.kafka)
                c.send(FETCH, 4, fetch(args.topic, 0, 0, 600_000, max_bytes=0x7FFFFFFF))
                opened.append(c)
            except OSError:
                pass
        time.sleep(0.2)
        for c in opened: c.close()
    return f"{rounds * per_round} fetches asking to wait 10 minutes, their connections closed at once"


def flood_connections(args):
    opened, refused = [], 0
    for _ in range(6_000):
        try:
            c = Connection(args.kafka, timeout=5)
            opened.append(c)
        except OSError:
            refused += 1
    time.sleep(1)
    # Which of them does the server still serve? (Past the caps it closes them.)
    served = 0
    for c in opened[:200] + opened[-200:]:
        try:
            c.call(METADATA, 1, metadata([]))
            served += 1
        except (OSError, ConnectionError):
            pass
    for c in opened: c.close()
    return f"{len(opened)} connections opened ({refused} refused at connect); of 400 sampled, {served} served (caps: kafka.connectionsMax, kafka.connectionsPerAddressMax)"


def flood_slow_frames(args):
    stalled = []
    for _ in range(40):
        try:
            c = Connection(args.kafka)
            c.sock.sendall(i32((100 << 20) - 16))  # announces a 100 MB request, sends none of it
            stalled.append(c)
        except OSError:
            pass
    time.sleep(8)
    for c in stalled: c.close()
    return f"{len(stalled)} connections announcing ~100 MB requests and sending nothing for 8 s"


def flood_unread_answers(args):
    # Answers piling up for clients that never read them: pipelined fetches of a
    # partition holding ~4 MB, 64 per connection, never read.
    filler = Connection(args.kafka)
    for i in range(40):
        filler.call(PRODUCE, 3, produce(args.topic, 2, record_batch([os.urandom(1000) for _ in range(100)])))
    filler.close()
    hogs = []
    for _ in range(30):
        try:
            c = Connection(args.kafka)
            for _ in range(64):
                c.send(FETCH, 4, fetch(args.topic, 2, 0, 0, max_bytes=50 << 20, partition_max_bytes=50 << 20))
            hogs.append(c)
        except OSError:
            pass
    time.sleep(8)
    for c in hogs: c.close()
    return f"{len(hogs)} connections each pipelining 64 fetches of ~4 MB answers and never reading (unbounded: ~7.5 GB)"


def flood_auto_create(args):
    answered, closed = pipelined(args, 4, 4_000, lambda i: (METADATA, 1, metadata([f"auto-{i}-{random.getrandbits(24)}"])))
    with urllib.request.urlopen(f"http://{args.http}/v1/topics") as response:
        topics = len(json.load(response)["topics"])
    return f"4000 metadata requests naming new topics: {answered} answered; the server has {topics} topics (kafka.autoCreateTopicsMax)"


def flood_http_bodies(args):
    record = b'{"value":"' + b"x" * (500 << 10) + b'"}'
    body = b'{"records":[' + b",".join([record] * 30) + b']}'  # 15 MB of 500 KB records
    results = {"ok": 0, "refused": 0}
    def post():
        request_ = urllib.request.Request(f"http://{args.http}/v1/topics/{args.topic}/records", data=body, method="POST")
        request_.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request_, timeout=120) as response:
                response.read()
                results["ok"] += 1
        except Exception:
            results["refused"] += 1
    threads = [threading.Thread(target=post) for _ in range(60)]
    for t in threads: t.start()
    for t in threads: t.join()
    return f"60 concurrent 15 MB JSON produce requests: {results['ok']} stored, {results['refused']} refused (http.bodyBytesInFlightMax)"


FLOODS = [
    ("unknown-groups", flood_unknown_groups),
    ("join-groups", flood_join_groups),
    ("producer-ids", flood_producer_ids),
    ("abandoned-fetches", flood_abandoned_fetches),
    ("connections", flood_connections),
    ("slow-frames", flood_slow_frames),
    ("unread-answers", flood_unread_answers),
    ("auto-create", flood_auto_create),
    ("http-bodies", flood_http_bodies),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    random.seed(args.seed)
    print(f"abuse: seed {args.seed}; server pid {args.pid}, rss {rss_mib(args.pid):.1f} MiB", flush=True)
    args.topic = "abuse"
    request_ = urllib.request.Request(f"http://{args.http}/v1/topics", data=json.dumps({"name": args.topic, "partitions": 3}).encode(), method="POST")
    try:
        urllib.request.urlopen(request_).read()
    except urllib.error.HTTPError:
        pass
    rows = []
    for name, flood in FLOODS:
        if args.only and name not in args.only:
            continue
        with Observer(args, args.topic) as observer:
            started = time.monotonic()
            detail = flood(args)
            detail += f" ({time.monotonic() - started:.1f} s)"
        rows.append(observer.report(name, detail))
        time.sleep(1)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    alive = os.path.exists(f"/proc/{args.pid}")
    print(f"abuse: the server is {'still running' if alive else 'GONE'}; rss {rss_mib(args.pid) if alive else 0:.1f} MiB", flush=True)
    sys.exit(0 if alive and all(r["probe_ok"] > 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
