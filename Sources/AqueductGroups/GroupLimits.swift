/// Every bound on what clients can make the group coordinator keep, with Kafka's
/// setting where there is one. Configured under `groups.*` and `offsets.*`
/// (docs/CONFIGURATION.md); each refusal is counted in
/// `aqueduct_groups_refused_total{reason}`.
public struct GroupLimits: Sendable, Equatable {
    /// Session timeouts a member may ask for (Kafka's group.min/max.session.timeout.ms).
    /// Kafka's defaults: 6 s to 30 min; outside, INVALID_SESSION_TIMEOUT.
    public var sessionTimeoutMilliseconds: ClosedRange<Int64> = 6_000...1_800_000
    /// How long the first rebalance of an empty group waits for more members, again
    /// while they keep coming (Kafka's group.initial.rebalance.delay.ms, 3 s).
    public var initialRebalanceDelayMilliseconds: Int64 = 3_000
    /// Members of one group, counting ids handed out with MEMBER_ID_REQUIRED and not
    /// yet used (Kafka's group.max.size); past it, GROUP_MAX_SIZE_REACHED.
    public var membersMax = 1_000
    /// Longest group id, group instance id, protocol type and protocol name, in bytes:
    /// these are kept and shown to other clients, some in 16-bit strings.
    public var identifierBytesMax = 255
    /// Most bytes one member's protocols (names and metadata) or assignment may take.
    public var memberMetadataBytesMax = 1 << 20
    /// Groups with members at once; a join that would start another is refused with
    /// COORDINATOR_NOT_AVAILABLE until one empties.
    public var groupsMax = 10_000
    /// Bytes all groups' members may keep (ids, protocols, metadata, assignments);
    /// a join past it is refused with COORDINATOR_NOT_AVAILABLE.
    public var stateBytesMax = 256 << 20
    /// How long committed offsets of a group without members are kept after the later
    /// of their commit and the group becoming empty (Kafka's offsets.retention.minutes,
    /// 7 days, KIP-211).
    public var offsetsRetentionMilliseconds: Int64 = 7 * 24 * 3_600_000
    /// Longest metadata string of one committed offset (Kafka's
    /// offset.metadata.max.bytes); past it, OFFSET_METADATA_TOO_LARGE.
    public var offsetMetadataBytesMax = 4_096
    /// Committed offsets kept in all (group × partition); a commit that would add
    /// more is refused with INVALID_COMMIT_OFFSET_SIZE.
    public var offsetsMax = 1_000_000

    public init() {}
}
