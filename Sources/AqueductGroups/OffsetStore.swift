import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductRecords
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// Committed consumer offsets, kept durably in an internal log (`__consumer_offsets`,
/// not a topic clients see) and in memory for reads.
///
/// Writes are queued in order (`enqueue`, which never waits, so the coordinator can
/// queue a commit under the same lock that checked the member's generation) and
/// appended by whichever waiter finds no one else appending: consecutive commits
/// share one append, and the memory view changes only after the log has them, in the
/// log's order. On start the log is replayed, later records winning. When the log
/// holds many more records than live offsets, the live ones are written again and
/// everything before them is truncated (compaction by snapshot).
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

    /// A record's key in the log.
    struct Key: Codable, Hashable {
        var group: String
        var topic: String
        var partition: Int
    }

    /// A write waiting for its turn in the log.
    enum Write: Sendable {
        case commit(group: String, [(TopicPartition, Committed)])
        /// Every offset of the group (DeleteGroups).
        case deleteGroup(String)
        /// The group's offsets committed before `before` (retention).
        case expire(group: String, before: Int64)
        /// The group's offsets of some partitions (OffsetDelete).
        case deletePartitions(group: String, [TopicPartition])
    }

    /// A queued write; `completion()` waits until it is in the log (or failed).
    public final class PendingWrite: Sendable {
        private enum Outcome {
            case waiting(UnsafeContinuation<Result<Void, BrokerError>, Never>?)
            case done(Result<Void, BrokerError>)
        }
        private let outcome = Mutex(Outcome.waiting(nil))
        fileprivate let store: OffsetStore

        fileprivate init(store: OffsetStore) { self.store = store }

        fileprivate func complete(_ result: Result<Void, BrokerError>) {
            let waiter = outcome.withLock { outcome -> UnsafeContinuation<Result<Void, BrokerError>, Never>? in
                guard case .waiting(let continuation) = outcome else { return nil }
                outcome = .done(result)
                return continuation
            }
            waiter?.resume(returning: result)
        }

        /// Appends the queue if no one else is, then waits for this write. Call once.
        public func completion() async throws(BrokerError) {
            await store.drainIfIdle()
            let result: Result<Void, BrokerError> = await withUnsafeContinuation { continuation in
                let ready = outcome.withLock { outcome -> Result<Void, BrokerError>? in
                    switch outcome {
                    case .done(let result): return result
                    case .waiting:
                        outcome = .waiting(continuation)
                        return nil
                    }
                }
                if let ready { continuation.resume(returning: ready) }
            }
            try result.get()
        }
    }

    public static let logName = "__consumer_offsets"
    /// Live offsets are rewritten (and older records dropped) past this many records
    /// per live offset, and at least this many records in all.
    static let recordsPerLiveOffsetMax = 4
    static let recordsBeforeCompactionMin = 10_000
    static let recordsPerBatchMax = 1_000

    private let log: Log
    private let writer: LogWriter
    private let clock: any WallClock
    private let logger: Logger
    /// Most offsets kept in all (`GroupLimits.offsetsMax`).
    public let offsetsMax: Int
    private let refusals = Counter(label: "aqueduct_groups_refused_total", dimensions: [("reason", "offsets")])
    private let expired = Counter(label: "aqueduct_offsets_expired_total")

    private struct State {
        /// Group → partition → committed offset.
        var offsets: [String: [TopicPartition: Committed]] = [:]
        var count = 0
        /// Records in the log since the last compaction.
        var records = 0
        var queue: [(Write, PendingWrite)] = []
        /// Entries of queued commits: new keys they may add (offsetsMax is checked
        /// against the live count plus these).
        var queuedEntries = 0
        /// Someone is appending the queue.
        var draining = false
    }
    private let state = Mutex(State())

    private init(log: Log, writer: LogWriter, clock: any WallClock, offsetsMax: Int, logger: Logger) {
        self.log = log
        self.writer = writer
        self.clock = clock
        self.offsetsMax = offsetsMax
        self.logger = logger
    }

    /// The offsets log's configuration: no retention (the store compacts it itself).
    public static var logConfiguration: LogConfiguration {
        var configuration = LogConfiguration()
        configuration.segmentBytes = 16 << 20
        configuration.retentionMilliseconds = nil
        configuration.retentionBytes = nil
        return configuration
    }

    /// Opens (or creates) the offsets log and replays it (one node: one log holds
    /// every group's offsets).
    public static func open(
        logs: LogStore, clock: any WallClock = SystemWallClock(), offsetsMax: Int = GroupLimits().offsetsMax, logName: String = OffsetStore.logName,
        logger: Logger
    ) async throws -> OffsetStore {
        let log: Log
        if let existing = logs.allLogs.first(where: { $0.name == logName }) {
            log = existing
        } else {
            log = try await logs.createLog(name: logName, configuration: logConfiguration)
        }
        return try await open(log: log, clock: clock, offsetsMax: offsetsMax, logger: logger)
    }

    /// Opens the writer of an existing offsets log (on shared storage: claims it and
    /// fences the previous writer) and replays it.
    public static func open(
        log: Log, clock: any WallClock = SystemWallClock(), offsetsMax: Int = GroupLimits().offsetsMax, logger: Logger
    ) async throws -> OffsetStore {
        let store = OffsetStore(log: log, writer: try await log.openWriter(), clock: clock, offsetsMax: offsetsMax, logger: logger)
        try await store.replay()
        return store
    }

    private func replay() async throws {
        var offset = log.startOffset
        var replayed: [String: [TopicPartition: Committed]] = [:]
        var records = 0
        let decoder = JSONDecoder()
        while offset < log.endOffset {
            let read = try await log.read(from: offset, maxBytes: 4 << 20)
            if read.batches.isEmpty { break }
            for batch in read.batches {
                for record in try RecordBatch.records(of: batch) where record.offset >= offset {
                    records += 1
                    guard let keyBytes = record.key, let key = try? decoder.decode(Key.self, from: Data(keyBytes)) else { continue }
                    let partition = TopicPartition(key.topic, key.partition)
                    if let value = record.value, let committed = try? decoder.decode(Committed.self, from: Data(value)) {
                        replayed[key.group, default: [:]][partition] = committed
                    } else {
                        replayed[key.group]?[partition] = nil
                        if replayed[key.group]?.isEmpty == true { replayed[key.group] = nil }
                    }
                }
            }
            offset = read.nextOffset
        }
        let count = replayed.values.reduce(0) { $0 + $1.count }
        state.withLock {
            $0.offsets = replayed
            $0.count = count
            $0.records = records
        }
        if records > 0 { logger.info("consumer offsets loaded", metadata: ["offsets": "\(count)", "records": "\(records)"]) }
    }

    // MARK: - Writes

    /// Queues a group's commits behind every write queued before; never waits. Nil
    /// when they would take the store past `offsetsMax`.
    public func enqueueCommit(group: String, _ commits: [(TopicPartition, Committed)]) -> PendingWrite? {
        let pending = PendingWrite(store: self)
        let accepted = state.withLock { state -> Bool in
            let known = state.offsets[group]
            let added = known.map { known in commits.count { known[$0.0] == nil } } ?? commits.count
            guard state.count + state.queuedEntries + added <= offsetsMax else { return false }
            state.queuedEntries += commits.count
            state.queue.append((.commit(group: group, commits), pending))
            return true
        }
        if !accepted {
            refusals.increment()
            return nil
        }
        return pending
    }

    func enqueue(_ write: Write) -> PendingWrite {
        let pending = PendingWrite(store: self)
        state.withLock { $0.queue.append((write, pending)) }
        return pending
    }

    /// Stores a group's commits durably, then makes them visible.
    public func commit(group: String, _ commits: [(TopicPartition, Committed)]) async throws(BrokerError) {
        guard !commits.isEmpty else { return }
        guard let pending = enqueueCommit(group: group, commits) else { throw Self.full(offsetsMax) }
        try await pending.completion()
    }

    static func full(_ limit: Int) -> BrokerError {
        BrokerError(.unavailable, "the server keeps at most \(limit) committed offsets (offsets.max)",
            hint: "delete unused groups, or raise offsets.max")
    }

    /// Deletes every committed offset of a group (tombstones in the log, so a replay
    /// forgets them too).
    public func deleteGroup(_ group: String) async throws(BrokerError) {
        try await enqueue(.deleteGroup(group)).completion()
    }

    /// Appends what is queued, run by one waiter at a time, until the queue is empty.
    fileprivate func drainIfIdle() async {
        guard state.withLock({ state -> Bool in
            if state.draining || state.queue.isEmpty { return false }
            state.draining = true
            return true
        }) else { return }
        while let writes = state.withLock({ state -> [(Write, PendingWrite)]? in
            if state.queue.isEmpty {
                state.draining = false
                return nil
            }
            defer { state.queue = [] }
            return state.queue
        }) {
            // Consecutive commits go in one append; a deletion or an expiry sees the
            // memory view after everything queued before it.
            var index = 0
            while index < writes.count {
                var commits: [(Key, Committed)] = []
                var end = index
                while end < writes.count, case .commit(let group, let entries) = writes[end].0 {
                    commits += entries.map { (Key(group: group, topic: $0.0.topic, partition: $0.0.partition), $0.1) }
                    end += 1
                }
                if end > index {
                    await write(commits.map { ($0.0, Optional($0.1)) }, for: writes[index..<end].map(\.1), queuedEntries: commits.count)
                    index = end
                    continue
                }
                let removals: [Key] = state.withLock { state in
                    switch writes[index].0 {
                    case .commit: return []
                    case .deleteGroup(let group):
                        return (state.offsets[group] ?? [:]).keys.map { Key(group: group, topic: $0.topic, partition: $0.partition) }
                    case .expire(let group, let before):
                        return (state.offsets[group] ?? [:]).filter { $0.value.commitTimestamp < before }.keys
                            .map { Key(group: group, topic: $0.topic, partition: $0.partition) }
                    case .deletePartitions(let group, let partitions):
                        let known = state.offsets[group] ?? [:]
                        return partitions.filter { known[$0] != nil }.map { Key(group: group, topic: $0.topic, partition: $0.partition) }
                    }
                }
                if case .expire = writes[index].0, !removals.isEmpty {
                    expired.increment(by: removals.count)
                    logger.info("committed offsets expired", metadata: ["group": "\(removals[0].group)", "offsets": "\(removals.count)"])
                }
                await write(removals.map { ($0, nil) }, for: [writes[index].1], queuedEntries: 0)
                index += 1
            }
            await compactIfDue()
        }
    }

    /// Appends entries (nil: a tombstone), then applies them and completes the writes.
    private func write(_ entries: [(Key, Committed?)], for writes: [PendingWrite], queuedEntries: Int) async {
        let result: Result<Void, BrokerError>
        do throws(BrokerError) {
            try await append(entries)
            result = .success(())
        } catch {
            logger.warning("storing consumer offsets failed", metadata: ["error": "\(error)"])
            result = .failure(error)
        }
        state.withLock { state in
            state.queuedEntries -= queuedEntries
            guard case .success = result else { return }
            for (key, committed) in entries {
                let partition = TopicPartition(key.topic, key.partition)
                if let committed {
                    if state.offsets[key.group, default: [:]].updateValue(committed, forKey: partition) == nil { state.count += 1 }
                } else if state.offsets[key.group]?.removeValue(forKey: partition) != nil {
                    state.count -= 1
                    if state.offsets[key.group]?.isEmpty == true { state.offsets[key.group] = nil }
                }
            }
            state.records += entries.count
        }
        for write in writes { write.complete(result) }
    }

    /// Appends entries; a nil `Committed` is a tombstone (the offset is deleted).
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

    /// Rewrites the live offsets at the log's end and drops every record before them,
    /// when the log holds many more records than live offsets (called while draining).
    private func compactIfDue() async {
        let live: [(Key, Committed?)]? = state.withLock { state in
            guard state.records > max(Self.recordsBeforeCompactionMin, Self.recordsPerLiveOffsetMax * state.count) else { return nil }
            return state.offsets.flatMap { group, partitions in
                partitions.map { (Key(group: group, topic: $0.key.topic, partition: $0.key.partition), Optional($0.value)) }
            }
        }
        guard let live else { return }
        let first = log.endOffset
        do {
            try await append(live)
            try await log.truncate(before: first)
            state.withLock { $0.records = live.count }
            logger.info("consumer offsets compacted", metadata: ["offsets": "\(live.count)"])
        } catch {
            logger.warning("consumer offsets compaction failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Reads

    /// A group's committed offsets, all of them or those of `partitions`.
    public func offsets(group: String, partitions: [TopicPartition]? = nil) -> [TopicPartition: Committed] {
        state.withLock { state in
            guard let all = state.offsets[group] else { return [:] }
            guard let partitions else { return all }
            var result: [TopicPartition: Committed] = [:]
            for partition in partitions {
                if let committed = all[partition] { result[partition] = committed }
            }
            return result
        }
    }

    /// Groups with committed offsets.
    public var groups: Set<String> { state.withLock { Set($0.offsets.keys) } }

    /// Whether the group has committed offsets.
    public func hasOffsets(_ group: String) -> Bool { state.withLock { $0.offsets[group] != nil } }

    /// Committed offsets kept, in all.
    public var count: Int { state.withLock { $0.count } }
}
