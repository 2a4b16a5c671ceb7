import AqueductCommon
import Foundation
import Logging
import NIOCore
import Synchronization

/// The default metadata store: the key space in memory, every commit appended to a
/// checksummed log file and fdatasync'd before it is applied or acknowledged, and
/// compacted into a snapshot (written aside, then renamed) when the log grows.
///
/// Crash safety: a commit is visible only after its log record is on stable storage;
/// a record torn by a crash is cut off on restart (it was never acknowledged); a bad
/// record followed by good ones is corruption and stops the start with an error, since
/// skipping a metadata change silently could lose topics or segments.
public final class EmbeddedMetadataStore: MetadataStore {
    /// Log size at which the state is written to a snapshot and the log emptied.
    public static let logBytesCompactThreshold: Int64 = 4 << 20
    /// Events a watcher may have unread before it is cut off with `watchLagged`.
    public static let watchEventsBufferMax = 4_096

    private struct Watcher {
        let prefix: String
        let continuation: AsyncThrowingStream<MetadataEvent, any Error>.Continuation
    }

    private struct Guarded {
        var state: MetadataState
        var watchers: [UInt64: Watcher] = [:]
        var nextWatcherID: UInt64 = 0
        var failure: MetadataError?
        var closed = false
    }

    public let directory: String
    private let logger: Logger
    private let guarded: Mutex<Guarded>
    /// Commits and compactions run here, one at a time, off the cooperative pool
    /// (they block in fdatasync).
    private let queue = DispatchQueue(label: "aqueduct.metadata.commits")
    /// Touched only on `queue` after init.
    private nonisolated(unsafe) var logFile: DataFile
    private nonisolated(unsafe) var logBytes: Int64

    private var logPath: String { directory + "/log" }
    private var snapshotPath: String { directory + "/snapshot" }

    /// Opens (and recovers) the store in `directory`, creating it when missing.
    public init(directory: String, logger: Logger = Logger(label: "aqueduct.metadata")) throws {
        self.directory = directory
        self.logger = logger
        try FileSystem.createDirectory(directory)
        let snapshotPath = directory + "/snapshot"
        let logPath = directory + "/log"
        var state = MetadataState()
        if let bytes = try FileSystem.readWholeFile(snapshotPath) {
            state = try MetadataFiles.decodeSnapshot(bytes, path: snapshotPath)
        }
        let file = try DataFile.open(logPath, create: true)
        let size = try file.size()
        let contents = try file.read(count: Int(size), at: 0)
        var index = contents.readerIndex
        var replayed = 0
        scan: while true {
            switch MetadataFiles.parseRecord(contents, at: index) {
            case .end:
                break scan
            case .record(let revision, let operations, let recordSize):
                if revision > state.revision {
                    guard revision == state.revision + 1 else {
                        throw MetadataError.corrupt(
                            path: logPath, detail: "revision \(revision) follows \(state.revision) at byte \(index)")
                    }
                    state.applyValidated(operations, revision: revision)
                    replayed += 1
                }
                index += recordSize
            case .invalid:
                // Only the last record can be torn: each commit is synced before the next
                // starts. If a good record follows this one, this is corruption.
                if let length: UInt32 = contents.getInteger(at: index),
                    case .record = MetadataFiles.parseRecord(contents, at: index + MetadataFiles.recordHeaderBytes + Int(length))
                {
                    throw MetadataError.corrupt(path: logPath, detail: "checksum mismatch in the record at byte \(index)")
                }
                logger.warning(
                    "metadata log ends with a torn record; cutting it off (never acknowledged)",
                    metadata: ["path": "\(logPath)", "offset": "\(index)", "bytes": "\(Int(size) - index)"])
                try file.truncate(to: Int64(index))
                try file.sync()
                break scan
            }
        }
        self.logFile = file
        self.logBytes = Int64(index)
        self.guarded = Mutex(Guarded(state: state))
        logger.debug("metadata opened", metadata: ["revision": "\(state.revision)", "replayed": "\(replayed)"])
    }

    public func get(_ key: String) async throws -> VersionedValue? {
        try guarded.withLock { guarded in
            if guarded.closed { throw MetadataError.closed }
            return guarded.state.entries[key]
        }
    }

    public func list(prefix: String) async throws -> [(key: String, value: VersionedValue)] {
        try guarded.withLock { guarded in
            if guarded.closed { throw MetadataError.closed }
            return guarded.state.list(prefix: prefix)
        }
    }

    public func currentRevision() async throws -> UInt64 {
        guarded.withLock { $0.state.revision }
    }

    /// A copy of the whole key space (for tests and diagnostics).
    public func snapshotState() -> MetadataState {
        guarded.withLock { $0.state }
    }

    @discardableResult
    public func commit(_ operations: [MetadataOperation]) async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.commitOnQueue(operations) })
            }
        }
    }

    private func commitOnQueue(_ operations: [MetadataOperation]) throws -> UInt64 {
        let revision: UInt64 = try guarded.withLock { guarded in
            if guarded.closed { throw MetadataError.closed }
            if let failure = guarded.failure { throw failure }
            try guarded.state.validate(operations)
            return guarded.state.revision + 1
        }
        let record = MetadataFiles.encodeRecord(revision: revision, operations: operations)
        do {
            try logFile.write(record, at: logBytes)
            try logFile.syncData()
        } catch {
            // The log may now hold a record the memory does not: stop taking commits.
            let failure = MetadataError.io("\(error)")
            guarded.withLock { $0.failure = failure }
            logger.critical("metadata log write failed; the store is now read-only", metadata: ["error": "\(error)"])
            throw failure
        }
        logBytes += Int64(record.readableBytes)
        guarded.withLock { guarded in
            let events = guarded.state.applyValidated(operations, revision: revision)
            for event in events {
                for (id, watcher) in guarded.watchers where event.key.hasPrefix(watcher.prefix) {
                    if case .dropped = watcher.continuation.yield(event) {
                        watcher.continuation.finish(throwing: MetadataError.watchLagged(prefix: watcher.prefix))
                        guarded.watchers[id] = nil
                    }
                }
            }
        }
        if logBytes >= Self.logBytesCompactThreshold {
            do { try compactOnQueue() } catch {
                // The log still holds everything; compaction is retried at the next commit.
                logger.error("metadata compaction failed", metadata: ["error": "\(error)"])
            }
        }
        return revision
    }

    /// Writes the state to a new snapshot, then empties the log. A crash in between
    /// leaves log records the snapshot already holds; replay skips them by revision.
    private func compactOnQueue() throws {
        let state = guarded.withLock { $0.state }
        try FileSystem.atomicReplace(snapshotPath, contents: MetadataFiles.encodeSnapshot(state))
        try logFile.truncate(to: 0)
        try logFile.sync()
        logBytes = 0
    }

    /// Forces a compaction now (tests, and an admin command later).
    public func compact() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async { continuation.resume(with: Result { try self.compactOnQueue() }) }
        }
    }

    /// The store keeps no history: a watch after a revision older than the current one
    /// ends at once with `watchLagged`.
    public func watch(prefix: String, afterRevision: UInt64?) -> AsyncThrowingStream<MetadataEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<MetadataEvent, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(Self.watchEventsBufferMax))
        var lagged = false
        let id: UInt64? = guarded.withLock { guarded in
            if guarded.closed { return nil }
            if let afterRevision, afterRevision < guarded.state.revision {
                lagged = true
                return nil
            }
            let id = guarded.nextWatcherID
            guarded.nextWatcherID += 1
            guarded.watchers[id] = Watcher(prefix: prefix, continuation: continuation)
            return id
        }
        guard let id else {
            continuation.finish(throwing: lagged ? MetadataError.watchLagged(prefix: prefix) : MetadataError.closed)
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.guarded.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    public func close() async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                let watchers = self.guarded.withLock { guarded -> [Watcher] in
                    guarded.closed = true
                    defer { guarded.watchers = [:] }
                    return Array(guarded.watchers.values)
                }
                for watcher in watchers { watcher.continuation.finish() }
                self.logFile.close()
                continuation.resume()
            }
        }
    }
}
