import AqueductAPI

/// What front ends other than Kafka (the HTTP API, the CLI, metrics) ask of the
/// consumer groups.
public protocol GroupDirectory: Sendable {
    /// Every known group (with members, or with committed offsets), by name.
    func groupSummaries() -> [GroupSummary]
    /// One group in detail, or nil when it is unknown.
    func describeGroup(_ name: String) -> GroupDescription?
    /// Stores offsets (the next offset to consume, per partition of `topic`) for a group
    /// without members, as Kafka's standalone consumers commit: durable before it returns.
    func commitOffsets(group: String, topic: String, offsets: [Int: Int64]) async throws(BrokerError)
    /// The group's committed offsets for `topic`, by partition.
    func committedOffsets(group: String, topic: String) -> [Int: Int64]
}
