import AqueductAPI
/// The API versions this broker answers, advertised in ApiVersions. The maxima are
/// Kafka 3.0's (before topic ids in Fetch and the newer group protocol), so clients
/// choose versions whose fields Aqueduct fills in, and kafka-python, which guesses
/// the broker's release from these ranges, sees a 3.0 broker.
public enum KafkaAPIVersions {
    /// Versions served. A request outside its range gets UNSUPPORTED_VERSION.
    public static let served: [KafkaAPIKey: ClosedRange<Int16>] = [
        .produce: 3...9,
        .fetch: 4...12,
        .listOffsets: 1...7,
        .metadata: 0...11,
        .findCoordinator: 0...3,
        .apiVersions: 0...3,
        .createTopics: 2...7,
        .deleteTopics: 1...6,
        .initProducerId: 0...4,
        .describeConfigs: 1...4,
        .createPartitions: 0...3,
        .joinGroup: 0...7,
        .syncGroup: 0...5,
        .heartbeat: 0...4,
        .leaveGroup: 0...4,
        .offsetCommit: 0...8,
        .offsetFetch: 1...8,
        .describeGroups: 0...5,
        .listGroups: 0...4,
        .deleteGroups: 0...2,
        .alterConfigs: 0...2,
        .incrementalAlterConfigs: 0...1,
        .deleteRecords: 0...2,
        .offsetDelete: 0...0,
    ]

    /// What ApiVersions advertises: the served ranges, except that Produce starts at
    /// 0, as Kafka 4.0 still advertises it, because librdkafka turns compression off
    /// against a broker whose Produce range does not start at 0 (KAFKA-18659). v0–v2
    /// (message formats before v2) are refused if used.
    public static func advertised(_ key: KafkaAPIKey) -> ClosedRange<Int16>? {
        guard let range = served[key] else { return nil }
        return key == .produce ? 0...range.upperBound : range
    }

    /// Whether a request's version uses the flexible header (v2) and encodings.
    public static func isFlexible(_ key: KafkaAPIKey, _ version: Int16) -> Bool {
        key.firstFlexibleVersion.map { version >= $0 } ?? false
    }
}
