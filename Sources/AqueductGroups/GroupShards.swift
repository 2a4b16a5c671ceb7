import AqueductBroker
import Synchronization

/// Consumer groups split into shards, as Kafka splits them over the partitions of
/// `__consumer_offsets`: a group belongs to shard `hash(group) % count`, and each shard
/// is a `GroupCoordinator` over its own offsets log. On one node there is one shard,
/// always here. In cluster mode each shard's log is owned like a partition: the owner
/// activates the shard (opening the log fences the previous owner, then replays it)
/// and is the group's coordinator; the others answer NOT_COORDINATOR.
public final class GroupShards: Sendable {
    public let count: Int
    public let limits: GroupLimits
    private let coordinators: Mutex<[GroupCoordinator?]>

    /// One node: a single shard, coordinated here.
    public init(single coordinator: GroupCoordinator) {
        count = 1
        limits = coordinator.limits
        coordinators = Mutex([coordinator])
    }

    /// Cluster mode: `count` shards, none coordinated here until activated.
    public init(count: Int, limits: GroupLimits) {
        precondition(count > 0, "at least one group shard")
        self.count = count
        self.limits = limits
        coordinators = Mutex(Array(repeating: nil, count: count))
    }

    /// The shard a group belongs to: Kafka's rule (Java's `String.hashCode` of the
    /// group id, sign bit cleared, modulo the count), so groups spread as they would
    /// over a Kafka cluster's `__consumer_offsets` partitions.
    public static func shard(of groupID: String, count: Int) -> Int {
        var hash: Int32 = 0
        for unit in groupID.utf16 { hash = hash &* 31 &+ Int32(unit) }
        return Int(hash & 0x7fff_ffff) % count
    }

    public func shard(of groupID: String) -> Int { Self.shard(of: groupID, count: count) }

    /// The coordinator of the group's shard, when this node coordinates it now.
    public func coordinator(for groupID: String) -> GroupCoordinator? {
        let shard = shard(of: groupID)
        return coordinators.withLock { $0[shard] }
    }

    /// Whether this node coordinates the shard now.
    public func isActive(_ shard: Int) -> Bool {
        coordinators.withLock { shard >= 0 && shard < $0.count && $0[shard] != nil }
    }

    /// This node coordinates the shard from now on.
    public func activate(_ shard: Int, _ coordinator: GroupCoordinator) {
        let previous = coordinators.withLock { coordinators -> GroupCoordinator? in
            defer { coordinators[shard] = coordinator }
            return coordinators[shard]
        }
        previous?.close()
    }

    /// This node stops coordinating the shard: its groups' requests get NOT_COORDINATOR.
    public func deactivate(_ shard: Int) {
        let previous = coordinators.withLock { coordinators -> GroupCoordinator? in
            defer { coordinators[shard] = nil }
            return coordinators[shard]
        }
        previous?.close()
    }

    /// The shards coordinated here now.
    public var active: [GroupCoordinator] { coordinators.withLock { $0.compactMap { $0 } } }

    /// Every group coordinated here (with members, or with committed offsets).
    public func allGroups() -> [GroupStateMachine] { active.flatMap { $0.allGroups() } }

    /// Ticks every active shard until cancelled (sessions, rebalance deadlines, expiry).
    public func runTicker() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(GroupCoordinator.tickMilliseconds))
            for coordinator in active { coordinator.tick() }
        }
    }
}
