import AqueductCommon
import AqueductReplication
import DequeModule
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// Where a record lies in the entry log: its file, and the position and size of the
/// whole record (header and payload).
public struct EntryLocation: Sendable, Hashable {
    public var file: UInt64
    public var position: Int64
    public var bytes: Int
}

/// A replica storage node's durable store: one append-only sequence of files holding
/// every entry (and every fence) in the order they were made durable, written in
/// group-commit batches by one thread with `pwritev2(RWF_DSYNC)`, each byte written
/// once. This is the journal and the entry storage at once (docs/REPLICATION.md says
/// why: entries of a replica are written once and read back rarely, so the single
/// node's second copy into segment files would buy nothing here).
///
///     record: headerCRC u32 | kind u8 | segment u64 | entry i64 | lastAddConfirmed i64
///             | entryChecksum u32 | payloadLength u32 | payload
///
/// The header CRC-32C covers kind..payloadLength; the payload is covered by the entry's
/// own checksum (the writer's, checked when the entry arrived and again when read
/// back), so the write path computes no checksum of its own over the payload.
/// Big-endian throughout. Files are named by a 20-digit number.
final class EntryLog: @unchecked Sendable {
    enum Kind: UInt8 {
        case entry = 1
        case fence = 2
    }

    struct Record {
        var kind: Kind
        var entry: StorageProtocol.Entry
    }

    static let headerBytes = 37
    /// Longest payload a reader accepts from a header, whatever the configuration was.
    static let payloadBytesLimit = 256 << 20

    struct Pending {
        var header: ByteBuffer
        var payload: ByteBuffer
        var segment: UInt64
        /// When it was queued (monotonic nanoseconds), for the queue-wait metric.
        var submittedAt: UInt64
        /// Runs on the log's thread, in submission order, once the record is durable.
        var completion: (Result<EntryLocation, EntryLogError>) -> Void
    }

    let directory: String
    private let fileBytesMax: Int64
    private let batchBytesMax: Int
    private let logger: Logger

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var pending = Deque<Pending>()
    private var stopping = false
    private var failure: EntryLogError?
    private var threadRunning = false

    // The writer thread's own.
    private var file: DataFile
    private var fileNumber: UInt64
    private var filePosition: Int64

    /// Segments with records in each file, for removing files whose segments are all gone.
    let segmentsByFile: Mutex<[UInt64: Set<UInt64>]>
    private let finished = DispatchSemaphore(value: 0)

    let batchesWritten = Atomic<Int>(0)
    let bytesWritten = Atomic<Int>(0)
    private let syncTimer = Metrics.Timer(label: "aqueduct_replica_log_fsync_seconds")
    private let batchRecords = Recorder(label: "aqueduct_replica_log_batch_records")
    /// Submit → taken into a batch by the log's thread: the write in progress plus the
    /// thread's wake-up (scheduling on a busy machine).
    private let queueTimer = Metrics.Timer(label: "aqueduct_replica_log_queue_seconds")

    /// Opens the log to append after what `scan` found: a new file numbered after the
    /// last one (earlier files are never written again).
    init(directory: String, nextFileNumber: UInt64, segmentsByFile: [UInt64: Set<UInt64>], fileBytesMax: Int64, batchBytesMax: Int, logger: Logger) throws {
        self.directory = directory
        self.fileBytesMax = fileBytesMax
        self.batchBytesMax = batchBytesMax
        self.logger = logger
        self.fileNumber = nextFileNumber
        self.file = try DataFile.open(directory + "/" + Self.fileName(nextFileNumber))
        try FileSystem.syncDirectory(directory)
        self.filePosition = 0
        var files = segmentsByFile
        files[nextFileNumber] = []
        self.segmentsByFile = Mutex(files)
    }

    func start() {
        threadRunning = true
        let thread = Thread { [self] in run() }
        thread.name = "aqueduct-replica-log"
        thread.qualityOfService = .userInitiated
        thread.start()
    }

    /// Queues a record. Its completion runs on the log's thread, in submission order.
    func submit(_ kind: Kind, _ entry: StorageProtocol.Entry, completion: @escaping (Result<EntryLocation, EntryLogError>) -> Void) throws(EntryLogError) {
        var header = ByteBuffer()
        header.reserveCapacity(Self.headerBytes)
        header.writeInteger(UInt32(0))
        header.writeInteger(kind.rawValue)
        header.writeInteger(entry.segment)
        header.writeInteger(entry.entry)
        header.writeInteger(entry.lastAddConfirmed)
        header.writeInteger(entry.checksum)
        header.writeInteger(UInt32(entry.payload.readableBytes))
        let crc = header.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[4...])) }
        header.setInteger(crc, at: 0)
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        if stopping { throw .closed }
        pending.append(Pending(header: header, payload: entry.payload, segment: entry.segment, submittedAt: monotonicNanoseconds(), completion: completion))
        if pending.count == 1 { condition.signal() }
    }

    /// Writes what is queued, then stops the thread.
    func stop() {
        condition.lock()
        let wasRunning = threadRunning && !stopping
        stopping = true
        condition.broadcast()
        condition.unlock()
        if wasRunning { finished.wait() }
        file.close()
    }

    /// Removes files (never the one being written) none of whose segments is in `live`.
    /// Returns the numbers removed.
    func removeFiles(keeping live: (UInt64) -> Bool) -> [UInt64] {
        let current = condition.withLock { fileNumber }
        let removable = segmentsByFile.withLock { files -> [UInt64] in
            let numbers = files.filter { $0.key != current && !$0.value.contains(where: live) }.map(\.key)
            for number in numbers { files.removeValue(forKey: number) }
            return numbers.sorted()
        }
        for number in removable {
            try? FileSystem.removeFile(directory + "/" + Self.fileName(number))
        }
        if !removable.isEmpty { try? FileSystem.syncDirectory(directory) }
        return removable
    }

    private func run() {
        while true {
            condition.lock()
            while pending.isEmpty && !stopping { condition.wait() }
            if pending.isEmpty && stopping {
                condition.unlock()
                finished.signal()
                return
            }
            var batch: [Pending] = []
            var bytes = 0
            while let next = pending.first, batch.isEmpty || bytes + next.header.readableBytes + next.payload.readableBytes <= batchBytesMax {
                bytes += next.header.readableBytes + next.payload.readableBytes
                batch.append(pending.removeFirst())
            }
            let failed = failure
            condition.unlock()
            let taken = monotonicNanoseconds()
            for item in batch { queueTimer.recordNanoseconds(Int64(taken &- item.submittedAt)) }
            if let failed {
                for item in batch { item.completion(.failure(failed)) }
                continue
            }
            let result = write(batch, bytes: bytes)
            switch result {
            case .success(let locations):
                for (item, location) in zip(batch, locations) { item.completion(.success(location)) }
            case .failure(let error):
                logger.critical("the replica log failed; this node takes no more writes until restarted", metadata: ["error": "\(error)"])
                condition.withLock { failure = error }
                for item in batch { item.completion(.failure(error)) }
            }
        }
    }

    private func write(_ batch: [Pending], bytes: Int) -> Result<[EntryLocation], EntryLogError> {
        do {
            if filePosition > 0 && filePosition + Int64(bytes) > fileBytesMax {
                // Everything in the old file was written with RWF_DSYNC: nothing to sync.
                let next = fileNumber + 1
                let newFile = try DataFile.open(directory + "/" + Self.fileName(next))
                segmentsByFile.withLock { $0[next] = [] }
                try FileSystem.syncDirectory(directory)
                file.close()
                condition.withLock {
                    file = newFile
                    fileNumber = next
                }
                filePosition = 0
            }
            var buffers: [ByteBuffer] = []
            buffers.reserveCapacity(batch.count * 2)
            var locations: [EntryLocation] = []
            locations.reserveCapacity(batch.count)
            var position = filePosition
            var segments = Set<UInt64>()
            for item in batch {
                let recordBytes = item.header.readableBytes + item.payload.readableBytes
                locations.append(EntryLocation(file: fileNumber, position: position, bytes: recordBytes))
                position += Int64(recordBytes)
                buffers.append(item.header)
                buffers.append(item.payload)
                segments.insert(item.segment)
            }
            // The file's segment set grows before the data lands, so a concurrent
            // `removeFiles` never drops a file about to hold a live segment's entry.
            let number = fileNumber
            segmentsByFile.withLock { $0[number, default: []].formUnion(segments) }
            let start = monotonicNanoseconds()
            try file.write(gathering: buffers, at: filePosition, durably: true)
            syncTimer.recordNanoseconds(Int64(monotonicNanoseconds() - start))
            batchRecords.record(batch.count)
            filePosition = position
            batchesWritten.add(1, ordering: .relaxed)
            bytesWritten.add(bytes, ordering: .relaxed)
            return .success(locations)
        } catch {
            return .failure(.ioFailure("\(error)"))
        }
    }

    // MARK: - Reading back

    static func fileName(_ number: UInt64) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    static func fileNumber(of name: String) -> UInt64? {
        guard name.hasSuffix(".log") else { return nil }
        return UInt64(name.dropLast(".log".count))
    }

    /// Parses the record at the start of `buffer` (at least a header). `.incomplete`
    /// when more bytes are needed: `needed` in all.
    enum Parse {
        case record(Record, bytes: Int)
        case incomplete(needed: Int)
        case invalid(String)
    }

    static func parse(_ buffer: ByteBuffer) -> Parse {
        guard buffer.readableBytes >= headerBytes else { return .incomplete(needed: headerBytes) }
        let start = buffer.readerIndex
        let crc: UInt32 = buffer.getInteger(at: start)!
        let computed = buffer.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[4..<headerBytes])) }
        guard crc == computed else { return .invalid("header checksum mismatch") }
        let kindByte: UInt8 = buffer.getInteger(at: start + 4)!
        guard let kind = Kind(rawValue: kindByte) else { return .invalid("unknown record kind \(kindByte)") }
        let segment: UInt64 = buffer.getInteger(at: start + 5)!
        let entry: Int64 = buffer.getInteger(at: start + 13)!
        let lac: Int64 = buffer.getInteger(at: start + 21)!
        let checksum: UInt32 = buffer.getInteger(at: start + 29)!
        let length = Int(buffer.getInteger(at: start + 33, as: UInt32.self)!)
        guard length <= payloadBytesLimit else { return .invalid("a payload of \(length) bytes") }
        guard buffer.readableBytes >= headerBytes + length else { return .incomplete(needed: headerBytes + length) }
        let payload = buffer.getSlice(at: start + headerBytes, length: length)!
        let record = StorageProtocol.Entry(segment: segment, entry: entry, lastAddConfirmed: lac, payload: payload, checksum: checksum)
        if kind == .entry && !record.isIntact { return .invalid("entry \(segment)/\(entry) fails its checksum") }
        return .record(Record(kind: kind, entry: record), bytes: headerBytes + length)
    }

    /// Reads one record back from a file (a catch-up read): nil when it is not there or
    /// damaged.
    static func read(_ file: DataFile, at location: EntryLocation) throws -> Record? {
        let buffer = try file.read(count: location.bytes, at: location.position)
        guard case .record(let record, let bytes) = parse(buffer), bytes == location.bytes else { return nil }
        return record
    }

    /// Every valid record of one file, in order, and where the valid part ends. Reads in
    /// chunks; stops at the first record that is torn or damaged.
    static func scan(_ file: DataFile, number: UInt64, chunkBytes: Int = 4 << 20, _ visit: (Record, EntryLocation) -> Void) throws -> (validBytes: Int64, problem: String?) {
        let size = try file.size()
        var position: Int64 = 0
        var buffer = ByteBuffer()
        var bufferStart: Int64 = 0
        while position < size {
            let relative = Int(position - bufferStart)
            var view = buffer
            view.moveReaderIndex(forwardBy: relative)
            switch parse(view) {
            case .record(let record, let bytes):
                visit(record, EntryLocation(file: number, position: position, bytes: bytes))
                position += Int64(bytes)
            case .incomplete(let needed):
                if position + Int64(needed) > size { return (position, "a record cut short at byte \(position)") }
                buffer = try file.read(count: max(needed, chunkBytes), at: position)
                bufferStart = position
            case .invalid(let why):
                return (position, "\(why) at byte \(position)")
            }
        }
        return (position, nil)
    }
}

public enum EntryLogError: Error, Equatable, Sendable, CustomStringConvertible {
    case ioFailure(String)
    case closed

    public var description: String {
        switch self {
        case .ioFailure(let why): "replica storage I/O failed: \(why); the node takes no more writes until restarted"
        case .closed: "the replica store is closed"
        }
    }
}
