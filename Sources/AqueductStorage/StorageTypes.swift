import AqueductRecords
import NIOCore

/// A segment (BookKeeper's ledger) on a storage node: the `number`-th segment of log
/// `logID`. Entries of one segment are record batches with dense offsets.
public struct SegmentID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public var logID: UInt64
    public var number: UInt64

    public init(logID: UInt64, number: UInt64) {
        self.logID = logID
        self.number = number
    }

    public static func < (a: SegmentID, b: SegmentID) -> Bool {
        (a.logID, a.number) < (b.logID, b.number)
    }

    public var description: String { "\(logID)/\(number)" }
}

/// How appends become durable.
public enum DurabilityMode: Equatable, Sendable, CustomStringConvertible {
    /// Acknowledge an append only after an fdatasync covers it (the default).
    case fsync
    /// Acknowledge after the write(2); fdatasync every `milliseconds`. A power failure
    /// can lose the last interval; a process crash (kill -9) loses nothing.
    case interval(milliseconds: Int)

    /// Parses `fsync` or `interval:<ms>`.
    public init?(parsing text: String) {
        if text == "fsync" {
            self = .fsync
        } else if text.hasPrefix("interval:"), let ms = Int(text.dropFirst("interval:".count)), ms > 0, ms <= 60_000 {
            self = .interval(milliseconds: ms)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .fsync: "fsync"
        case .interval(let ms): "interval:\(ms)"
        }
    }
}

/// Limits and policies of a storage node. Every bound is named with its unit.
public struct StorageConfiguration: Sendable {
    public var directory: String
    /// Where the journal lives; `<directory>/journal` when nil. Put it on a disk of its
    /// own to keep entry storage writes and catch-up reads off the journal's syncs
    /// (BookKeeper's advice for the same design).
    public var journalDirectory: String?
    public var durability: DurabilityMode = .fsync

    /// The journal's directory, as used.
    public var journalPath: String { journalDirectory ?? directory + "/journal" }
    /// Most bytes of entries one journal write (and so one fdatasync) carries.
    public var journalBatchBytesMax = 1 << 20
    /// How long the journal may wait for more entries before writing a batch that is
    /// not yet full. 0 writes as soon as the previous sync is done: batching then
    /// comes from entries that arrive during that sync (group commit).
    public var journalBatchWaitMicroseconds = 0
    /// Journal blocks written at once, each write with its own sync (1...4). With 2,
    /// entries that arrive during a sync start their own at once instead of waiting for
    /// it; acknowledgements stay in journal order. On this project's one-disk test VM,
    /// 2 gave no lower latency and less throughput than 1 (docs/BENCHMARKS.md); a
    /// journal on a device of its own with a deep queue (NVMe) is where more can help.
    /// `interval` mode always uses 1.
    public var journalWritesInFlightMax = 1
    /// A journal file is closed and a new one started past this size.
    public var journalFileBytesMax: Int64 = 64 << 20
    /// Bytes of appended entries not yet written to segment files; appends wait
    /// above this (backpressure from entry storage to writers).
    public var writeCacheBytesMax = 64 << 20
    /// Entry storage is flushed at least this often...
    public var flushIntervalMilliseconds = 1_000
    /// ...and as soon as this many bytes wait to be flushed.
    public var flushTriggerBytes = 16 << 20
    /// A checkpoint (sync of written segment files, then the journal may be recycled)
    /// happens at least this often, and whenever the journal starts a new file.
    public var checkpointIntervalMilliseconds = 10_000
    /// Recent (already flushed) entries kept in memory for tailing readers, all segments together.
    public var tailCacheBytesMax = 64 << 20
    /// A sparse index entry is written every this many bytes of segment file.
    public var indexIntervalBytes = 4_096
    /// Threads doing catch-up reads from segment files; they never touch the journal.
    public var readThreads = 2
    /// Catch-up reads in flight at once; more wait their turn.
    public var readsInFlightMax = 8
    /// Chunks read ahead for sequential catch-up readers, all segments together, and the
    /// largest chunk read ahead, in bytes. Off (0) by default: measured on a one-disk
    /// machine it did not speed up reads from the page cache, and a cold catch-up
    /// reader with a second read in flight disturbed the journal's syncs more (tail p99
    /// +40-90 % instead of about 0). Worth turning on for disks with high latency.
    public var readAheadChunksMax = 0
    public var readAheadChunkBytesMax = 4 << 20
    /// Largest entry (record batch) accepted, in bytes.
    public var entryBytesMax = 8 << 20
    /// Largest segment file, in bytes (index positions are 32-bit).
    public static let segmentBytesLimit: Int64 = Int64(Int32.max) - (64 << 20)
    /// Check each batch's CRC-32C when it is read back from a segment file.
    public var verifyChecksumsOnRead = true

    public init(directory: String) {
        self.directory = directory
    }
}

/// Why a storage operation failed. Each case is precise enough to act on.
public enum StorageError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A writer with a higher epoch took over this segment: this writer must stop.
    case fenced(SegmentID, writerEpoch: UInt64, fencedEpoch: UInt64)
    case sealed(SegmentID)
    case segmentNotFound(SegmentID)
    case segmentExists(SegmentID)
    /// The entry's base offset is not the segment's next offset.
    case offsetMismatch(SegmentID, expected: Int64, got: Int64)
    case offsetOutOfRange(SegmentID, offset: Int64, start: Int64, end: Int64)
    case invalidEntry(String)
    case entryTooLarge(bytes: Int, limitBytes: Int)
    case segmentFull(SegmentID, bytes: Int64)
    /// Stored bytes failed their checksum; the range is refused rather than served.
    case corruptEntry(SegmentID, filePosition: Int64, detail: String)
    /// Entries known to be lost (a journal block damaged before the tail).
    case dataLoss(SegmentID, offsets: Range<Int64>)
    /// A disk write or sync failed; the node no longer takes writes.
    case ioFailure(String)
    /// Replicated storage: too few storage nodes answer (or live) to write or read now.
    case replicasUnavailable(String)
    case closed

    public var description: String {
        switch self {
        case .fenced(let id, let writer, let fenced):
            "segment \(id) is fenced: writer epoch \(writer) < epoch \(fenced) (a newer writer took over)"
        case .sealed(let id): "segment \(id) is sealed and takes no more entries"
        case .segmentNotFound(let id): "segment \(id) does not exist"
        case .segmentExists(let id): "segment \(id) already exists"
        case .offsetMismatch(let id, let expected, let got):
            "segment \(id) expects offset \(expected) next, got \(got)"
        case .offsetOutOfRange(let id, let offset, let start, let end):
            "offset \(offset) is outside segment \(id) [\(start), \(end))"
        case .invalidEntry(let why): "invalid entry: \(why)"
        case .entryTooLarge(let bytes, let limit): "entry of \(bytes) bytes exceeds the limit of \(limit) bytes"
        case .segmentFull(let id, let bytes): "segment \(id) is full at \(bytes) bytes; roll to a new segment"
        case .corruptEntry(let id, let position, let detail):
            "corrupt data in segment \(id) at byte \(position): \(detail)"
        case .dataLoss(let id, let offsets):
            "offsets \(offsets.lowerBound)..<\(offsets.upperBound) of segment \(id) were lost to a damaged journal block"
        case .ioFailure(let why): "storage I/O failed: \(why); the node is read-only until restarted"
        case .replicasUnavailable(let why): "not enough storage nodes answer: \(why); retry once they are back"
        case .closed: "storage node is closed"
        }
    }
}

/// What a storage node knows of a segment.
public struct SegmentInfo: Equatable, Sendable {
    public var id: SegmentID
    public var baseOffset: Int64
    /// One past the last durable offset: offsets below it can be read.
    public var endOffset: Int64
    public var sizeBytes: Int64
    /// Largest record timestamp in the segment (-1 when empty).
    public var maxTimestamp: Int64
    public var sealed: Bool
    public var fencedEpoch: UInt64
    public var damaged: [Range<Int64>]

    public init(
        id: SegmentID, baseOffset: Int64, endOffset: Int64, sizeBytes: Int64, maxTimestamp: Int64, sealed: Bool, fencedEpoch: UInt64,
        damaged: [Range<Int64>] = []
    ) {
        self.id = id
        self.baseOffset = baseOffset
        self.endOffset = endOffset
        self.sizeBytes = sizeBytes
        self.maxTimestamp = maxTimestamp
        self.sealed = sealed
        self.fencedEpoch = fencedEpoch
        self.damaged = damaged
    }
}

/// The result of reading a segment: whole record batches, in order, as slices of
/// cache or file buffers (no copy). The first batch may start before the requested
/// offset (it contains it), as in a Kafka fetch.
public struct SegmentRead: Sendable {
    public var batches: [ByteBuffer]
    /// The offset to ask for next.
    public var nextOffset: Int64
    public var bytes: Int { batches.reduce(0) { $0 + $1.readableBytes } }
    public var fromCache: Bool

    public init(batches: [ByteBuffer], nextOffset: Int64, fromCache: Bool) {
        self.batches = batches
        self.nextOffset = nextOffset
        self.fromCache = fromCache
    }
}
