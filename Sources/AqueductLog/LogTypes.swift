import AqueductMetadata
import AqueductRecords
import AqueductStorage
import NIOCore

/// Per-log policies. Sizes in bytes, times in milliseconds; nil means no limit.
public struct LogConfiguration: Codable, Equatable, Sendable {
    /// A segment is sealed and a new one started once it would grow past this.
    public var segmentBytes: Int64 = 1 << 30
    /// ...or once its first entry is this old.
    public var segmentMilliseconds: Int64 = 7 * 24 * 3_600_000
    /// Sealed segments whose newest record is older than this are deleted.
    public var retentionMilliseconds: Int64? = 7 * 24 * 3_600_000
    /// Oldest sealed segments are deleted while the log is larger than this.
    public var retentionBytes: Int64?
    /// Largest record batch accepted (Kafka's message.max.bytes).
    public var batchBytesMax = 1_048_588
    /// Cluster mode: ensemble, write and ack quorum of the log's new segments (BookKeeper's
    /// E/Qw/Qa); nil: the cluster's. One node keeps one copy whatever these say.
    public var replicationEnsemble: Int?
    public var replicationWrite: Int?
    public var replicationAck: Int?

    public init() {}

    /// Most copies of a segment a log may ask for.
    public static let replicationEnsembleMax = 16

    /// Checks the bounds; returns what is wrong, or nil.
    public func problem() -> String? {
        if segmentBytes < 1 << 10 || segmentBytes > StorageConfiguration.segmentBytesLimit {
            return "segmentBytes must be between 1024 and \(StorageConfiguration.segmentBytesLimit)"
        }
        if segmentMilliseconds < 1 { return "segmentMilliseconds must be positive" }
        if let retention = retentionMilliseconds, retention < 1 { return "retentionMilliseconds must be positive" }
        if let retention = retentionBytes, retention < 0 { return "retentionBytes must not be negative" }
        if batchBytesMax < RecordBatchHeader.size || batchBytesMax > 64 << 20 {
            return "batchBytesMax must be between \(RecordBatchHeader.size) and \(64 << 20)"
        }
        for (name, value) in [("replication.ensemble", replicationEnsemble), ("replication.write", replicationWrite), ("replication.ack", replicationAck)] {
            if let value, value < 1 || value > Self.replicationEnsembleMax { return "\(name) must be between 1 and \(Self.replicationEnsembleMax)" }
        }
        if let write = replicationWrite, let ensemble = replicationEnsemble, write > ensemble {
            return "replication.write (\(write)) must not exceed replication.ensemble (\(ensemble))"
        }
        if let ack = replicationAck, let write = replicationWrite, ack > write {
            return "replication.ack (\(ack)) must not exceed replication.write (\(write))"
        }
        return nil
    }
}

/// Why a log operation failed.
public enum LogError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A writer with a higher epoch took over; this writer must stop.
    case fenced(logID: UInt64, writerEpoch: UInt64, currentEpoch: UInt64)
    case invalidBatch(RecordBatchError)
    case emptyBatch
    case offsetOutOfRange(offset: Int64, startOffset: Int64, endOffset: Int64)
    case logNotFound(UInt64)
    case invalidConfiguration(String)
    /// No writer is open on the log.
    case noWriter(UInt64)
    case storage(StorageError)
    case metadata(String)
    case closed

    public var description: String {
        switch self {
        case .fenced(let id, let writer, let current):
            "log \(id): writer epoch \(writer) is fenced by epoch \(current); a newer writer took over"
        case .invalidBatch(let error): "invalid record batch: \(error)"
        case .emptyBatch: "record batch holds no records"
        case .offsetOutOfRange(let offset, let start, let end):
            "offset \(offset) is out of range: the log holds [\(start), \(end))"
        case .logNotFound(let id): "log \(id) does not exist"
        case .invalidConfiguration(let why): "invalid log configuration: \(why)"
        case .noWriter(let id): "log \(id) has no open writer"
        case .storage(let error): error.description
        case .metadata(let why): "log metadata: \(why)"
        case .closed: "log is closed"
        }
    }
}

/// Where an appended batch landed.
public struct AppendResult: Equatable, Sendable {
    public var baseOffset: Int64
    public var lastOffset: Int64
    public var segment: SegmentID
}

/// What a read returned: whole record batches (the first may start before the offset
/// asked for), and the log's bounds at the time.
public struct LogRead: Sendable {
    public var batches: [ByteBuffer]
    public var nextOffset: Int64
    public var startOffset: Int64
    /// One past the last acknowledged offset (Kafka's high watermark).
    public var endOffset: Int64
    public var bytes: Int { batches.reduce(0) { $0 + $1.readableBytes } }
}

public struct SegmentSummary: Equatable, Sendable, Codable {
    public var number: UInt64
    public var baseOffset: Int64
    public var endOffset: Int64
    public var sizeBytes: Int64
    public var sealed: Bool
    public var createdAtMilliseconds: Int64
    public var maxTimestamp: Int64
}

public struct LogInfo: Equatable, Sendable {
    public var id: UInt64
    public var name: String
    public var startOffset: Int64
    public var endOffset: Int64
    public var sizeBytes: Int64
    public var writerEpoch: UInt64
    public var segments: [SegmentSummary]
    public var configuration: LogConfiguration
}
