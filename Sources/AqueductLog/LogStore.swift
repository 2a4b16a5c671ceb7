import AqueductCommon
import AqueductMetadata
import AqueductStorage
import Foundation
import Logging
import Synchronization

/// All logs of this node: creates, opens and deletes them, and enforces retention.
/// Their segment lists live in the metadata store; their entries on the storage node.
public final class LogStore: Sendable {
    public let storage: any SegmentStorage
    public let metadata: any MetadataStore
    let clock: any WallClock
    let logger: Logger
    private let logs = Mutex<[UInt64: Log]>([:])

    public init(storage: any SegmentStorage, metadata: any MetadataStore, clock: any WallClock = SystemWallClock(), logger: Logger = Logger(label: "aqueduct.log")) {
        self.storage = storage
        self.metadata = metadata
        self.clock = clock
        self.logger = logger
    }

    /// Loads every log from metadata and removes storage segments no log lists (left
    /// by a crash between a metadata change and the matching storage change).
    public func open() async throws {
        let stored = try await metadata.list(prefix: LogRecord.prefix)
        var loaded: [UInt64: Log] = [:]
        for (key, value) in stored {
            let record: LogRecord
            do { record = try JSONDecoder().decode(LogRecord.self, from: Data(value.value)) } catch {
                throw LogError.metadata("log record \(key) is undecodable: \(error)")
            }
            loaded[record.id] = Log(record: record, version: value.version, storage: storage, metadata: metadata, clock: clock, logger: logger)
        }
        logs.withLock { $0 = loaded }
        for segment in storage.allSegments() {
            let known = loaded[segment.id.logID]?.state.withLock { state in
                state.record.segments.contains { $0.number == segment.id.number }
            } ?? false
            if !known {
                logger.warning("removing a segment no log lists", metadata: ["segment": "\(segment.id)"])
                try? await storage.deleteSegment(segment.id)
            }
        }
    }

    /// Creates an empty log. Its writer is opened with `Log.openWriter()`.
    public func createLog(name: String, configuration: LogConfiguration) async throws -> Log {
        if let problem = configuration.problem() { throw LogError.invalidConfiguration(problem) }
        let id = try await allocateID()
        let record = LogRecord(
            id: id, name: name, createdAtMilliseconds: clock.nowMilliseconds(), writerEpoch: 0, startOffset: 0,
            segments: [], configuration: configuration)
        let version = try await metadata.put(LogRecord.key(id), EmbeddedMetadataStore.encodeJSON(record), expect: .absent)
        let log = Log(record: record, version: version, storage: storage, metadata: metadata, clock: clock, logger: logger)
        logs.withLock { $0[id] = log }
        return log
    }

    /// The operations that create a log inside a larger metadata commit (a topic and
    /// its partitions at once): allocate ids first with `allocateIDs`.
    public func newLogRecordOperation(id: UInt64, name: String, configuration: LogConfiguration) throws -> MetadataOperation {
        if let problem = configuration.problem() { throw LogError.invalidConfiguration(problem) }
        let record = LogRecord(
            id: id, name: name, createdAtMilliseconds: clock.nowMilliseconds(), writerEpoch: 0, startOffset: 0,
            segments: [], configuration: configuration)
        return .put(key: LogRecord.key(id), value: try EmbeddedMetadataStore.encodeJSON(record), expect: .absent)
    }

    /// Loads logs created by a commit of `newLogRecordOperation`s.
    public func adopt(ids: [UInt64]) async throws -> [Log] {
        var adopted: [Log] = []
        for id in ids {
            guard let stored = try await metadata.get(LogRecord.key(id)) else { throw LogError.logNotFound(id) }
            let record = try JSONDecoder().decode(LogRecord.self, from: Data(stored.value))
            let log = Log(record: record, version: stored.version, storage: storage, metadata: metadata, clock: clock, logger: logger)
            logs.withLock { $0[id] = log }
            adopted.append(log)
        }
        return adopted
    }

    /// Reserves `count` consecutive log ids.
    public func allocateIDs(_ count: Int) async throws -> [UInt64] {
        while true {
            let current = try await metadata.get(LogRecord.idCounterKey)
            let last = current.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            let next = last + UInt64(count)
            do {
                try await metadata.put(
                    LogRecord.idCounterKey, Array(String(next).utf8),
                    expect: current.map { .version($0.version) } ?? .absent)
                return Array((last + 1)...next)
            } catch MetadataError.conflict {
                continue  // another creator took ids first; try the next ones
            }
        }
    }

    private func allocateID() async throws -> UInt64 {
        try await allocateIDs(1)[0]
    }

    public func log(_ id: UInt64) -> Log? {
        logs.withLock { $0[id] }
    }

    public var allLogs: [Log] {
        logs.withLock { Array($0.values) }.sorted { $0.id < $1.id }
    }

    /// Deletes a log: its segments, then its metadata. Readers get `logNotFound`.
    public func deleteLog(_ id: UInt64) async throws {
        guard let log = logs.withLock({ $0[id] }) else { throw LogError.logNotFound(id) }
        try await log.deleteSegments()
        try await metadata.delete(LogRecord.key(id))
        logs.withLock { $0[id] = nil }
    }

    /// The metadata operation that deletes a log's record (inside a larger commit);
    /// call `forget` after the commit, then `deleteSegments` on the log.
    public func deleteRecordOperation(_ id: UInt64) -> MetadataOperation {
        .delete(key: LogRecord.key(id), expect: .any)
    }

    /// Forgets a log whose record was deleted, and deletes its segments.
    public func forget(_ id: UInt64) async throws {
        guard let log = logs.withLock({ $0.removeValue(forKey: id) }) else { return }
        try await log.deleteSegments()
    }

    /// Applies retention to every log; returns the number of segments deleted.
    @discardableResult
    public func enforceRetention() async -> Int {
        var deleted = 0
        for log in allLogs {
            do { deleted += try await log.enforceRetention() } catch {
                logger.error("retention failed", metadata: ["log": "\(log.name)", "error": "\(error)"])
            }
        }
        return deleted
    }
}
