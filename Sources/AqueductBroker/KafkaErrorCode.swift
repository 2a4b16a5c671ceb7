import AqueductAPI

/// Kafka's numeric error codes (Kafka's `Errors` enum): what the Kafka front end
/// answers, and what the consumer-group protocol speaks whichever front end asks.
public enum KafkaErrorCode {
    public static let none: Int16 = 0
    public static let offsetOutOfRange: Int16 = 1
    public static let corruptMessage: Int16 = 2
    public static let unknownTopicOrPartition: Int16 = 3
    public static let invalidFetchSize: Int16 = 4
    public static let notLeaderOrFollower: Int16 = 6
    public static let requestTimedOut: Int16 = 7
    public static let messageTooLarge: Int16 = 10
    public static let offsetMetadataTooLarge: Int16 = 12
    public static let coordinatorNotAvailable: Int16 = 15
    public static let notCoordinator: Int16 = 16
    public static let invalidTopicException: Int16 = 17
    public static let invalidRequiredAcks: Int16 = 21
    public static let illegalGeneration: Int16 = 22
    public static let inconsistentGroupProtocol: Int16 = 23
    public static let invalidGroupID: Int16 = 24
    public static let unknownMemberID: Int16 = 25
    public static let invalidSessionTimeout: Int16 = 26
    public static let rebalanceInProgress: Int16 = 27
    public static let invalidCommitOffsetSize: Int16 = 28
    public static let unsupportedVersion: Int16 = 35
    public static let topicAlreadyExists: Int16 = 36
    public static let invalidPartitions: Int16 = 37
    public static let invalidReplicationFactor: Int16 = 38
    public static let invalidConfig: Int16 = 40
    public static let invalidRequest: Int16 = 42
    public static let unsupportedForMessageFormat: Int16 = 43
    public static let outOfOrderSequenceNumber: Int16 = 45
    public static let duplicateSequenceNumber: Int16 = 46
    public static let invalidProducerEpoch: Int16 = 47
    public static let kafkaStorageError: Int16 = 56
    public static let unknownProducerID: Int16 = 59
    public static let groupIDNotFound: Int16 = 69
    public static let nonEmptyGroup: Int16 = 68
    public static let memberIDRequired: Int16 = 79
    public static let groupSubscribedToTopic: Int16 = 86
    public static let invalidReplicaAssignment: Int16 = 39
    public static let invalidRecord: Int16 = 87
    public static let leaderNotAvailable: Int16 = 5
    public static let policyViolation: Int16 = 44
    public static let groupMaxSizeReached: Int16 = 81
    public static let fencedInstanceID: Int16 = 82
    public static let unknownServerError: Int16 = -1

    public static func from(_ error: BrokerError) -> Int16 { error.code.kafkaCode }
}
