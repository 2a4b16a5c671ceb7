import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductRecords
import Foundation
import Logging
import NIOCore
import Synchronization

/// Committed consumer offsets, kept durably in an internal log (`__consumer_offsets`,
/// not a topic clients see) and in memory for reads. Each commit is one record batch
/// appended at the log's durability point before the commit is acknowledged; on start
/// the log is replayed, later records winning. When the log holds many more records
/// than live offsets, the live ones are written again and everything before them is
/// truncated (compaction by snapshot).
public final class OffsetStore: Sendable {
    public struct Committed: Codable, Equatable, Sendable {
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?
        public var commitTimestamp: Int64

        public init(offset: Int64, leaderEpoch: Int32, metadata: String?, commitTimestamp: Int64) {
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
            self.commitTimestamp = commitTimestamp
        }
    }

    struct Key: Codable, Hashable {
        var group: String
        var topic: String
        var partition: Int
    }

    static let logName = "__consumer_offsets"
    /// Live offsets are rewritten (and older records dropped) past this many records
    /// per live offset, and at least this many records in all.
    static let recordsPerLiveOffsetMax = 4
    static let recordsBeforeCompactionMin = 10_000
    static let recordsPerBatchMax = 1_000

    private let log: Log
    private let writer: LogWriter
    private let clock: any WallClock
    private let logger: Logger
    private struct State {
        var offsets: [Key: Committed] = [:]
        var records = 0
    }
    private let state = Mutex(State())
    /// Serializes appends, so the memory view follows the log's order.
    private let appendLock = WeightedSemaphore(capacity: 1)

    private init(log: Log, writer: LogWriter, clock: any WallClock, logger: Logger) {
        self.log = log
        self.writer = writer
        self.clock = clock
        self.logger = logger
    }

    /// Opens (or creates) the offsets log and replays it.
    public static func open(logs: LogStore, clock: any WallClock = SystemWallClock(), logger: Logger) async throws -> OffsetStore {
        let log: Log
        if let existing = logs.allLogs.first(where: { $0.name == logName }) {
            log = existing
        } else {
            var configuration = LogConfiguration()
            configuration.segmentBytes = 16 << 20
            configuration.retentionMilliseconds = nil
            configuration.retentionBytes = nil
            log = try await logs.createLog(name: logName, configuration: configuration)
        }
        let store = OffsetStore(log: log, writer: try await log.openWriter(), clock: clock, logger: logger)
        try await store.replay()
        return store
    }

    private func replay() async throws {
        var offset = log.startOffset
        var replayed: [Key: Committed] = [:]
        var records = 0
        let decoder = JSONDecoder()
        while offset < log.endOffset {
            let read = try await log.read(from: offset, maxBytes: 4 << 20)
            if read.batches.isEmpty { break }
            for batch in read.batches {
                for record in try RecordBatch.records(of: batch) where record.offset >= offset {
                    records += 1
                    guard let keyBytes = record.key, let key = try? decoder.decode(Key.self, from: Data(keyBytes)) else { continue }
                    if let value = record.value, let committed = try? decoder.decode(Committed.self, from: Data(value)) {
                        replayed[key] = committed
                    } else {
                        replayed[key] = nil
                    }
                }
            }
            offset = read.nextOffset
        }
        state.withLock {
            $0.offsets = replayed
            $0.records = records
        }
        if records > 0 { logger.info("consumer offsets loaded", metadata: ["offsets": "\(replayed.count)", "records": "\(records)"]) }
    }

    /// Stores a group's commits durably, then makes them visible.
    public func commit(group: String, _ commits: [(TopicPartition, Committed)]) async throws(BrokerError) {
        guard !commits.isEmpty else { return }
        await appendLock.acquire(1)
        defer { appendLock.release(1) }
        let entries = commits.map { (Key(group: group, topic: $0.0.topic, partition: $0.0.partition), $0.1) }
        try await append(entries.map { ($0.0, Optional($0.1)) })
        let compact = state.withLock { state -> Bool in
            for (key, committed) in entries { state.offsets[key] = committed }
            state.records += entries.count
            return state.records > max(Self.recordsBeforeCompactionMin, Self.recordsPerLiveOffsetMax * state.offsets.count)
        }
        if compact { await compactLocked() }
    }

    /// Appends commits; a nil `Committed` is a tombstone (the offset is deleted).
    private func append(_ entries: [(Key, Committed?)]) async throws(BrokerError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let now = clock.nowMilliseconds()
        var start = 0
        while start < entries.count {
            let chunk = entries[start..<min(entries.count, start + Self.recordsPerBatchMax)]
            var builder = RecordBatchBuilder()
            for (key, committed) in chunk {
                guard let keyBytes = try? encoder.encode(key) else { continue }
                let value = committed.flatMap { try? encoder.encode($0) }.map(Array.init)
                builder.append(timestamp: now, key: Array(keyBytes), value: value)
            }
            do {
                _ = try await writer.append(builder.build())
            } catch {
                throw BrokerError.from(error)
            }
            start += chunk.count
        }
    }

    /// Rewrites the live offsets at the log's end and drops every record before them.
    private func compactLocked() async {
        let live = state.withLock { Array($0.offsets) }
        let first = log.endOffset
        do {
            try await append(live.map { ($0.key, Optional($0.value)) })
            try await log.truncate(before: first)
            state.withLock { $0.records = live.count }
            logger.info("consumer offsets compacted", metadata: ["offsets": "\(live.count)"])
        } catch {
            logger.warning("consumer offsets compaction failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    /// Deletes every committed offset of a group (tombstones in the log, so a replay
    /// forgets them too).
    public func deleteGroup(_ group: String) async throws(BrokerError) {
        await appendLock.acquire(1)
        defer { appendLock.release(1) }
        let keys = state.withLock { $0.offsets.keys.filter { $0.group == group } }
        guard !keys.isEmpty else { return }
        try await append(keys.map { ($0, nil) })
        state.withLock { state in
            for key in keys { state.offsets[key] = nil }
            state.records += keys.count
        }
    }

    /// A group's committed offsets, all of them or those of `partitions`.
    public func offsets(group: String, partitions: [TopicPartition]? = nil) -> [TopicPartition: Committed] {
        state.withLock { state in
            var result: [TopicPartition: Committed] = [:]
            if let partitions {
                for partition in partitions {
                    if let committed = state.offsets[Key(group: group, topic: partition.topic, partition: partition.partition)] {
                        result[partition] = committed
                    }
                }
            } else {
                for (key, committed) in state.offsets where key.group == group {
                    result[TopicPartition(key.topic, key.partition)] = committed
                }
            }
            return result
        }
    }

    /// Groups with committed offsets.
    public var groups: Set<String> { state.withLock { Set($0.offsets.keys.map(\.group)) } }
}
