import AqueductCommon
import AqueductMetadata
import AqueductRecords
import AqueductStorage
import Logging
import Metrics
import NIOCore
import Synchronization

/// A log (DistributedLog's model): a sequence of segments on the storage node, listed
/// in the metadata store, with dense 64-bit offsets across them.
///
/// One writer at a time: `openWriter()` takes a higher epoch, fences the segment the
/// previous writer was appending to, seals it at its last acknowledged entry and starts
/// a new segment. The previous writer's appends then fail with `fenced`, in this
/// process and at the storage node, and none of them reaches disk.
///
/// Appends are sequenced under a lock (assign offsets, queue on the journal) and wait
/// for acknowledgement outside it, so many appends share each fdatasync. Changes to
/// the segment list (roll, truncation, retention, a new writer) are serialized by
/// `control` and written to metadata with compare-and-set.
public final class Log: Sendable {
    public let id: UInt64
    let storage: any SegmentStorage
    let metadata: any MetadataStore
    let clock: any WallClock
    let logger: Logger
    /// Serializes changes to the segment list.
    let control = WeightedSemaphore(capacity: 1)

    struct Active {
        var handle: any SegmentAppender
        var segment: SegmentID { handle.id }
        var baseOffset: Int64
        var createdAtMilliseconds: Int64
        var bytes: Int64
    }

    struct State {
        var record: LogRecord
        var version: UInt64
        /// The epoch of the writer open in this process, if any.
        var writerEpoch: UInt64?
        var active: Active?
        /// The offset the next append gets.
        var nextOffset: Int64
        var rolling = false
        var rollWaiters: [CheckedContinuation<Void, Never>] = []
        var deleted = false
    }

    let state: PlainLock<State>
    private let appendedRecords: Counter
    private let appendedBytes: Counter

    init(record: LogRecord, version: UInt64, storage: any SegmentStorage, metadata: any MetadataStore, clock: any WallClock, logger: Logger) {
        self.id = record.id
        self.storage = storage
        self.metadata = metadata
        self.clock = clock
        var logger = logger
        logger[metadataKey: "log"] = "\(record.name)"
        self.logger = logger
        let next = record.segments.last.map { $0.endOffset ?? $0.baseOffset } ?? record.startOffset
        self.state = PlainLock(State(record: record, version: version, nextOffset: next))
        self.appendedRecords = Counter(label: "aqueduct_log_appended_records_total")
        self.appendedBytes = Counter(label: "aqueduct_log_appended_bytes_total")
    }

    public var name: String { state.withLock { $0.record.name } }
    public var configuration: LogConfiguration { state.withLock { $0.record.configuration } }

    /// The first readable offset.
    public var startOffset: Int64 { state.withLock { $0.record.startOffset } }

    /// One past the last acknowledged offset.
    public var endOffset: Int64 {
        let (last, start) = state.withLock { ($0.record.segments.last, $0.record.startOffset) }
        guard let last else { return start }
        if let end = last.endOffset { return end }
        return storage.segmentInfo(SegmentID(logID: id, number: last.number))?.endOffset ?? last.baseOffset
    }

    // MARK: - Writers

    /// Opens this process's writer with the next epoch, fencing any earlier writer.
    public func openWriter() async throws(LogError) -> LogWriter {
        await control.acquire(1)
        defer { control.release(1) }
        var (record, version) = state.withLock { ($0.record, $0.version) }
        if storage.isShared {
            // Another server may have written the log since this one read it.
            (record, version) = try await reload()
        }
        let epoch = record.writerEpoch + 1
        let now = clock.nowMilliseconds()
        if storage.isShared {
            // Claim the epoch before fencing (the order): from here on a writer
            // of an older epoch fails its next metadata change, and two servers taking
            // the log at once cannot both get past this compare-and-set.
            record.writerEpoch = epoch
            version = try await save(record, expecting: version)
        }
        var retired: [SegmentID] = []
        // Numbers only grow: an empty last segment is retired below, and its number must
        // not be taken again (it still exists in storage until it is deleted).
        let highestNumber = record.segments.last?.number ?? 0
        if let last = record.segments.last, last.state == .open {
            let segment = SegmentID(logID: id, number: last.number)
            var info: SegmentInfo?
            do throws(StorageError) {
                try await storage.fence(segment, epoch: epoch)
                info = try await storage.seal(segment)
            } catch {
                // Not found: created in metadata, never in storage (a crash in between).
                guard case .segmentNotFound = error else { throw .storage(error) }
                info = nil
            }
            if let info, info.endOffset > info.baseOffset {
                record.segments[record.segments.count - 1].seal(info, at: now)
            } else {
                record.segments.removeLast()
                if info != nil { retired.append(segment) }
            }
        }
        let number = highestNumber + 1
        let baseOffset = record.segments.last.map { $0.endOffset ?? $0.baseOffset } ?? record.startOffset
        record.writerEpoch = epoch
        record.segments.append(LogRecord.Segment(
            number: number, baseOffset: baseOffset, state: .open, createdAtMilliseconds: now))
        version = try await save(record, expecting: version)
        let segment = SegmentID(logID: id, number: number)
        try await startSegment(segment, baseOffset: baseOffset, epoch: epoch, record: record, version: version, now: now) { state in
            state.writerEpoch = epoch
            state.nextOffset = baseOffset
        }
        for old in retired { try await deleteFromStorage(old.number) }
        logger.debug("writer opened", metadata: ["epoch": "\(epoch)", "segment": "\(segment)", "baseOffset": "\(baseOffset)"])
        return LogWriter(log: self, epoch: epoch)
    }

    // MARK: - Appends

    /// Appends one record batch (validated: size, magic, CRC-32C; the log assigns its
    /// base offset) for the writer with `epoch`. Returns once the batch is durable.
    func append(_ batch: ByteBuffer, epoch: UInt64) async throws(LogError) -> AppendResult {
        try await submit(batch, epoch: epoch).durable()
    }

    /// Validates a batch, assigns its offsets and queues it on the journal; returns as
    /// soon as it is queued (`PendingAppend.durable()` waits for the journal). Batches
    /// submitted one after another are stored in that order, so a caller can queue the
    /// next batch while the previous one syncs.
    func submit(_ batch: ByteBuffer, epoch: UInt64) async throws(LogError) -> PendingAppend {
        try await submit(batch, epoch: epoch, admit: { _ in true })!
    }

    /// As `submit`, with `admit` called under the log's lock with the offset the batch
    /// would get, just before it is queued: returning false leaves the log unchanged
    /// (and `submit` returns nil). Lets a caller check and record something about the
    /// batch atomically with its append (idempotent producers' sequence numbers).
    func submit(_ batch: ByteBuffer, epoch: UInt64, admit: (_ baseOffset: Int64) -> Bool) async throws(LogError) -> PendingAppend? {
        // Checked outside the lock; the size limit, which can change, inside it.
        let header: RecordBatchHeader
        do { header = try RecordBatch.validate(batch, maxBytes: .max) } catch { throw .invalidBatch(error) }
        guard header.recordsCount > 0 else { throw .emptyBatch }
        let size = batch.readableBytes
        let reserved = await storage.reserveWriteBudget(size)
        enum Step {
            /// Queued on the journal; the storage node owns the write budget now.
            case queued(PendingAppend)
            /// Refused before anything was queued; the budget is still ours.
            case rejected(LogError)
            /// Not admitted by the caller; the budget is still ours.
            case skipped
            case roll
            case waitForRoll
        }
        while true {
            let step = state.withLock { (state: inout State) -> Step in
                if state.deleted { return .rejected(.logNotFound(id)) }
                guard let writerEpoch = state.writerEpoch, let active = state.active else {
                    return .rejected(.noWriter(id))
                }
                guard epoch == writerEpoch else {
                    return .rejected(.fenced(logID: id, writerEpoch: epoch, currentEpoch: max(writerEpoch, state.record.writerEpoch)))
                }
                let configuration = state.record.configuration
                guard size <= configuration.batchBytesMax else {
                    return .rejected(.invalidBatch(.tooLarge(bytes: size, limitBytes: configuration.batchBytesMax)))
                }
                if state.rolling { return .waitForRoll }
                if active.bytes > 0
                    && (active.bytes + Int64(size) > configuration.segmentBytes
                        || clock.nowMilliseconds() - active.createdAtMilliseconds >= configuration.segmentMilliseconds)
                {
                    state.rolling = true
                    return .roll
                }
                let baseOffset = state.nextOffset
                if !admit(baseOffset) { return .skipped }
                // Not written into `batch` here: it usually shares storage with the
                // request it arrived in, and writing would copy it. The storage node
                // writes the offset wherever the batch goes.
                var assigned = header
                assigned.baseOffset = baseOffset
                let pending = PendingAppend(AppendResult(baseOffset: baseOffset, lastOffset: assigned.lastOffset, segment: active.segment))
                do throws(StorageError) {
                    try active.handle.submitAppend(
                        epoch: epoch, batch: batch, header: assigned, reservedBytes: reserved, checksumVerified: true,
                        baseOffsetWritten: false
                    ) { outcome in pending.complete(outcome) }
                } catch {
                    return .rejected(Self.translate(error, epoch: epoch, state: state))
                }
                state.nextOffset = assigned.lastOffset + 1
                state.active?.bytes += Int64(size)
                return .queued(pending)
            }
            switch step {
            case .queued(let pending):
                storage.settleBudget(reservedBytes: reserved, batchBytes: size)
                appendedRecords.increment(by: Int(header.recordsCount))
                appendedBytes.increment(by: size)
                return pending
            case .rejected(let error):
                storage.releaseWriteBudget(reserved)
                throw error
            case .skipped:
                storage.releaseWriteBudget(reserved)
                return nil
            case .waitForRoll:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if !state.rolling { return true }
                        state.rollWaiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            case .roll:
                do {
                    try await roll(epoch: epoch)
                } catch {
                    storage.releaseWriteBudget(reserved)
                    throw error
                }
            }
        }
    }

    private static func translate(_ error: StorageError, epoch: UInt64, state: State) -> LogError {
        if case .fenced(_, _, let fencedEpoch) = error {
            return .fenced(logID: state.record.id, writerEpoch: epoch, currentEpoch: fencedEpoch)
        }
        return .storage(error)
    }

    /// Seals the active segment once every queued append is acknowledged and starts the
    /// next one at the following offset.
    private func roll(epoch: UInt64) async throws(LogError) {
        await control.acquire(1)
        defer {
            control.release(1)
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.rolling = false
                defer { state.rollWaiters.removeAll() }
                return state.rollWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
        let (activeSegment, currentEpoch) = state.withLock { ($0.active?.segment, $0.writerEpoch) }
        guard let activeSegment, currentEpoch == epoch else {
            throw .fenced(logID: id, writerEpoch: epoch, currentEpoch: currentEpoch ?? 0)
        }
        let info: SegmentInfo
        do throws(StorageError) { info = try await storage.seal(activeSegment) } catch { throw .storage(error) }
        let now = clock.nowMilliseconds()
        var (record, version) = state.withLock { ($0.record, $0.version) }
        guard let index = record.segments.firstIndex(where: { $0.number == activeSegment.number }) else {
            throw .metadata("active segment \(activeSegment) is missing from the log's metadata")
        }
        record.segments[index].seal(info, at: now)
        let next = SegmentID(logID: id, number: activeSegment.number + 1)
        record.segments.append(LogRecord.Segment(number: next.number, baseOffset: info.endOffset, state: .open, createdAtMilliseconds: now))
        version = try await save(record, expecting: version)
        try await startSegment(next, baseOffset: info.endOffset, epoch: epoch, record: record, version: version, now: now) { _ in }
        logger.debug("segment rolled", metadata: ["sealed": "\(activeSegment)", "endOffset": "\(info.endOffset)"])
    }

    /// Creates `segment` at the storage node (the metadata already lists it) and makes it
    /// the active segment, with the saved record.
    private func startSegment(
        _ segment: SegmentID, baseOffset: Int64, epoch: UInt64, record: LogRecord, version: UInt64, now: Int64,
        also update: (inout State) -> Void
    ) async throws(LogError) {
        let handle: any SegmentAppender
        do throws(StorageError) {
            try await storage.createSegment(segment, baseOffset: baseOffset, epoch: epoch)
            handle = try storage.appender(segment)
        } catch {
            throw .storage(error)
        }
        state.withLock { state in
            state.record = record
            state.version = version
            state.active = Active(handle: handle, baseOffset: baseOffset, createdAtMilliseconds: now, bytes: 0)
            update(&state)
        }
    }

    private func reload() async throws(LogError) -> (LogRecord, UInt64) {
        do {
            guard let stored = try await metadata.getJSON(LogRecord.self, LogRecord.key(id)) else { throw LogError.logNotFound(id) }
            return stored
        } catch let error as LogError {
            throw error
        } catch {
            throw .metadata("\(error)")
        }
    }

    private func save(_ record: LogRecord, expecting version: UInt64) async throws(LogError) -> UInt64 {
        do {
            let bytes = try EmbeddedMetadataStore.encodeJSON(record)
            return try await metadata.put(LogRecord.key(id), bytes, expect: .version(version))
        } catch {
            throw .metadata("\(error)")
        }
    }

    // MARK: - Reads

    /// Reads whole batches from `offset`, about `maxBytes` (at least one batch when any
    /// is there). At the end of the log, waits up to `maxWaitNanoseconds` for new
    /// entries. Offsets below the start or past the end are out of range.
    public func read(from offset: Int64, maxBytes: Int, maxWaitNanoseconds: UInt64 = 0) async throws(LogError) -> LogRead {
        let deadline = monotonicNanoseconds() + maxWaitNanoseconds
        while true {
            let snapshot = readSnapshot()
            let record = snapshot.record
            let active = snapshot.active
            if snapshot.deleted { throw .logNotFound(id) }
            let end = endOffset
            guard offset >= record.startOffset, offset <= end else {
                throw .offsetOutOfRange(offset: offset, startOffset: record.startOffset, endOffset: end)
            }
            if offset == end {
                let now = monotonicNanoseconds()
                guard now < deadline else {
                    return LogRead(batches: [], nextOffset: offset, startOffset: record.startOffset, endOffset: end)
                }
                let waitOn = active?.segment ?? record.segments.last.map { SegmentID(logID: id, number: $0.number) }
                guard let waitOn else {
                    return LogRead(batches: [], nextOffset: offset, startOffset: record.startOffset, endOffset: end)
                }
                let outcome = await storage.waitForEntries(waitOn, at: offset, timeoutNanoseconds: deadline - now)
                if outcome == .timedOut || Task.isCancelled {
                    return LogRead(batches: [], nextOffset: offset, startOffset: record.startOffset, endOffset: endOffset)
                }
                if outcome == .sealed || outcome == .deleted {
                    // A roll: wait until the new segment is in place rather than spin.
                    await control.acquire(1)
                    control.release(1)
                }
                continue
            }
            guard let segment = Self.segmentRecord(containing: offset, in: record.segments) else {
                throw .offsetOutOfRange(offset: offset, startOffset: record.startOffset, endOffset: end)
            }
            let segmentID = SegmentID(logID: id, number: segment.number)
            let read: SegmentRead
            switch await readSegment(segmentID, from: offset, maxBytes: maxBytes) {
            case .success(let segmentRead):
                read = segmentRead
            case .failure(.segmentNotFound):
                continue  // deleted by retention or truncation meanwhile: look again
            case .failure(let error):
                throw .storage(error)
            }
            if read.batches.isEmpty && (segment.state == .sealed || segmentID != active?.segment) {
                continue  // at the end of a sealed segment: the offset starts the next one
            }
            return LogRead(batches: read.batches, nextOffset: read.nextOffset, startOffset: record.startOffset, endOffset: endOffset)
        }
    }

    private struct ReadSnapshot {
        var record: LogRecord
        var active: Active?
        var deleted: Bool
    }

    private func readSnapshot() -> ReadSnapshot {
        state.withLock { ReadSnapshot(record: $0.record, active: $0.active, deleted: $0.deleted) }
    }

    /// The last segment starting at or before `offset`.
    static func segmentRecord(containing offset: Int64, in segments: [LogRecord.Segment]) -> LogRecord.Segment? {
        var found: LogRecord.Segment?
        for segment in segments where segment.baseOffset <= offset { found = segment }
        return found
    }

    private func readSegment(_ id: SegmentID, from offset: Int64, maxBytes: Int) async -> Result<SegmentRead, StorageError> {
        do throws(StorageError) {
            return .success(try await storage.read(id, from: offset, maxBytes: maxBytes))
        } catch {
            return .failure(error)
        }
    }

    /// Replaces the log's settings (its topic's configs were altered): appends are
    /// checked against them from now on, retention at its next pass.
    public func setConfiguration(_ configuration: LogConfiguration) async throws(LogError) {
        if let problem = configuration.problem() { throw .invalidConfiguration(problem) }
        await control.acquire(1)
        defer { control.release(1) }
        var (record, version) = state.withLock { ($0.record, $0.version) }
        record.configuration = configuration
        let newVersion = try await save(record, expecting: version)
        state.withLock { state in
            state.record.configuration = configuration
            state.version = newVersion
        }
    }

    // MARK: - Truncation, retention, deletion

    /// Makes `offset` the first readable offset: reads below it fail, and segments
    /// wholly below it are deleted. `offset` may not pass the end.
    public func truncate(before offset: Int64) async throws(LogError) {
        await control.acquire(1)
        defer { control.release(1) }
        let end = endOffset
        var (record, version) = state.withLock { ($0.record, $0.version) }
        guard offset <= end else { throw .offsetOutOfRange(offset: offset, startOffset: record.startOffset, endOffset: end) }
        guard offset > record.startOffset else { return }
        record.startOffset = offset
        let removed = record.segments.filter { $0.state == .sealed && ($0.endOffset ?? .max) <= offset }
        record.segments.removeAll { segment in removed.contains { $0.number == segment.number } }
        try await commitRemoval(record, version: version, removed: removed)
    }

    /// The segment appends go to now, when this process writes the log.
    public var activeSegmentID: SegmentID? { state.withLock { $0.writerEpoch == nil ? nil : $0.active?.segment } }

    /// Seals the active segment now and continues in a new one, when this process
    /// writes the log and the segment holds records (cluster mode: a segment whose
    /// replicas lost a node is sealed so it can be re-replicated, and the next one gets
    /// live nodes). Returns whether it rolled.
    @discardableResult
    public func rollActiveSegment() async throws(LogError) -> Bool {
        let due = state.withLock { state -> (SegmentID, UInt64)? in
            guard let epoch = state.writerEpoch, let active = state.active, active.bytes > 0, !state.rolling else { return nil }
            state.rolling = true
            return (active.segment, epoch)
        }
        guard let (segment, epoch) = due else { return false }
        try await roll(epoch: epoch)
        logger.info("segment rolled early", metadata: ["segment": "\(segment)"])
        return true
    }

    /// Deletes sealed segments past the retention limits: newest record older than
    /// `retentionMilliseconds`, and oldest first while the log exceeds `retentionBytes`.
    /// An active segment whose records have all expired is rolled first, so an idle
    /// log does not keep expired data forever. Returns the number of segments deleted.
    @discardableResult
    public func enforceRetention() async throws(LogError) -> Int {
        let now = clock.nowMilliseconds()
        let (configuration, activeSegment, writerEpoch) = state.withLock { ($0.record.configuration, $0.active, $0.writerEpoch) }
        if let retention = configuration.retentionMilliseconds, let activeSegment, let writerEpoch,
            let info = storage.segmentInfo(activeSegment.segment), info.endOffset > info.baseOffset,
            info.maxTimestamp >= 0, now - info.maxTimestamp > retention
        {
            let rollNow = state.withLock { state -> Bool in
                guard !state.rolling, state.active?.segment == activeSegment.segment else { return false }
                state.rolling = true
                return true
            }
            if rollNow { try await roll(epoch: writerEpoch) }
        }
        await control.acquire(1)
        defer { control.release(1) }
        var (record, version) = state.withLock { ($0.record, $0.version) }
        var removed: [LogRecord.Segment] = []
        var total = record.segments.reduce(Int64(0)) { $0 + ($1.sizeBytes ?? 0) }
        if let active = state.withLock({ $0.active }), let info = storage.segmentInfo(active.segment) {
            total += info.sizeBytes
        }
        for segment in record.segments where segment.state == .sealed {
            let expired = configuration.retentionMilliseconds.map { retention in
                (segment.maxTimestamp ?? -1) >= 0 && now - (segment.maxTimestamp ?? 0) > retention
            } ?? false
            let oversize = configuration.retentionBytes.map { total > $0 } ?? false
            // Empty sealed segments carry no timestamp; they go with what follows them.
            guard expired || oversize || (segment.endOffset == segment.baseOffset && !removed.isEmpty) else { break }
            removed.append(segment)
            total -= segment.sizeBytes ?? 0
        }
        guard !removed.isEmpty else { return 0 }
        record.segments.removeFirst(removed.count)
        record.startOffset = max(record.startOffset, removed.last!.endOffset ?? record.startOffset)
        try await commitRemoval(record, version: version, removed: removed)
        logger.info("retention deleted segments", metadata: [
            "segments": "\(removed.count)", "startOffset": "\(record.startOffset)",
        ])
        return removed.count
    }

    private func commitRemoval(_ record: LogRecord, version: UInt64, removed: [LogRecord.Segment]) async throws(LogError) {
        let newVersion = try await save(record, expecting: version)
        state.withLock { state in
            state.record = record
            state.version = newVersion
        }
        for segment in removed { try await deleteFromStorage(segment.number) }
    }

    /// Marks the log deleted and removes its segments (the caller removes its metadata).
    func deleteSegments() async throws(LogError) {
        await control.acquire(1)
        defer { control.release(1) }
        let record = state.withLock { state -> LogRecord in
            state.deleted = true
            state.writerEpoch = nil
            return state.record
        }
        for segment in record.segments { try await deleteFromStorage(segment.number) }
    }

    private func deleteFromStorage(_ number: UInt64) async throws(LogError) {
        do throws(StorageError) {
            try await storage.deleteSegment(SegmentID(logID: id, number: number))
        } catch {
            if case .segmentNotFound = error { return }
            throw .storage(error)
        }
    }

    public func info() -> LogInfo {
        let record = state.withLock { $0.record }
        var summaries: [SegmentSummary] = []
        for segment in record.segments {
            let live = storage.segmentInfo(SegmentID(logID: id, number: segment.number))
            summaries.append(SegmentSummary(
                number: segment.number, baseOffset: segment.baseOffset,
                endOffset: segment.endOffset ?? live?.endOffset ?? segment.baseOffset,
                sizeBytes: segment.sizeBytes ?? live?.sizeBytes ?? 0,
                sealed: segment.state == .sealed, createdAtMilliseconds: segment.createdAtMilliseconds,
                maxTimestamp: segment.maxTimestamp ?? live?.maxTimestamp ?? -1))
        }
        return LogInfo(
            id: id, name: record.name, startOffset: record.startOffset, endOffset: endOffset,
            sizeBytes: summaries.reduce(0) { $0 + $1.sizeBytes }, writerEpoch: record.writerEpoch,
            segments: summaries, configuration: record.configuration)
    }
}

/// The right to append to a log, valid until a writer with a higher epoch opens.
public struct LogWriter: Sendable {
    public let log: Log
    public let epoch: UInt64

    /// Appends one record batch; returns its offsets once it is durable.
    public func append(_ batch: ByteBuffer) async throws(LogError) -> AppendResult {
        try await log.append(batch, epoch: epoch)
    }

    /// Queues a batch (offsets assigned) without waiting for it to be durable.
    public func submit(_ batch: ByteBuffer) async throws(LogError) -> PendingAppend {
        try await log.submit(batch, epoch: epoch)
    }

    /// Queues a batch if `admit`, called under the log's lock with the offset the batch
    /// would get, says so; nil when it did not.
    public func submit(_ batch: ByteBuffer, admit: (_ baseOffset: Int64) -> Bool) async throws(LogError) -> PendingAppend? {
        try await log.submit(batch, epoch: epoch, admit: admit)
    }
}

/// An append queued on the journal: its offsets are assigned; `durable()` waits until
/// the journal has made it durable (or failed).
public final class PendingAppend: Sendable {
    public let result: AppendResult

    private enum Outcome {
        case waiting(UnsafeContinuation<Result<AppendResult, LogError>, Never>?)
        case done(Result<AppendResult, LogError>)
    }
    private let outcome = Mutex(Outcome.waiting(nil))

    init(_ result: AppendResult) {
        self.result = result
    }

    /// Called once, by the storage node's completion.
    func complete(_ storageOutcome: Result<Void, StorageError>) {
        let finished: Result<AppendResult, LogError>
        switch storageOutcome {
        case .success: finished = .success(result)
        case .failure(let error): finished = .failure(.storage(error))
        }
        let waiter = outcome.withLock { outcome -> UnsafeContinuation<Result<AppendResult, LogError>, Never>? in
            guard case .waiting(let continuation) = outcome else { return nil }
            outcome = .done(finished)
            return continuation
        }
        waiter?.resume(returning: finished)
    }

    /// Waits until the batch is durable; returns its offsets. May be called once.
    public func durable() async throws(LogError) -> AppendResult {
        let finished: Result<AppendResult, LogError> = await withUnsafeContinuation { continuation in
            let ready = outcome.withLock { outcome -> Result<AppendResult, LogError>? in
                switch outcome {
                case .done(let result): return result
                case .waiting:
                    outcome = .waiting(continuation)
                    return nil
                }
            }
            if let ready { continuation.resume(returning: ready) }
        }
        return try finished.get()
    }
}
