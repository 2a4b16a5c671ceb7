import AqueductEtcd
import AqueductMetadata
import AqueductReplication
import Foundation
import Logging
import Synchronization

/// A node as the cluster sees it: where its listeners are. Kept in etcd at
/// `cluster/nodes/<id>` under the node's lease, so it vanishes when the node stops
/// renewing (crashed, paused, cut off from etcd) for the lease's time to live.
public struct ClusterMember: Codable, Sendable, Hashable {
    public var id: NodeID
    /// `host:port` of its storage listener (replication), Kafka and HTTP listeners.
    public var storage: String
    public var kafka: String?
    public var http: String?
    /// Random per process start: tells a restarted node from a second process with the same id.
    public var incarnation: String

    public init(id: NodeID, storage: String, kafka: String? = nil, http: String? = nil, incarnation: String = UUID().uuidString) {
        self.id = id
        self.storage = storage
        self.kafka = kafka
        self.http = http
        self.incarnation = incarnation
    }
}

public enum ClusterError: Error, CustomStringConvertible, Sendable {
    case nodeIDInUse(NodeID, by: String)
    case notRegistered

    public var description: String {
        switch self {
        case .nodeIDInUse(let id, let other):
            "node id \(id) is in use by another running process (incarnation \(other)); give this node another --node-id, or stop the other one"
        case .notRegistered: "this node has not joined the cluster"
        }
    }
}

/// This node's membership: registered under a lease kept alive in the background, and
/// the live members, read and then followed with a watch. When the lease is lost (etcd
/// dropped it: this node was paused or cut off longer than its time to live), the node
/// is told at once (it must stop writing: others are taking its logs) and registers
/// again with a new lease.
public final class ClusterMembership: Sendable {
    public struct Configuration: Sendable {
        /// A node silent this long is gone for the others (etcd's lease TTL).
        public var leaseSeconds = 10
        /// How long a start waits for a previous incarnation's registration to expire.
        public var previousIncarnationWaitSeconds = 30

        public init() {}
    }

    struct State {
        var lease: Int64?
        var members: [NodeID: ClusterMember] = [:]
        var onChange: [@Sendable ([NodeID: ClusterMember]) -> Void] = []
        var onLeaseLost: [@Sendable () -> Void] = []
    }

    public var me: ClusterMember { current.withLock { $0 } }
    let current: Mutex<ClusterMember>
    public let configuration: Configuration
    let etcd: EtcdMetadataStore
    let logger: Logger
    let state = Mutex(State())
    let tasks = Mutex<[Task<Void, Never>]>([])
    static let prefix = "cluster/nodes/"

    public init(me: ClusterMember, etcd: EtcdMetadataStore, configuration: Configuration = .init(), logger: Logger = Logger(label: "aqueduct.cluster")) {
        current = Mutex(me)
        self.etcd = etcd
        self.configuration = configuration
        self.logger = logger
    }

    public static func key(_ id: NodeID) -> String { prefix + String(id) }

    /// The lease this node's keys live under (its registration, its logs' ownership).
    public var lease: Int64? { state.withLock { $0.lease } }
    public var members: [NodeID: ClusterMember] { state.withLock { $0.members } }
    public var liveNodes: Set<NodeID> { Set(members.keys) }

    public func onChange(_ callback: @escaping @Sendable ([NodeID: ClusterMember]) -> Void) {
        state.withLock { $0.onChange.append(callback) }
    }

    public func onLeaseLost(_ callback: @escaping @Sendable () -> Void) {
        state.withLock { $0.onLeaseLost.append(callback) }
    }

    /// Registers, then keeps the lease alive and follows the members until `leave()`.
    public func join() async throws {
        try await register()
        // The revision first, then the list: changes in between are replayed by the
        // watch (idempotently, in order), none is missed.
        let revision = try await etcd.currentRevision()
        let members = try await etcd.list(prefix: Self.prefix)
        var known: [NodeID: ClusterMember] = [:]
        for (_, value) in members {
            if let member = try? JSONDecoder().decode(ClusterMember.self, from: Data(value.value)) { known[member.id] = member }
        }
        publish(known)
        let keepAlive = Task { await self.keepLeaseAlive() }
        let follow = Task { await self.followMembers(afterRevision: revision) }
        tasks.withLock { $0 += [keepAlive, follow] }
    }

    /// Publishes this node's listeners once they are bound (a node joins before its
    /// Kafka listener exists: its storage is needed to open the logs).
    public func update(kafka: String?, http: String?) async throws {
        let updated = current.withLock { member -> ClusterMember in
            member.kafka = kafka
            member.http = http
            return member
        }
        guard let lease = lease else { throw ClusterError.notRegistered }
        try await etcd.commit([.put(key: Self.key(updated.id), value: EmbeddedMetadataStore.encodeJSON(updated), expect: .any)], lease: lease)
    }

    /// Leaves at once: the lease is revoked, so the node's keys (and its logs) go now.
    public func leave() async {
        for task in tasks.withLock({ $0 }) { task.cancel() }
        if let lease = state.withLock({ $0.lease }) { try? await etcd.revokeLease(lease) }
        state.withLock { $0.lease = nil }
    }

    private func register() async throws {
        let key = Self.key(me.id)
        let deadline = ContinuousClock.now + .seconds(configuration.previousIncarnationWaitSeconds)
        while let existing = try await etcd.getJSON(ClusterMember.self, key), existing.value.incarnation != me.incarnation {
            // A crashed earlier process of this node leaves its key until its lease runs out.
            guard ContinuousClock.now < deadline else { throw ClusterError.nodeIDInUse(me.id, by: existing.value.incarnation) }
            logger.notice("waiting for this node's previous registration to expire", metadata: ["node": "\(me.id)"])
            try await Task.sleep(for: .milliseconds(500))
        }
        let lease = try await etcd.grantLease(ttlSeconds: configuration.leaseSeconds)
        try await etcd.commit([.put(key: key, value: EmbeddedMetadataStore.encodeJSON(me), expect: .any)], lease: lease)
        state.withLock { $0.lease = lease }
        logger.info("joined the cluster", metadata: ["node": "\(me.id)", "storage": "\(me.storage)", "lease": "\(lease)"])
    }

    private func keepLeaseAlive() async {
        var lastRenewed = ContinuousClock.now
        let interval = Duration.milliseconds(configuration.leaseSeconds * 1_000 / 3)
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            guard let lease = state.withLock({ $0.lease }) else { return }
            do {
                try await etcd.keepAlive(lease)
                lastRenewed = .now
                continue
            } catch is EtcdLeaseExpired {
                // Dropped below: re-register.
            } catch {
                // etcd unreachable: the lease may still be alive; it is lost for sure
                // once a full time to live passed without a renewal.
                if ContinuousClock.now - lastRenewed < .seconds(configuration.leaseSeconds) { continue }
            }
            logger.warning("this node's lease is lost: it stops writing and joins again", metadata: ["node": "\(me.id)"])
            let callbacks = state.withLock { state -> [@Sendable () -> Void] in
                state.lease = nil
                return state.onLeaseLost
            }
            for callback in callbacks { callback() }
            while !Task.isCancelled {
                do {
                    try await register()
                    lastRenewed = .now
                    break
                } catch {
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    private func followMembers(afterRevision: UInt64) async {
        var after = afterRevision
        while !Task.isCancelled {
            do {
                for try await event in etcd.watch(prefix: Self.prefix, afterRevision: after) {
                    after = event.revision
                    guard let id = NodeID(event.key.dropFirst(Self.prefix.count)) else { continue }
                    var members = state.withLock { $0.members }
                    switch event.kind {
                    case .put(let value):
                        if let member = try? JSONDecoder().decode(ClusterMember.self, from: Data(value.value)) { members[id] = member }
                    case .delete:
                        members[id] = nil
                    }
                    publish(members)
                }
            } catch {
                // Fell behind etcd's history: read everything again.
                if let revision = try? await etcd.currentRevision(), let listed = try? await etcd.list(prefix: Self.prefix) {
                    var members: [NodeID: ClusterMember] = [:]
                    for (_, value) in listed {
                        if let member = try? JSONDecoder().decode(ClusterMember.self, from: Data(value.value)) { members[member.id] = member }
                    }
                    publish(members)
                    after = revision
                } else {
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    private func publish(_ members: [NodeID: ClusterMember]) {
        let callbacks = state.withLock { state -> [@Sendable ([NodeID: ClusterMember]) -> Void] in
            state.members = members
            return state.onChange
        }
        for callback in callbacks { callback(members) }
    }
}
