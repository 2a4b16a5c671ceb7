import AqueductEtcd
import AqueductMetadata
import AqueductReplication
import Foundation
import Logging
import Synchronization

/// This node's side of log ownership: it reads who owns what (`cluster/owners/<log>`,
/// each under its owner's lease), which nodes drain (`cluster/draining/<node>`) and
/// which logs exist, computes `OwnershipPlan`, claims the logs the plan gives it by
/// compare-and-set (expecting no owner) under its own lease, and hands over the logs
/// the plan moves away. The server is told through `acquired` (open the writer: its
/// takeover fences the previous one) and `released` (stop writing), in that order of
/// safety: a log is released before its key is deleted, and claimed only after the
/// key is ours.
public final class OwnershipAgent: Sendable {
    public struct Configuration: Sendable {
        /// Reconcile at least this often, even without a change seen.
        public var reconcileMilliseconds: Int64 = 1_000

        public init() {}
    }

    /// Told a log is ours: true once its writer is open; false to give the claim back
    /// (the claim is retried at a later pass).
    public typealias AcquireHandler = @Sendable (UInt64) async -> Bool
    public typealias Handler = @Sendable (UInt64) async -> Void

    public static let ownersPrefix = "cluster/owners/"
    public static let drainingPrefix = "cluster/draining/"

    let membership: ClusterMembership
    let etcd: EtcdMetadataStore
    let logs: @Sendable () async throws -> [UInt64]
    let workloads: (@Sendable () async throws -> [UInt64])?
    let acquired: AcquireHandler
    let released: Handler
    /// Who owned what at the last pass (for clients: partition leaders).
    let lastOwners = Mutex<[UInt64: NodeID]>([:])
    let configuration: Configuration
    let logger: Logger
    let owned = Mutex<Set<UInt64>>([])
    let wake = Mutex<CheckedContinuation<Void, Never>?>(nil)
    let task = Mutex<Task<Void, Never>?>(nil)

    /// `logs`: the ids of every log that exists (the partitions to own). `workloads`:
    /// other things owned the same way (topologies), with ids from the same allocator,
    /// spread over the nodes on their own (a node's share of logs does not count).
    public init(
        membership: ClusterMembership, etcd: EtcdMetadataStore, logs: @escaping @Sendable () async throws -> [UInt64],
        workloads: (@Sendable () async throws -> [UInt64])? = nil,
        configuration: Configuration = .init(), logger: Logger = Logger(label: "aqueduct.ownership"),
        acquired: @escaping AcquireHandler, released: @escaping Handler
    ) {
        self.membership = membership
        self.etcd = etcd
        self.logs = logs
        self.workloads = workloads
        self.configuration = configuration
        self.logger = logger
        self.acquired = acquired
        self.released = released
    }

    public static func ownerKey(_ log: UInt64) -> String { ownersPrefix + String(log) }

    /// The logs this node owns now.
    public var ownedLogs: Set<UInt64> { owned.withLock { $0 } }

    /// Every log's owner as of the last pass (this node's own claims included).
    public var owners: [UInt64: NodeID] { lastOwners.withLock { $0 } }

    public func start() {
        membership.onChange { [weak self] _ in self?.poke() }
        membership.onLeaseLost { [weak self] in
            guard let self else { return }
            // Our keys went with the lease: others take the logs; stop writing now.
            let lost = self.owned.withLock { owned -> Set<UInt64> in
                defer { owned = [] }
                return owned
            }
            Task { for log in lost.sorted() { await self.released(log) } }
        }
        let loop = Task {
            while !Task.isCancelled {
                do {
                    try await self.reconcile()
                } catch {
                    self.logger.warning("cannot reconcile log ownership now", metadata: ["error": "\(error)"])
                }
                await self.waitForPoke(milliseconds: self.configuration.reconcileMilliseconds)
            }
        }
        task.withLock { $0 = loop }
    }

    public func stop() {
        task.withLock { $0?.cancel() }
        poke()
    }

    /// Something changed (a member, an owner, a new log): reconcile soon.
    public func poke() {
        wake.withLock { waiting in
            waiting?.resume()
            waiting = nil
        }
    }

    /// Marks `node` as draining (or not): its logs move to the others.
    public static func setDraining(_ node: NodeID, _ draining: Bool, etcd: EtcdMetadataStore) async throws {
        if draining {
            try await etcd.put(drainingPrefix + String(node), Array("draining".utf8))
        } else {
            try await etcd.delete(drainingPrefix + String(node))
        }
    }

    /// One pass: read, plan, release, claim.
    public func reconcile() async throws {
        guard let lease = membership.lease else { return }
        let me = membership.me.id
        let logIDs = try await logs()
        var owners: [UInt64: (node: NodeID, version: UInt64)] = [:]
        for (key, value) in try await etcd.list(prefix: Self.ownersPrefix) {
            guard let log = UInt64(key.dropFirst(Self.ownersPrefix.count)), let node = NodeID(String(decoding: value.value, as: UTF8.self)) else { continue }
            owners[log] = (node, value.version)
        }
        let draining = Set(try await etcd.list(prefix: Self.drainingPrefix).compactMap { NodeID($0.key.dropFirst(Self.drainingPrefix.count)) })
        var kinds = [logIDs]
        if let workloads { kinds.append(try await workloads()) }
        let plan = OwnershipPlan.assign(kinds: kinds, liveNodes: membership.liveNodes.union([me]), draining: draining, owners: owners.mapValues(\.node))
        let steps = OwnershipPlan.steps(for: me, plan: plan, owners: owners.mapValues(\.node))
        // Logs we run whose key no longer names us (it expired with a lease): stop.
        for log in ownedLogs where owners[log]?.node != me {
            owned.withLock { _ = $0.remove(log) }
            await released(log)
        }
        // Keys naming us for logs we do not run (left by an earlier process of this
        // node under a lease that has not expired yet): removed, to be claimed anew
        // under our own lease.
        for (log, owner) in owners where owner.node == me && !ownedLogs.contains(log) {
            try? await etcd.delete(Self.ownerKey(log), expect: .version(owner.version))
        }
        for log in steps.release {
            guard let owner = owners[log], ownedLogs.contains(log) else { continue }
            owned.withLock { _ = $0.remove(log) }
            await released(log)
            try? await etcd.delete(Self.ownerKey(log), expect: .version(owner.version))
            owners[log] = nil
            logger.info("handed a log over", metadata: ["log": "\(log)"])
        }
        for log in steps.claim {
            do {
                try await etcd.commit([.put(key: Self.ownerKey(log), value: Array(String(me).utf8), expect: .absent)], lease: lease)
            } catch MetadataError.conflict {
                continue  // another node claimed it first
            }
            guard await acquired(log) else {
                logger.warning("could not start writing a claimed log; giving the claim back", metadata: ["log": "\(log)"])
                if let claimed = try? await etcd.get(Self.ownerKey(log)) {
                    try? await etcd.delete(Self.ownerKey(log), expect: .version(claimed.version))
                }
                continue
            }
            owned.withLock { _ = $0.insert(log) }
            owners[log] = (me, 0)
            logger.info("took a log", metadata: ["log": "\(log)"])
        }
        lastOwners.withLock { $0 = owners.mapValues(\.node) }
    }

    private func waitForPoke(milliseconds: Int64) async {
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(milliseconds))
            self.poke()
        }
        await withCheckedContinuation { continuation in
            wake.withLock { $0 = continuation }
        }
        timer.cancel()
    }
}
