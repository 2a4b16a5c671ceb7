import AqueductLog
import AqueductRecords
import AqueductStorage

/// The documented error codes every front end reports (HTTP bodies, CLI messages;
/// the Kafka front end maps them to Kafka's numeric codes). See docs/ERRORS.md.
public enum ErrorCode: String, Sendable, CaseIterable, Codable {
    case invalidTopicName = "INVALID_TOPIC_NAME"
    case topicNotFound = "UNKNOWN_TOPIC"
    case topicExists = "TOPIC_ALREADY_EXISTS"
    case invalidPartitions = "INVALID_PARTITIONS"
    case partitionNotFound = "UNKNOWN_PARTITION"
    case invalidConfig = "INVALID_CONFIG"
    case recordTooLarge = "RECORD_TOO_LARGE"
    case invalidRecord = "INVALID_RECORD"
    case offsetOutOfRange = "OFFSET_OUT_OF_RANGE"
    case invalidRequest = "INVALID_REQUEST"
    case corruptData = "CORRUPT_DATA"
    case storageError = "STORAGE_ERROR"
    case notWritable = "NOT_WRITABLE"
    case unavailable = "UNAVAILABLE"
    case internalError = "INTERNAL_ERROR"
    case groupNotFound = "GROUP_NOT_FOUND"

    /// The closest Kafka protocol error code.
    public var kafkaCode: Int16 {
        switch self {
        case .offsetOutOfRange: 1
        case .corruptData: 2
        case .topicNotFound, .partitionNotFound: 3
        case .recordTooLarge: 10
        case .invalidTopicName: 17
        case .topicExists: 36
        case .invalidPartitions: 37
        case .invalidConfig: 40
        case .invalidRequest: 42
        case .storageError, .notWritable: 56
        case .invalidRecord: 87
        case .unavailable: 6  // NOT_LEADER_OR_FOLLOWER: clients retry
        case .internalError: -1
        case .groupNotFound: 69
        }
    }
}

/// A failure with a documented code, a message saying what was wrong, and a hint
/// saying what to do next.
public struct BrokerError: Error, Equatable, CustomStringConvertible, Sendable {
    public var code: ErrorCode
    public var message: String
    public var hint: String?

    public init(_ code: ErrorCode, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    public var description: String {
        hint.map { "\(code.rawValue): \(message) (\($0))" } ?? "\(code.rawValue): \(message)"
    }

    /// Translates lower layers' errors into a code and a message for users.
    public static func from(_ error: any Error) -> BrokerError {
        switch error {
        case let error as BrokerError: return error
        case let error as LogError: return from(log: error)
        case let error as StorageError: return from(storage: error)
        case let error as RecordBatchError: return BrokerError(.invalidRecord, error.description)
        default: return BrokerError(.internalError, "\(error)")
        }
    }

    static func from(log error: LogError) -> BrokerError {
        switch error {
        case .offsetOutOfRange(let offset, let start, let end):
            BrokerError(.offsetOutOfRange, "offset \(offset) is outside [\(start), \(end))",
                hint: "read from an offset between the partition's start and end offsets")
        case .invalidBatch(.tooLarge(let bytes, let limit)):
            BrokerError(.recordTooLarge, "record batch of \(bytes) bytes exceeds the topic's limit of \(limit) bytes",
                hint: "send smaller records or raise the topic's batchBytesMax")
        case .invalidBatch(let batchError): BrokerError(.invalidRecord, batchError.description)
        case .emptyBatch: BrokerError(.invalidRecord, "a record batch must hold at least one record")
        case .invalidConfiguration(let why): BrokerError(.invalidConfig, why)
        case .logNotFound: BrokerError(.partitionNotFound, "the partition's log no longer exists")
        case .fenced, .noWriter: BrokerError(.notWritable, error.description, hint: "retry; the partition is changing writers")
        case .storage(let storageError): from(storage: storageError)
        case .metadata(let why): BrokerError(.storageError, "metadata: \(why)")
        case .closed: BrokerError(.unavailable, "the server is shutting down", hint: "retry against a running server")
        }
    }

    static func from(storage error: StorageError) -> BrokerError {
        switch error {
        case .corruptEntry, .dataLoss:
            BrokerError(.corruptData, error.description, hint: "the range is refused; truncate the partition past it or restore it")
        case .closed: BrokerError(.unavailable, "the server is shutting down", hint: "retry against a running server")
        case .ioFailure: BrokerError(.storageError, error.description, hint: "check the disk, then restart the server")
        case .entryTooLarge(let bytes, let limit):
            BrokerError(.recordTooLarge, "record batch of \(bytes) bytes exceeds the limit of \(limit) bytes")
        default: BrokerError(.storageError, error.description)
        }
    }
}
