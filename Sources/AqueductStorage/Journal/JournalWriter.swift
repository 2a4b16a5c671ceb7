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
        /// Called on the journal thread, in submission order, once the item is
        /// acknowledged (or failed).
        var completion: (Result<Void, StorageError>) -> Void
    }

    private let configuration: StorageConfiguration
    private let directory: String
    private let logger: Logger

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var pending = Deque<Item>()
    private var pendingBytes = 0
    private var stopping = false
    private var failure: StorageError?

    // Owned by the journal thread (and by init before it starts).
    private var file: DataFile
    private var fileNumber: UInt64
    private var fileOffset: Int64
    private var nextSequence: UInt64
    private var writeBuffer: ByteBuffer
    private var lastSyncNanoseconds: UInt64 = monotonicNanoseconds()
    private var unsyncedBytes = 0

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

    /// Starts writing at `position` (the end of the valid journal found by recovery);
    /// the next block gets `nextSequence`.
    let files: JournalFiles

    /// Starts a new journal file numbered `fileNumber`; its first block gets `nextSequence`.
    init(configuration: StorageConfiguration, files: JournalFiles, fileNumber: UInt64, nextSequence: UInt64, logger: Logger) throws {
        self.configuration = configuration
        self.directory = configuration.journalPath
        self.logger = logger
        self.files = files
        self.fileNumber = fileNumber
        self.fileOffset = 0
        self.nextSequence = nextSequence
        self.file = try files.open(fileNumber)
        let position = JournalPosition(file: fileNumber, offset: 0)
        self.writeBuffer = ByteBufferAllocator().buffer(capacity: configuration.journalBatchBytesMax + (64 << 10))
        self.acknowledged = Mutex((position, nextSequence))
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "aqueduct-journal"
        thread.qualityOfService = .userInitiated
        thread.start()
    }

    /// The position up to which every submitted item has been acknowledged.
    var acknowledgedPositionAndSequence: (position: JournalPosition, nextSequence: UInt64) {
        acknowledged.withLock { $0 }
    }

    /// Queues an item. Its completion runs on the journal thread. Fails at once when
    /// the journal has failed or is stopping.
    func submit(_ item: Item) throws(StorageError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        if stopping { throw .closed }
        pendingBytes += item.payload.readableBytes + JournalFormat.recordHeaderBytes
        pending.append(item)
        if pending.count == 1 { condition.signal() }
    }

    /// Acknowledges everything queued, syncs, and stops the thread.
    func stop() {
        condition.lock()
        let alreadyStopped = stopping
        stopping = true
        condition.signal()
        condition.unlock()
        if !alreadyStopped { finished.wait() }
    }

    /// Recycles journal files wholly before `position`'s file (a checkpoint covers them).
    func releaseFiles(before position: JournalPosition) {
        files.recycle(before: position.file)
    }

    private func run() {
        // The journal thread is on every acknowledgement's path: let it preempt the
        // threads doing request work when a sync returns (no effect without permission).
        _ = aq_raise_thread_priority(5)
        // Real-time I/O class where permitted (mq-deadline serves it before best effort),
        // else the highest best-effort level.
        if aq_set_thread_io_priority(1, 4) != 0 { _ = aq_set_thread_io_priority(2, 0) }
        var batch: [Item] = []
        batch.reserveCapacity(1_024)
        while true {
            condition.lock()
            while pending.isEmpty && !stopping {
                if case .interval(let ms) = configuration.durability, unsyncedBytes > 0 {
                    let deadline = Date(timeIntervalSinceNow: Double(ms) / 1_000)
                    if !condition.wait(until: deadline) { break }
                } else {
                    condition.wait()
                }
            }
            if pending.isEmpty {
                let exiting = stopping
                condition.unlock()
                if exiting { break }
                syncForInterval()
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
            }
            var bytes = 0
            while let first = pending.first {
                let size = first.payload.readableBytes + JournalFormat.recordHeaderBytes
                if !batch.isEmpty && bytes + size > configuration.journalBatchBytesMax { break }
                bytes += size
                batch.append(pending.removeFirst())
            }
            pendingBytes -= bytes
            condition.unlock()

            let result = writeBlock(batch)
            if case .success = result { acknowledge(batch) }
            for item in batch { item.completion(result) }
            if case .success = result {
                // Published only after the completions ran, so that the flusher, seeing
                // this position, also sees every entry before it acknowledged in memory.
                let position = JournalPosition(file: fileNumber, offset: fileOffset)
                let sequence = nextSequence
                acknowledged.withLock { $0 = (position, sequence) }
            }
            batch.removeAll(keepingCapacity: true)
            if case .failure(let error) = result { failEverything(error) }
        }
        do {
            if unsyncedBytes > 0 { try file.syncData() }
        } catch {
            logger.error("final journal sync failed", metadata: ["error": "\(error)"])
        }
        file.close()
        finished.signal()
    }

    private func writeBlock(_ items: [Item]) -> Result<Void, StorageError> {
        writeBuffer.clear()
        let start = JournalFormat.beginBlock(&writeBuffer)
        for item in items {
            JournalFormat.writeRecordHeader(
                item.kind, segment: item.segment, epoch: item.epoch, value: item.value,
                payloadBytes: item.payload.readableBytes, to: &writeBuffer)
            var payload = item.payload
            writeBuffer.writeBuffer(&payload)
        }
        JournalFormat.sealBlock(&writeBuffer, start: start, sequence: nextSequence)
        do {
            if fileOffset + Int64(writeBuffer.readableBytes + Self.fileEndBlockBytes) > files.fileBytes {
                try rollFile()
                // The block was sealed with the sequence the file-end block took.
                JournalFormat.sealBlock(&writeBuffer, start: start, sequence: nextSequence)
            }
            try file.write(writeBuffer, at: fileOffset)
            unsyncedBytes += writeBuffer.readableBytes
            if configuration.durability == .fsync {
                let began = monotonicNanoseconds()
                try file.syncData()
                let ended = monotonicNanoseconds()
                syncTimer.recordNanoseconds(Int64(ended - began))
                syncNanoseconds.add(Int(ended - began), ordering: .relaxed)
                unsyncedBytes = 0
                lastSyncNanoseconds = ended
            } else {
                syncForInterval()
            }
        } catch {
            logger.critical("journal write failed; the storage node stops taking writes", metadata: ["error": "\(error)"])
            return .failure(.ioFailure("\(error)"))
        }
        fileOffset += Int64(writeBuffer.readableBytes)
        nextSequence += 1
        blocksWritten.add(1, ordering: .relaxed)
        bytesWritten.add(writeBuffer.readableBytes, ordering: .relaxed)
        blockBytes.record(writeBuffer.readableBytes)
        blockEntries.record(items.count)
        appendedEntries.increment(by: items.count)
        appendedBytes.increment(by: writeBuffer.readableBytes)
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
    private func syncForInterval() {
        guard case .interval(let ms) = configuration.durability, unsyncedBytes > 0 else { return }
        let now = monotonicNanoseconds()
        guard now - lastSyncNanoseconds >= UInt64(ms) * 1_000_000 else { return }
        do {
            try file.syncData()
            syncTimer.recordNanoseconds(Int64(monotonicNanoseconds() - now))
        } catch {
            logger.critical("journal sync failed", metadata: ["error": "\(error)"])
            failEverything(.ioFailure("\(error)"))
        }
        unsyncedBytes = 0
        lastSyncNanoseconds = monotonicNanoseconds()
    }

    /// Bytes of a block holding one `fileEnd` record.
    static let fileEndBlockBytes = JournalFormat.blockHeaderBytes + JournalFormat.recordHeaderBytes

    /// Ends this file with a `fileEnd` block (synced, so recovery knows the journal goes
    /// on in the next file) and opens the next file. Once per `journalFileBytesMax`.
    private func rollFile() throws {
        var end = ByteBuffer()
        let start = JournalFormat.beginBlock(&end)
        JournalFormat.writeRecordHeader(.fileEnd, segment: SegmentID(logID: 0, number: 0), epoch: 0, value: 0, payloadBytes: 0, to: &end)
        JournalFormat.sealBlock(&end, start: start, sequence: nextSequence)
        try file.write(end, at: fileOffset)
        try file.syncData()
        nextSequence += 1
        file.close()
        fileNumber += 1
        fileOffset = 0
        file = try files.open(fileNumber)
        unsyncedBytes = 0
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
