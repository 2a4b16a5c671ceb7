import AqueductRecords
import NIOCore

/// What a log needs of the place its segments live: the local storage node (one
/// process, today's path) or segments replicated over storage nodes (cluster mode).
/// The log sequences appends and keeps the segment list in metadata; this keeps the
/// entries, fences and seals them, and serves reads.
public protocol SegmentStorage: AnyObject, Sendable {
    /// Whether other processes reach the same segments (replicated storage): a log then
    /// reads its record again and claims its writer epoch in metadata before fencing.
    var isShared: Bool { get }
    /// Creates an empty segment whose first batch will have `baseOffset`.
    func createSegment(_ id: SegmentID, baseOffset: Int64, epoch: UInt64) async throws(StorageError)
    /// The append path of a segment, looked up once (the log keeps it for its active segment).
    func appender(_ id: SegmentID) throws(StorageError) -> any SegmentAppender
    /// Refuses appends of writers below `epoch` from now on; the returned end offset is
    /// final for them (everything acknowledged is below it).
    @discardableResult
    func fence(_ id: SegmentID, epoch: UInt64) async throws(StorageError) -> SegmentInfo
    /// Takes no more entries; readers waiting at its end move on.
    @discardableResult
    func seal(_ id: SegmentID) async throws(StorageError) -> SegmentInfo
    func deleteSegment(_ id: SegmentID) async throws(StorageError)
    /// What is known of a segment here without I/O; nil when this storage has not opened it.
    func segmentInfo(_ id: SegmentID) -> SegmentInfo?
    /// Every segment this storage holds (to remove those no log lists after a crash).
    func allSegments() -> [SegmentInfo]

    /// Write budget: bytes accepted and not yet safe to forget (waits while spent).
    func reserveWriteBudget(_ bytes: Int) async -> Int
    func releaseWriteBudget(_ bytes: Int)
    /// After a successful submit: returns any reservation beyond the batch's bytes.
    func settleBudget(reservedBytes: Int, batchBytes: Int)

    /// Whole batches from `offset`, about `maxBytes` (at least one when any is there).
    func read(_ id: SegmentID, from offset: Int64, maxBytes: Int) async throws(StorageError) -> SegmentRead
    /// Waits until an entry at or past `offset` is readable, the segment is sealed or
    /// deleted, or the timeout passes.
    func waitForEntries(_ id: SegmentID, at offset: Int64, timeoutNanoseconds: UInt64) async -> WaitOutcome
}

/// The append path of one segment.
public protocol SegmentAppender: Sendable {
    var id: SegmentID { get }
    /// Queues `batch` (its parsed `header` carries the base offset the log assigned) for
    /// the writer with `epoch`; `completion` runs once it is durable (keep it short).
    /// Ordered: batches are stored in the order of these calls. `checksumVerified`: the
    /// caller checked the batch's CRC. `baseOffsetWritten`: whether `batch` already holds
    /// `header.baseOffset` (if not, the storage writes it wherever the batch goes).
    func submitAppend(
        epoch: UInt64, batch: ByteBuffer, header: RecordBatchHeader, reservedBytes: Int,
        checksumVerified: Bool, baseOffsetWritten: Bool,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError)
}

extension StorageNode: SegmentStorage {
    /// One process owns the node's segments.
    public var isShared: Bool { false }

    public func appender(_ id: SegmentID) throws(StorageError) -> any SegmentAppender {
        try handle(id)
    }
}

extension StorageNode.SegmentHandle: SegmentAppender {
    public func submitAppend(
        epoch: UInt64, batch: ByteBuffer, header: RecordBatchHeader, reservedBytes: Int,
        checksumVerified: Bool, baseOffsetWritten: Bool,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError) {
        try node.submitAppend(
            self, epoch: epoch, batch: batch, header: header, reservedBytes: reservedBytes,
            checksumVerified: checksumVerified, baseOffsetWritten: baseOffsetWritten, completion: completion)
    }
}
