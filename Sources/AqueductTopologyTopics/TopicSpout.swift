import AqueductClient
import AqueductAPI
import AqueductTopology
import Foundation
import Synchronization

/// Where a topic spout starts in partitions its group has no committed offset for.
public enum TopicStart: String, Sendable {
    case earliest
    case latest
}

/// The server a topology talks to: `AQUEDUCT_HTTP` (set by `aqueduct topology submit`
/// and by the tests), else the server's default address.
public func defaultServerURL() -> String {
    ProcessInfo.processInfo.environment["AQUEDUCT_HTTP"] ?? "http://127.0.0.1:8080"
}

/// Reads the records of a topic's partitions (spread over the spout's tasks: partition
/// p goes to task index p % parallelism) and emits each as a tuple
/// [partition, offset, key, value, timestamp] with (partition, offset) as message id.
///
/// At-least-once end to end: a partition's committed offset (group offsets on the
/// server) advances only past records whose tuple trees completed; a failed record is
/// emitted again. After a crash the spout resumes from the committed offsets, so
/// records processed but not yet committed are processed again.
public struct TopicSpout: Spout {
    public static let fields = ["partition", "offset", "key", "value", "timestamp"]

    let topic: String
    let group: String?
    let server: String
    let start: TopicStart
    /// Records fetched and not yet emitted, per task (the fetchers wait beyond it).
    let bufferedRecordsMax: Int
    let commitIntervalMilliseconds: Int64
    var reader: TopicReader?
    var collector: SpoutCollector?
    /// Records emitted and not yet acked, per partition by offset (for replay on fail).
    var pending: [Int: [Int64: FetchedRecordJSON]] = [:]
    /// Offset after the last record emitted, per partition.
    var emittedUpTo: [Int: Int64] = [:]
    var replay: [FetchedRecordJSON] = []
    var committed: [Int: Int64] = [:]
    var lastCommitMilliseconds: Int64 = 0

    public init(topic: String, group: String? = nil, server: String = defaultServerURL(), start: TopicStart = .earliest,
                bufferedRecordsMax: Int = 10_000, commitIntervalMilliseconds: Int64 = 1_000) {
        self.topic = topic
        self.group = group
        self.server = server
        self.start = start
        self.bufferedRecordsMax = bufferedRecordsMax
        self.commitIntervalMilliseconds = commitIntervalMilliseconds
    }

    public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(Self.fields) }

    public mutating func open(context: TopologyContext, collector: SpoutCollector) throws {
        self.collector = collector
        let group = self.group ?? "\(context.topologyName).\(context.componentID)"
        let client = AqueductClient(baseURL: server)
        let topic = self.topic
        let description = try blocking { try await client.describeTopic(topic) }.get()
        let tasks = context.componentTasks.count
        let assigned = description.partitions.map(\.partition).filter { $0 % tasks == context.taskIndex }
        let known = try blocking { try await client.committedOffsets(group: group, topic: topic) }.get()
        var starts: [Int: Int64] = [:]
        for partition in description.partitions where assigned.contains(partition.partition) {
            let fallback = start == .earliest ? partition.startOffset : partition.endOffset
            starts[partition.partition] = max(known[partition.partition] ?? fallback, partition.startOffset)
        }
        committed = starts
        emittedUpTo = starts
        reader = TopicReader(client: client, topic: topic, group: group, starts: starts, bufferedRecordsMax: bufferedRecordsMax)
    }

    public mutating func nextTuple() {
        guard let reader, let collector else { return }
        var records = replay
        replay.removeAll()
        if records.count < 256 { records += reader.take(maxRecords: 256 - records.count) }
        for record in records {
            pending[record.partition, default: [:]][record.offset] = record
            emittedUpTo[record.partition] = max(emittedUpTo[record.partition] ?? 0, record.offset + 1)
            collector.emit(Self.values(of: record), messageID: .list([.int(Int64(record.partition)), .int(record.offset)]))
        }
        commitIfDue(reader: reader)
    }

    public mutating func ack(_ messageID: TupleValue) {
        guard let (partition, offset) = Self.position(messageID) else { return }
        pending[partition]?[offset] = nil
        // Also here: while backpressure holds the spout, nextTuple is not called.
        if let reader { commitIfDue(reader: reader) }
    }

    public mutating func fail(_ messageID: TupleValue) {
        guard let (partition, offset) = Self.position(messageID), let record = pending[partition]?[offset] else { return }
        replay.append(record)
    }

    public mutating func close() {
        if let reader {
            let offsets = commitPoint()
            if offsets != committed { reader.commitNow(offsets) }
            reader.stop()
        }
        reader = nil
    }

    /// Per partition: the lowest offset still pending, else the offset after the last
    /// record emitted. Everything before it is done.
    func commitPoint() -> [Int: Int64] {
        var point = emittedUpTo
        for (partition, records) in pending {
            if let lowest = records.keys.min() { point[partition] = min(point[partition] ?? lowest, lowest) }
        }
        return point
    }

    private mutating func commitIfDue(reader: TopicReader) {
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        guard now - lastCommitMilliseconds >= commitIntervalMilliseconds else { return }
        lastCommitMilliseconds = now
        let offsets = commitPoint()
        if offsets != committed {
            committed = offsets
            reader.commitInBackground(offsets)
        }
    }

    static func values(of record: FetchedRecordJSON) -> [TupleValue] {
        [.int(Int64(record.partition)), .int(record.offset), payload(record.key), payload(record.value), .int(record.timestamp)]
    }

    /// Base64 from the server; text when it is UTF-8, bytes otherwise.
    static func payload(_ base64: String?) -> TupleValue {
        guard let base64, let data = Data(base64Encoded: base64) else { return .null }
        if let text = String(data: data, encoding: .utf8) { return .string(text) }
        return .bytes(Array(data))
    }

    static func position(_ messageID: TupleValue) -> (Int, Int64)? {
        guard let parts = messageID.listValue, parts.count == 2, let partition = parts[0].intValue, let offset = parts[1].intValue else { return nil }
        return (Int(partition), offset)
    }
}

/// Long-polls a spout task's partitions in the background and buffers their records.
final class TopicReader: Sendable {
    private struct State {
        var buffered: [FetchedRecordJSON] = []
        var stopped = false
        var lastError: String?
    }
    private let state = Mutex(State())
    private let client: AqueductClient
    private let topic: String
    private let group: String
    private let bufferedRecordsMax: Int
    private let tasks = Mutex<[Task<Void, Never>]>([])

    init(client: AqueductClient, topic: String, group: String, starts: [Int: Int64], bufferedRecordsMax: Int) {
        self.client = client
        self.topic = topic
        self.group = group
        self.bufferedRecordsMax = bufferedRecordsMax
        var started: [Task<Void, Never>] = []
        for (partition, offset) in starts {
            started.append(Task { [self] in await self.poll(partition: partition, from: offset) })
        }
        tasks.withLock { $0 = started }
    }

    private func poll(partition: Int, from start: Int64) async {
        var next = start
        while !state.withLock({ $0.stopped }) {
            if state.withLock({ $0.buffered.count }) >= bufferedRecordsMax {
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            do {
                let answer = try await client.fetch(topic, partition: partition, offset: String(next), maxWaitMilliseconds: 500,
                                                    maxRecords: 1_000, encoding: .base64)
                next = answer.nextOffset
                if !answer.records.isEmpty { state.withLock { $0.buffered += answer.records } }
            } catch {
                state.withLock { $0.lastError = "\(error)" }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func take(maxRecords: Int) -> [FetchedRecordJSON] {
        state.withLock { state in
            let count = min(maxRecords, state.buffered.count)
            let taken = Array(state.buffered.prefix(count))
            state.buffered.removeFirst(count)
            return taken
        }
    }

    func commitInBackground(_ offsets: [Int: Int64]) {
        let client = self.client, group = self.group, topic = self.topic
        Task { try? await client.commitOffsets(group: group, topic: topic, offsets: offsets) }
    }

    func commitNow(_ offsets: [Int: Int64]) {
        let client = self.client, group = self.group, topic = self.topic
        _ = blocking { try await client.commitOffsets(group: group, topic: topic, offsets: offsets) }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }
}
