import AqueductCommon
import AqueductRecords
import CAqueduct
import DequeModule
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// A storage node (BookKeeper's bookie) on one machine.
///
/// Write path: `submitAppend` puts the entry in the segment's memory and queues it on
/// the journal; the journal thread writes a group-commit block, fdatasyncs it, marks
/// the entries acknowledged (readers see them from then on) and completes the appends.
/// Entry storage is written behind, by the flusher thread: acknowledged entries go to
/// per-log segment files and their sparse indexes, which are synced before a
/// checkpoint lets the journal be trimmed.
///
/// Read path: tailing readers are served from memory; catch-up readers read segment
/// files on a small pool of I/O threads with a bounded number of reads in flight, so
/// neither can stall the journal.
public final class StorageNode: Sendable {
    public let configuration: StorageConfiguration
    let logger: Logger
    let journal: JournalWriter
    let segments: Mutex<[SegmentID: SegmentState]>
    /// Bytes accepted but not yet flushed to segment files.
    let writeBudget: WeightedSemaphore
    let readSlots: WeightedSemaphore
    let readPool: NIOThreadPool
    let readAhead: ReadAhead
    let flusher: Flusher
    let failure = Mutex<StorageError?>(nil)
    /// Set together with `failure`, read on every append without a lock.
    let failed = Atomic<Bool>(false)
    let closed = Atomic<Bool>(false)
    /// Set when the server begins shutting down: tailing readers stop waiting.
    let waitsInterrupted = Atomic<Bool>(false)
    /// What recovery found, for operators and tests.
    public let recoveryReport: RecoveryReport

    let checksumFailures = Counter(label: "aqueduct_storage_checksum_failures_total")
    let readBytesFromCache = Counter(label: "aqueduct_storage_read_bytes_total", dimensions: [("source", "cache")])
    let readBytesFromDisk = Counter(label: "aqueduct_storage_read_bytes_total", dimensions: [("source", "disk")])

    /// Opens the node in `configuration.directory`: loads the checkpoint, repairs
    /// segment files and indexes, replays the journal, then starts the journal and
    /// flusher threads.
    public init(configuration: StorageConfiguration, logger: Logger = Logger(label: "aqueduct.storage")) throws {
        precondition(
            configuration.journalFileBytesMax >= 2 * Int64(configuration.journalBatchBytesMax) + (64 << 10),
            "journalFileBytesMax must hold at least two full journal blocks")
        precondition(configuration.writeCacheBytesMax >= 2 * configuration.entryBytesMax, "writeCacheBytesMax must hold two largest entries")
        self.configuration = configuration
        self.logger = logger
        try FileSystem.createDirectory(configuration.directory + "/segments")
        try FileSystem.createDirectory(configuration.journalPath)
        let journalFiles = JournalFiles(directory: configuration.journalPath, fileBytes: configuration.journalFileBytesMax, logger: logger)
        let recovered = try Recovery.run(configuration: configuration, journalFiles: journalFiles, logger: logger)
        self.recoveryReport = recovered.report
        self.segments = Mutex(recovered.segments)
        self.journal = try JournalWriter(
            configuration: configuration, files: journalFiles, fileNumber: recovered.journalStart.file,
            nextSequence: recovered.nextSequence, logger: logger)
        self.writeBudget = WeightedSemaphore(capacity: configuration.writeCacheBytesMax)
        self.readSlots = WeightedSemaphore(capacity: configuration.readsInFlightMax)
        self.readPool = NIOThreadPool(numberOfThreads: configuration.readThreads)
        self.readAhead = ReadAhead(entriesMax: configuration.readAheadChunksMax, chunkBytesMax: configuration.readAheadChunkBytesMax)
        self.flusher = Flusher(intervalMilliseconds: configuration.flushIntervalMilliseconds)
        readPool.start()
        journal.start()
        flusher.start(node: self)
    }

    // MARK: - Segments

    /// Creates an empty segment whose first entry will have `baseOffset`, owned by the
    /// writer with `epoch`. Durable when it returns.
    public func createSegment(_ id: SegmentID, baseOffset: Int64, epoch: UInt64) async throws(StorageError) {
        try checkWritable()
        let file: SegmentFile
        do {
            file = try SegmentFile.create(
                directory: configuration.directory, id: id, baseOffset: baseOffset, indexIntervalBytes: configuration.indexIntervalBytes)
        } catch { throw .ioFailure("\(error)") }
        let state = SegmentState(id: id, file: file, endOffset: baseOffset, sizeBytes: 0, fencedEpoch: epoch, sealed: false, maxTimestamp: -1)
        let inserted = segments.withLock { segments -> Bool in
            if segments[id] != nil { return false }
            segments[id] = state
            return true
        }
        guard inserted else { throw .segmentExists(id) }
        try await journalControl(.create, segment: id, epoch: epoch, value: baseOffset)
    }

    /// Fences a segment: appends by writers with an epoch below `epoch` fail from now
    /// on. Returns the segment as it is once every earlier append is acknowledged, so
    /// its end offset is final for the fenced writers.
    @discardableResult
    public func fence(_ id: SegmentID, epoch: UInt64) async throws(StorageError) -> SegmentInfo {
        let state = try segment(id)
        state.guarded.withLock { $0.fencedEpoch = max($0.fencedEpoch, epoch) }
        try await journalControl(.fence, segment: id, epoch: epoch, value: 0)
        return state.info()
    }

    /// Seals a segment: it takes no more entries; readers waiting at its end move on.
    @discardableResult
    public func seal(_ id: SegmentID) async throws(StorageError) -> SegmentInfo {
        let state = try segment(id)
        state.guarded.withLock { $0.sealed = true }
        try await journalControl(.seal, segment: id, epoch: 0, value: 0)
        state.wakeAll(.sealed)
        return state.info()
    }

    /// Deletes a segment and its files.
    public func deleteSegment(_ id: SegmentID) async throws(StorageError) {
        guard let state = segments.withLock({ $0.removeValue(forKey: id) }) else { throw .segmentNotFound(id) }
        let unflushed = state.guarded.withLock { state -> Int in
            state.deleted = true
            let bytes = state.unflushedBytes
            state.unflushedBytes = 0
            state.cache.removeAll()
            return bytes
        }
        writeBudget.release(unflushed)
        readAhead.forget(id)
        state.wakeAll(.deleted)
        try await journalControl(.delete, segment: id, epoch: 0, value: 0)
        state.file.removeFiles()
    }

    public func segmentInfo(_ id: SegmentID) -> SegmentInfo? {
        segments.withLock { $0[id] }?.info()
    }

    /// Every segment of `logID`, by number.
    public func segments(ofLog logID: UInt64) -> [SegmentInfo] {
        segments.withLock { segments in segments.values.filter { $0.id.logID == logID } }
            .map { $0.info() }.sorted { $0.id.number < $1.id.number }
    }

    public func allSegments() -> [SegmentInfo] {
        segments.withLock { Array($0.values) }.map { $0.info() }.sorted { $0.id < $1.id }
    }

    func segment(_ id: SegmentID) throws(StorageError) -> SegmentState {
        guard let state = segments.withLock({ $0[id] }) else { throw .segmentNotFound(id) }
        return state
    }

    // MARK: - Appends

    /// Waits until `bytes` more can be held in memory before they reach entry storage.
    /// Callers that sequence appends themselves take budget first, then submit.
    public func reserveWriteBudget(_ bytes: Int) async -> Int {
        await writeBudget.acquire(bytes)
    }

    public func releaseWriteBudget(_ bytes: Int) {
        writeBudget.release(bytes)
    }

    /// A reference to a segment that skips the lookup on every append (the log keeps
    /// one for its active segment).
    public struct SegmentHandle: Sendable {
        let state: SegmentState
        let node: StorageNode
        public var id: SegmentID { state.id }
    }

    public func handle(_ id: SegmentID) throws(StorageError) -> SegmentHandle {
        SegmentHandle(state: try segment(id), node: self)
    }

    /// Queues `batch` (one record batch whose base offset is the segment's next offset)
    /// for the journal. Ordered: entries are journaled in the order of these calls.
    /// `completion` runs once the entry is acknowledged (on the journal thread: keep it
    /// short). The caller must hold `reservedBytes` of write budget from
    /// `reserveWriteBudget`; it passes to the node, which frees it once flushed.
    public func submitAppend(
        _ id: SegmentID, epoch: UInt64, batch: ByteBuffer, reservedBytes: Int,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError) {
        let header: RecordBatchHeader
        do { header = try RecordBatch.validate(batch, maxBytes: .max) } catch { throw .invalidEntry("not a valid record batch: \(error)") }
        try submitAppend(
            try handle(id), epoch: epoch, batch: batch, header: header, reservedBytes: reservedBytes, checksumVerified: true,
            completion: completion)
        settleBudget(reservedBytes: reservedBytes, batchBytes: batch.readableBytes)
    }

    /// The hot path: `header` is the batch's parsed header. The caller settles the
    /// budget with `settleBudget` after it (outside any lock of its own).
    /// `checksumVerified`: the caller checked the batch's CRC-32C against its contents
    /// (the log does, for every batch), so the journal can reuse it.
    /// `baseOffsetWritten`: whether `batch` already holds `header.baseOffset`; when
    /// not, the storage node writes it everywhere the batch goes (journal, segment file,
    /// readers) without writing into the caller's buffer now.
    public func submitAppend(
        _ handle: SegmentHandle, epoch: UInt64, batch: ByteBuffer, header: RecordBatchHeader, reservedBytes: Int,
        checksumVerified: Bool = false, baseOffsetWritten: Bool = true,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError) {
        try checkWritable()
        guard batch.readableBytes <= configuration.entryBytesMax else {
            throw .entryTooLarge(bytes: batch.readableBytes, limitBytes: configuration.entryBytesMax)
        }
        guard header.totalSize == batch.readableBytes, header.magic == 2 else {
            throw .invalidEntry("not exactly one record batch")
        }
        // The flusher frees the entry's bytes once they are in the segment file.
        precondition(reservedBytes >= batch.readableBytes, "append of \(batch.readableBytes) bytes reserved only \(reservedBytes)")
        let state = handle.state
        let id = state.id
        try state.guarded.withLock { (guarded: inout SegmentState.Guarded) throws(StorageError) in
            if guarded.deleted { throw .segmentNotFound(id) }
            if guarded.sealed { throw .sealed(id) }
            if epoch < guarded.fencedEpoch { throw .fenced(id, writerEpoch: epoch, fencedEpoch: guarded.fencedEpoch) }
            if header.baseOffset != guarded.nextOffset {
                throw .offsetMismatch(id, expected: guarded.nextOffset, got: header.baseOffset)
            }
            if guarded.acceptedBytes + Int64(batch.readableBytes) > StorageConfiguration.segmentBytesLimit {
                throw .segmentFull(id, bytes: guarded.acceptedBytes)
            }
            try journal.submit(JournalWriter.Item(
                kind: .add, segment: id, epoch: epoch, value: header.baseOffset, payload: batch,
                acknowledges: JournalWriter.Acknowledgement(state: state, end: header.lastOffset + 1, maxTimestamp: header.maxTimestamp),
                verifiedBatchCRC: checksumVerified ? header.crc : nil, baseOffsetOverride: baseOffsetWritten ? nil : header.baseOffset,
                completion: completion))
            guarded.cache.append(SegmentState.CachedEntry(header: header, bytes: batch, baseOffsetWritten: baseOffsetWritten))
            guarded.nextOffset = header.lastOffset + 1
            guarded.acceptedBytes += Int64(batch.readableBytes)
            guarded.unflushedBytes += batch.readableBytes
        }
    }

    /// Returns any reservation beyond the entry's bytes and wakes the flusher when
    /// enough bytes wait. Call after a successful `submitAppend(_:epoch:batch:header:...)`.
    public func settleBudget(reservedBytes: Int, batchBytes: Int) {
        if reservedBytes > batchBytes { writeBudget.release(reservedBytes - batchBytes) }
        if writeBudget.capacity - writeBudget.available >= configuration.flushTriggerBytes {
            flusher.wake()
        }
    }

    /// Appends one batch and waits until it is acknowledged. For callers that do not
    /// sequence appends themselves (tests, benchmarks of the node alone).
    public func append(_ id: SegmentID, epoch: UInt64, batch: ByteBuffer) async throws(StorageError) {
        let reserved = await reserveWriteBudget(batch.readableBytes)
        let result: Result<Void, StorageError> = await withCheckedContinuation { continuation in
            do throws(StorageError) {
                try submitAppend(id, epoch: epoch, batch: batch, reservedBytes: reserved) { continuation.resume(returning: $0) }
            } catch {
                releaseWriteBudget(reserved)
                continuation.resume(returning: .failure(error))
            }
        }
        try result.get()
    }

    private func journalControl(_ kind: JournalFormat.Kind, segment: SegmentID, epoch: UInt64, value: Int64) async throws(StorageError) {
        try checkWritable()
        let result: Result<Void, StorageError> = await withCheckedContinuation { continuation in
            do throws(StorageError) {
                try journal.submit(JournalWriter.Item(
                    kind: kind, segment: segment, epoch: epoch, value: value, payload: ByteBuffer(), acknowledges: nil,
                    completion: { continuation.resume(returning: $0) }))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
        try result.get()
    }

    private func checkWritable() throws(StorageError) {
        if closed.load(ordering: .relaxed) { throw .closed }
        if failed.load(ordering: .acquiring), let failure = failure.withLock({ $0 }) { throw failure }
    }

    // MARK: - Reads

    /// Reads whole batches from `offset` on, about `maxBytes` of them (at least one),
    /// from memory when the segment's recent entries hold `offset`, else from the
    /// segment file on the read pool. Empty when `offset` is the acknowledged end.
    public func read(_ id: SegmentID, from offset: Int64, maxBytes: Int) async throws(StorageError) -> SegmentRead {
        let state = try segment(id)
        enum Plan {
            case done(SegmentRead)
            case disk(limitBytes: Int64, flushedEnd: Int64)
        }
        let plan = try state.guarded.withLock { (guarded: inout SegmentState.Guarded) throws(StorageError) -> Plan in
            if guarded.deleted { throw .segmentNotFound(id) }
            guard offset >= state.baseOffset, offset <= guarded.acknowledgedEnd else {
                throw .offsetOutOfRange(id, offset: offset, start: state.baseOffset, end: guarded.acknowledgedEnd)
            }
            if offset == guarded.acknowledgedEnd {
                return .done(SegmentRead(batches: [], nextOffset: offset, fromCache: true))
            }
            for range in guarded.damaged where range.contains(offset) {
                throw .dataLoss(id, offsets: range)
            }
            if let first = guarded.cache.first, first.baseOffset <= offset {
                var batches: [ByteBuffer] = []
                var bytes = 0
                var next = offset
                // Entries are contiguous and sorted: find the one holding `offset`.
                var low = 0
                var high = guarded.cache.count
                while low < high {
                    let middle = (low + high) / 2
                    if guarded.cache[middle].lastOffset < offset { low = middle + 1 } else { high = middle }
                }
                var index = low
                while index < guarded.cache.count {
                    let entry = guarded.cache[index]
                    if entry.baseOffset >= guarded.acknowledgedEnd { break }
                    if !batches.isEmpty && bytes + entry.bytes.readableBytes > maxBytes { break }
                    batches.append(guarded.cache[index].withBaseOffset())
                    bytes += entry.bytes.readableBytes
                    next = entry.lastOffset + 1
                    index += 1
                    if bytes >= maxBytes { break }
                }
                return .done(SegmentRead(batches: batches, nextOffset: next, fromCache: true))
            }
            return .disk(limitBytes: state.file.sizeBytes, flushedEnd: guarded.flushedEnd)
        }
        switch plan {
        case .done(let read):
            readBytesFromCache.increment(by: read.bytes)
            return read
        case .disk(let limitBytes, let flushedEnd):
            guard offset < flushedEnd else {
                // Unreachable while entries are evicted only after they are flushed.
                throw .ioFailure("offset \(offset) of segment \(id) is neither in memory nor flushed (flushed end \(flushedEnd))")
            }
            let key = ReadAhead.Key(segment: id, offset: offset, maxBytes: maxBytes)
            let result: ReadAhead.Chunk
            if let ahead = readAhead.claim(key) {
                result = await ahead.value
            } else {
                result = await readFromFile(state, from: offset, maxBytes: maxBytes, limitBytes: limitBytes)
            }
            switch result {
            case .success(let read):
                let segmentRead = SegmentRead(batches: read.batches, nextOffset: read.nextOffset, fromCache: false)
                readBytesFromDisk.increment(by: segmentRead.bytes)
                // A reader that got a full chunk will most likely ask for the next one.
                let next = read.nextOffset
                if readAhead.entriesMax > 0 && segmentRead.bytes >= maxBytes / 2 && next < state.guarded.withLock({ $0.flushedEnd }) {
                    let currentLimit = state.file.sizeBytes
                    readAhead.start(ReadAhead.Key(segment: id, offset: next, maxBytes: maxBytes)) { [self] in
                        await readFromFile(state, from: next, maxBytes: maxBytes, limitBytes: currentLimit)
                    }
                }
                return segmentRead
            case .failure(let error):
                if case .corruptEntry = error {
                    checksumFailures.increment()
                    logger.error("refusing to serve corrupt data", metadata: ["segment": "\(id)", "error": "\(error)"])
                }
                throw error
            }
        }
    }

    /// One bounded read of a segment file on the read pool: pread, then every batch's
    /// CRC-32C checked.
    private func readFromFile(_ state: SegmentState, from offset: Int64, maxBytes: Int, limitBytes: Int64) async -> ReadAhead.Chunk {
        let slot = await readSlots.acquire(1)
        defer { readSlots.release(slot) }
        let verify = configuration.verifyChecksumsOnRead
        let file = state.file
        do {
            return try await readPool.runIfActive {
                // Catch-up reads yield the disk to the journal: lowest best-effort I/O
                // priority (takes effect under mq-deadline, bfq; once per thread).
                _ = aq_set_thread_io_priority(2, 7)
                return Result { () throws(StorageError) in
                    try file.read(from: offset, maxBytes: maxBytes, limitBytes: limitBytes, verify: verify)
                }
            }
        } catch {
            return .failure(.closed)
        }
    }

    /// Waits until `offset` can be read from segment `id`, the segment is sealed or
    /// deleted, or the timeout passes.
    public func waitForEntries(_ id: SegmentID, at offset: Int64, timeoutNanoseconds: UInt64) async -> WaitOutcome {
        guard let state = segments.withLock({ $0[id] }) else { return .deleted }
        if waitsInterrupted.load(ordering: .relaxed) { return .timedOut }
        return await state.waitForEntries(at: offset, timeoutNanoseconds: timeoutNanoseconds)
    }

    /// Tailing readers waiting for new entries now, over every segment.
    public var waitingReaders: Int { segments.withLock { Array($0.values) }.reduce(0) { $0 + $1.waitingReaders } }

    /// Appends waiting for write budget (unflushed bytes at their bound) now.
    public var appendsWaitingForBudget: Int { writeBudget.waiting }

    /// Ends every wait for new entries now, and makes later waits return at once, so
    /// that long-polling readers do not hold up a shutdown.
    public func interruptWaits() {
        waitsInterrupted.store(true, ordering: .relaxed)
        for state in segments.withLock({ Array($0.values) }) { state.wakeAll(.timedOut) }
    }

    /// Journal totals since the node started: group-commit blocks, bytes, and time in fdatasync.
    public struct JournalStatistics: Sendable {
        public var blocks: Int
        public var bytes: Int
        public var syncNanoseconds: Int
    }

    public var journalStatistics: JournalStatistics {
        JournalStatistics(
            blocks: journal.blocksWritten.load(ordering: .relaxed), bytes: journal.bytesWritten.load(ordering: .relaxed),
            syncNanoseconds: journal.syncNanoseconds.load(ordering: .relaxed))
    }

    // MARK: - Lifecycle

    /// Writes every acknowledged entry to segment files, syncs them and checkpoints.
    public func flush() async {
        await flusher.flushNow()
    }

    /// Stops taking writes, acknowledges what is queued, flushes entry storage,
    /// writes a final checkpoint and stops the threads.
    public func close() async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { [journal] in
                journal.stop()
                continuation.resume()
            }
        }
        await flusher.stop()
        try? await readPool.shutdownGracefully()
    }
}
