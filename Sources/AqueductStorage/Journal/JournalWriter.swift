import AqueductCommon
import CAqueduct
import DequeModule
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// The durability path: one thread appends group-commit blocks to journal files and
/// acknowledges each entry only after an fdatasync covers it (or after the write in
/// `interval` mode). Entries that arrive while a sync is in flight form the next
/// block, so the number of syncs per second, not per entry, bounds throughput.
///
/// The journal never waits for readers or for entry storage: its only inputs are the
/// pending queue and its own file.
final class JournalWriter: @unchecked Sendable {
    /// Offsets an item makes readable once it is durable. The journal applies these
    /// once per segment per block (one lock per segment, not per entry).
    struct Acknowledgement {
        var state: SegmentState
        var end: Int64
        var maxTimestamp: Int64
    }

    struct Item {
        var kind: JournalFormat.Kind
        var segment: SegmentID
        var epoch: UInt64
        var value: Int64
        var payload: ByteBuffer
        var acknowledges: Acknowledgement?
        /// For an `add` whose record batch CRC-32C was verified by the caller: that CRC
        /// (of the batch from its attributes on). The block checksum then combines it
        /// instead of reading the batch a second time.
        var verifiedBatchCRC: UInt32? = nil
        /// For an `add` whose batch does not hold its assigned base offset yet: the
        /// offset, written into the block in place of the batch's first 8 bytes.
        var baseOffsetOverride: Int64? = nil
        /// Called on the journal thread, in submission order, once the item is
        /// acknowledged (or failed).
        var completion: (Result<Void, StorageError>) -> Void
    }

    private let configuration: StorageConfiguration
    private let logger: Logger
    /// Blocks being written at once (each write carries its own sync). With one, a
    /// block waits for the previous block's sync; with two, the entries that arrive
    /// during a sync start theirs at once. Acknowledgements stay in journal order.
    private let writesInFlightMax: Int

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var pending = Deque<Item>()
    private var pendingBytes = 0
    private var stopping = false
    private var failure: StorageError?
    /// Where the next claimed block goes, and its sequence.
    private var file: DataFile
    private var fileNumber: UInt64
    private var fileOffset: Int64
    private var nextSequence: UInt64
    private var writesInFlight = 0
    /// Set while a thread ends the current file and opens the next; nobody claims then.
    private var rolling = false
    /// Blocks written (or failed), waiting for the blocks before them, by sequence.
    private var written: [UInt64: WrittenBlock] = [:]
    /// The next block to complete, and whether a thread is completing blocks now.
    private var nextToComplete: UInt64
    private var completing = false
    /// Interval mode: bytes written since the last sync, and when that was.
    private var unsyncedBytes = 0
    private var lastSyncNanoseconds: UInt64 = monotonicNanoseconds()
    private var threadsRunning = 0

    private struct WrittenBlock {
        var items: [Item]
        var result: Result<Void, StorageError>
        /// Where the journal ends after this block.
        var end: JournalPosition
    }

    /// Where the acknowledged part of the journal ends, and the next block's sequence.
    private let acknowledged: Mutex<(position: JournalPosition, nextSequence: UInt64)>
    private let finished = DispatchSemaphore(value: 0)
    /// Totals since start, for benchmarks and diagnostics.
    let blocksWritten = Atomic<Int>(0)
    let bytesWritten = Atomic<Int>(0)
    let syncNanoseconds = Atomic<Int>(0)

    private let syncTimer = Metrics.Timer(label: "aqueduct_journal_fsync_seconds")
    private let blockBytes = Recorder(label: "aqueduct_journal_block_bytes")
    private let blockEntries = Recorder(label: "aqueduct_journal_block_entries")
    private let appendedBytes = Counter(label: "aqueduct_journal_bytes_total")
    private let appendedEntries = Counter(label: "aqueduct_journal_entries_total")

    let files: JournalFiles

    /// Starts a new journal file numbered `fileNumber`; its first block gets `nextSequence`.
    init(configuration: StorageConfiguration, files: JournalFiles, fileNumber: UInt64, nextSequence: UInt64, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.files = files
        // Interval mode writes without syncing: one thread keeps its timer simple.
        self.writesInFlightMax = configuration.durability == .fsync
            ? min(max(1, configuration.journalWritesInFlightMax), JournalFormat.writesInFlightLimit) : 1
        self.fileNumber = fileNumber
        self.fileOffset = 0
        self.nextSequence = nextSequence
        self.nextToComplete = nextSequence
        self.file = try files.open(fileNumber)
        let position = JournalPosition(file: fileNumber, offset: 0)
        self.acknowledged = Mutex((position, nextSequence))
    }

    func start() {
        threadsRunning = writesInFlightMax
        for index in 0..<writesInFlightMax {
            let thread = Thread { [self] in run() }
            thread.name = "aqueduct-journal-\(index)"
            thread.qualityOfService = .userInitiated
            thread.start()
        }
    }

    /// The position up to which every submitted item has been acknowledged.
    var acknowledgedPositionAndSequence: (position: JournalPosition, nextSequence: UInt64) {
        acknowledged.withLock { $0 }
    }

    /// Queues an item. Its completion runs on a journal thread, in submission order.
    /// Fails at once when the journal has failed or is stopping.
    func submit(_ item: Item) throws(StorageError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        if stopping { throw .closed }
        pendingBytes += item.payload.readableBytes + JournalFormat.recordHeaderBytes
        pending.append(item)
        if pending.count == 1 { condition.signal() }
    }

    /// Acknowledges everything queued, syncs, and stops the threads.
    func stop() {
        condition.lock()
        let alreadyStopped = stopping
        stopping = true
        condition.broadcast()
        condition.unlock()
        if !alreadyStopped { finished.wait() }
    }

    /// Recycles journal files wholly before `position`'s file (a checkpoint covers them).
    func releaseFiles(before position: JournalPosition) {
        files.recycle(before: position.file)
    }

    /// One journal thread: claims the pending entries as the next block (its place in
    /// the file and its sequence), writes it outside the lock, then completes every
    /// block whose predecessors are complete.
    private func run() {
        // The journal threads are on every acknowledgement's path: let them preempt the
        // threads doing request work when a write returns (no effect without permission).
        _ = aq_raise_thread_priority(5)
        // Real-time I/O class where permitted (mq-deadline serves it before best effort),
        // else the highest best-effort level.
        if aq_set_thread_io_priority(1, 4) != 0 { _ = aq_set_thread_io_priority(2, 0) }
        var buffer = ByteBufferAllocator().buffer(capacity: configuration.journalBatchBytesMax + (64 << 10))
        var batch: [Item] = []
        batch.reserveCapacity(1_024)
        condition.lock()
        while true {
            while !stopping && (pending.isEmpty || writesInFlight >= writesInFlightMax || rolling) {
                if case .interval(let ms) = configuration.durability, unsyncedBytes > 0, pending.isEmpty {
                    let deadline = Date(timeIntervalSinceNow: Double(ms) / 1_000)
                    if !condition.wait(until: deadline) { syncForInterval() }
                } else {
                    condition.wait()
                }
            }
            if stopping && (pending.isEmpty || failure != nil) { break }
            if stopping && (writesInFlight >= writesInFlightMax || rolling) {
                condition.wait()
                continue
            }
            if configuration.journalBatchWaitMicroseconds > 0 && !stopping
                && pendingBytes < configuration.journalBatchBytesMax
            {
                // Bounded wait for a fuller block.
                let deadline = Date(timeIntervalSinceNow: Double(configuration.journalBatchWaitMicroseconds) / 1_000_000)
                while pendingBytes < configuration.journalBatchBytesMax && !stopping {
                    if !condition.wait(until: deadline) { break }
                }
                if pending.isEmpty || rolling || writesInFlight >= writesInFlightMax { continue }
            }
            var bytes = 0
            while let first = pending.first {
                let size = first.payload.readableBytes + JournalFormat.recordHeaderBytes
                if !batch.isEmpty && bytes + size > configuration.journalBatchBytesMax { break }
                bytes += size
                batch.append(pending.removeFirst())
            }
            pendingBytes -= bytes
            let blockBytes = Int64(JournalFormat.blockHeaderBytes + bytes)
            if fileOffset + blockBytes + Int64(Self.fileEndBlockBytes) > files.fileBytes {
                if case .failure(let error) = rollFileLocked() {
                    failure = failure ?? error
                    let failed = batch
                    batch.removeAll(keepingCapacity: true)
                    condition.unlock()
                    for item in failed { item.completion(.failure(error)) }
                    failEverything(error)
                    condition.lock()
                    continue
                }
            }
            let sequence = nextSequence
            let target = file
            let offset = fileOffset
            nextSequence += 1
            fileOffset += blockBytes
            writesInFlight += 1
            let end = JournalPosition(file: fileNumber, offset: fileOffset)
            condition.unlock()

            let result = writeBlock(batch, sequence: sequence, to: target, at: offset, buffer: &buffer)

            condition.lock()
            writesInFlight -= 1
            if case .success = result, configuration.durability != .fsync {
                unsyncedBytes += Int(blockBytes)
                syncForInterval()
            }
            written[sequence] = WrittenBlock(items: batch, result: result, end: end)
            batch.removeAll(keepingCapacity: true)
            completeInOrderLocked()
            condition.broadcast()
        }
        threadsRunning -= 1
        let last = threadsRunning == 0
        if last && unsyncedBytes > 0 {
            do { try file.syncData() } catch {
                logger.error("final journal sync failed", metadata: ["error": "\(error)"])
            }
            unsyncedBytes = 0
        }
        if last { file.close() }
        condition.unlock()
        if last {
            // Whatever was still queued (only after a failure) fails now.
            failEverything(failure ?? .closed)
            finished.signal()
        }
    }

    /// Completes written blocks in sequence order, one thread at a time; called and
    /// returns with the lock held, but runs the completions outside it.
    private func completeInOrderLocked() {
        guard !completing else { return }
        completing = true
        while let block = written.removeValue(forKey: nextToComplete) {
            nextToComplete += 1
            var result = block.result
            // A block after a failed one has a hole before it: it fails too.
            if let failure { result = .failure(failure) }
            if case .failure(let error) = result, failure == nil { failure = error }
            condition.unlock()
            if case .success = result { acknowledge(block.items) }
            for item in block.items { item.completion(result) }
            if case .success = result {
                // Published only after the completions ran, so that the flusher, seeing
                // this position, also sees every entry before it acknowledged in memory.
                let next = nextToComplete
                acknowledged.withLock { $0 = (block.end, next) }
            } else {
                failEverything(failure ?? .closed)
            }
            condition.lock()
        }
        completing = false
    }

    /// Builds block `sequence` from `items` in `buffer` and writes it at `offset`; in
    /// `fsync` mode the write returns once the block is durable.
    /// Payloads at least this large are written from their own buffers (pwritev)
    /// instead of being copied into the block; smaller ones are copied, which costs less
    /// than a vector each.
    static let gatherPayloadBytesMin = 4_096
    /// Bytes of a record batch before the part its CRC-32C covers (RecordBatch v2:
    /// base offset, batch length, partition leader epoch, magic, CRC).
    static let batchUncoveredBytes = 21

    private enum Piece {
        /// Bytes of the block buffer (headers and small payloads).
        case own(Range<Int>)
        /// A batch (or its tail after the base offset) written from its own buffer;
        /// `uncoveredBytes` of it come before the part its verified CRC covers.
        case payload(ByteBuffer, verifiedBatchCRC: UInt32?, uncoveredBytes: Int)
    }

    private func writeBlock(
        _ items: [Item], sequence: UInt64, to target: DataFile, at offset: Int64, buffer: inout ByteBuffer
    ) -> Result<Void, StorageError> {
        buffer.clear()
        var recordsBytes = 0
        for item in items { recordsBytes += JournalFormat.recordHeaderBytes + item.payload.readableBytes }
        let start = JournalFormat.beginBlock(&buffer)
        JournalFormat.setBlockHeader(&buffer, start: start, recordsBytes: recordsBytes, sequence: sequence)
        // Headers and small payloads go into the buffer; large payloads are written from
        // where they are. The CRC runs over the pieces in order.
        var pieces: [Piece] = []
        var ownFrom = start
        for item in items {
            JournalFormat.writeRecordHeader(
                item.kind, segment: item.segment, epoch: item.epoch, value: item.value,
                payloadBytes: item.payload.readableBytes, to: &buffer)
            if item.payload.readableBytes >= Self.gatherPayloadBytesMin {
                var payload = item.payload
                var uncovered = Self.batchUncoveredBytes
                if let override = item.baseOffsetOverride {
                    // The assigned base offset, then the batch from its 9th byte.
                    buffer.writeInteger(override)
                    payload = payload.getSlice(at: payload.readerIndex + 8, length: payload.readableBytes - 8)!
                    uncovered -= 8
                }
                pieces.append(.own(ownFrom..<buffer.writerIndex))
                pieces.append(.payload(payload, verifiedBatchCRC: item.verifiedBatchCRC, uncoveredBytes: uncovered))
                ownFrom = buffer.writerIndex
            } else {
                let at = buffer.writerIndex
                var payload = item.payload
                buffer.writeBuffer(&payload)
                if let override = item.baseOffsetOverride { buffer.setInteger(override, at: at) }
            }
        }
        if buffer.writerIndex > ownFrom { pieces.append(.own(ownFrom..<buffer.writerIndex)) }
        var crc = CRC32C.checksum(buffer, readableRange: (start + 4 - buffer.readerIndex)..<(start + 16 - buffer.readerIndex))
        for piece in pieces {
            switch piece {
            case .own(let range):
                // The first piece starts with the block header: the CRC covers what follows it.
                let from = range.lowerBound == start ? start + JournalFormat.blockHeaderBytes : range.lowerBound
                if from < range.upperBound {
                    buffer.withUnsafeReadableBytes { raw in
                        crc = CRC32C.extend(crc, UnsafeRawBufferPointer(rebasing: raw[(from - buffer.readerIndex)..<(range.upperBound - buffer.readerIndex)]))
                    }
                }
            case .payload(let payload, let verified, let uncovered):
                payload.withUnsafeReadableBytes { raw in
                    // A verified batch: its checksum covers everything from the attributes
                    // on; only the fields before them (base offset, length, epoch, magic,
                    // CRC) are read.
                    if let verified, raw.count > uncovered {
                        crc = CRC32C.extend(crc, UnsafeRawBufferPointer(rebasing: raw[0..<uncovered]))
                        crc = CRC32C.combine(crc, verified, lengthB: raw.count - uncovered)
                    } else {
                        crc = CRC32C.extend(crc, raw)
                    }
                }
            }
        }
        JournalFormat.setBlockChecksum(&buffer, start: start, crc: crc)
        let blockBytes = JournalFormat.blockHeaderBytes + recordsBytes
        let buffers = pieces.map { piece -> ByteBuffer in
            switch piece {
            case .own(let range): buffer.getSlice(at: range.lowerBound, length: range.count)!
            case .payload(let payload, _, _): payload
            }
        }
        do {
            let durably = configuration.durability == .fsync
            let began = monotonicNanoseconds()
            try target.write(gathering: buffers, at: offset, durably: durably)
            if durably {
                let ended = monotonicNanoseconds()
                syncTimer.recordNanoseconds(Int64(ended - began))
                syncNanoseconds.add(Int(ended - began), ordering: .relaxed)
            }
        } catch {
            logger.critical("journal write failed; the storage node stops taking writes", metadata: ["error": "\(error)"])
            return .failure(.ioFailure("\(error)"))
        }
        blocksWritten.add(1, ordering: .relaxed)
        bytesWritten.add(blockBytes, ordering: .relaxed)
        self.blockBytes.record(blockBytes)
        blockEntries.record(items.count)
        appendedEntries.increment(by: items.count)
        appendedBytes.increment(by: blockBytes)
        return .success(())
    }

    /// Makes a block's entries readable: one call per segment, with its last end.
    private func acknowledge(_ items: [Item]) {
        var single: Acknowledgement?
        var several: [ObjectIdentifier: Acknowledgement]?
        for item in items {
            guard let next = item.acknowledges else { continue }
            if several == nil {
                guard let current = single else {
                    single = next
                    continue
                }
                if current.state === next.state {
                    single = Acknowledgement(state: next.state, end: next.end, maxTimestamp: max(current.maxTimestamp, next.maxTimestamp))
                    continue
                }
                several = [ObjectIdentifier(current.state): current]
            }
            let key = ObjectIdentifier(next.state)
            let merged = several![key].map { Acknowledgement(state: next.state, end: next.end, maxTimestamp: max($0.maxTimestamp, next.maxTimestamp)) }
            several![key] = merged ?? next
        }
        if let several {
            for acknowledgement in several.values {
                acknowledgement.state.acknowledge(upTo: acknowledgement.end, maxTimestamp: acknowledgement.maxTimestamp)
            }
        } else if let single {
            single.state.acknowledge(upTo: single.end, maxTimestamp: single.maxTimestamp)
        }
    }

    /// In `interval` mode, syncs when the interval has passed since the last sync.
    /// Called with the lock held (only one journal thread runs in this mode).
    private func syncForInterval() {
        guard case .interval(let ms) = configuration.durability, unsyncedBytes > 0 else { return }
        let now = monotonicNanoseconds()
        guard now - lastSyncNanoseconds >= UInt64(ms) * 1_000_000 else { return }
        do {
            try file.syncData()
            syncTimer.recordNanoseconds(Int64(monotonicNanoseconds() - now))
        } catch {
            logger.critical("journal sync failed", metadata: ["error": "\(error)"])
            failure = failure ?? .ioFailure("\(error)")
        }
        unsyncedBytes = 0
        lastSyncNanoseconds = monotonicNanoseconds()
    }

    /// Bytes of a block holding one `fileEnd` record.
    static let fileEndBlockBytes = JournalFormat.blockHeaderBytes + JournalFormat.recordHeaderBytes

    /// Ends this file with a `fileEnd` block (synced, so recovery knows the journal goes
    /// on in the next file) and opens the next file. Once per `journalFileBytesMax`.
    /// Waits for the blocks in flight first, so that a file is complete on disk before
    /// any block of the next one is written. Called and returns with the lock held.
    private func rollFileLocked() -> Result<Void, StorageError> {
        rolling = true
        defer {
            rolling = false
            condition.broadcast()
        }
        while writesInFlight > 0 { condition.wait() }
        let sequence = nextSequence
        let current = file
        let offset = fileOffset
        let next = fileNumber + 1
        condition.unlock()
        let opened: Result<DataFile, StorageError>
        do {
            var end = ByteBuffer()
            let start = JournalFormat.beginBlock(&end)
            JournalFormat.writeRecordHeader(.fileEnd, segment: SegmentID(logID: 0, number: 0), epoch: 0, value: 0, payloadBytes: 0, to: &end)
            JournalFormat.sealBlock(&end, start: start, sequence: sequence)
            try current.write(end, at: offset)
            try current.syncData()
            opened = .success(try files.open(next))
        } catch {
            logger.critical("journal file roll failed; the storage node stops taking writes", metadata: ["error": "\(error)"])
            opened = .failure(.ioFailure("\(error)"))
        }
        condition.lock()
        switch opened {
        case .success(let newFile):
            current.close()
            // The file-end block is complete as soon as it is synced: nothing waits on it.
            nextSequence = sequence + 1
            if nextToComplete == sequence { nextToComplete += 1 } else { written[sequence] = WrittenBlock(items: [], result: .success(()), end: JournalPosition(file: next, offset: 0)) }
            file = newFile
            fileNumber = next
            fileOffset = 0
            unsyncedBytes = 0
            return .success(())
        case .failure(let error):
            return .failure(error)
        }
    }

    private func failEverything(_ error: StorageError) {
        condition.lock()
        if failure == nil { failure = error }
        let failed = pending
        pending.removeAll()
        pendingBytes = 0
        condition.unlock()
        for item in failed { item.completion(.failure(error)) }
    }
}
