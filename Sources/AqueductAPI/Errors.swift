/// The documented error codes every front end reports (HTTP bodies, CLI messages;
/// the Kafka front end maps them to Kafka's numeric codes). Shared by the server and
/// its clients. See docs/ERRORS.md.
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
    case unauthorized = "UNAUTHORIZED"
    case forbidden = "FORBIDDEN"
    case programNotAllowed = "PROGRAM_NOT_ALLOWED"
    case limitReached = "LIMIT_REACHED"
    case invalidReplicationFactor = "INVALID_REPLICATION_FACTOR"
    case invalidReplicaAssignment = "INVALID_REPLICA_ASSIGNMENT"

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
        case .unauthorized: 58  // SASL_AUTHENTICATION_FAILED
        case .forbidden, .programNotAllowed: 31  // CLUSTER_AUTHORIZATION_FAILED
        case .limitReached: 44  // POLICY_VIOLATION
        case .invalidReplicationFactor: 38
        case .invalidReplicaAssignment: 39
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
}
