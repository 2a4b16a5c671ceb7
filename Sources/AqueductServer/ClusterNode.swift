import AqueductAPI
import AqueductBroker
import AqueductCluster
import AqueductEtcd
import AqueductGroups
import AqueductKafka
import AqueductLog
import AqueductMetadata
import AqueductReplicaClient
import AqueductReplicaNode
import AqueductReplicatedLog
import AqueductReplication
import AqueductTopologyService
import Foundation
import Logging
import NIOCore
import Synchronization

/// Cluster mode's pieces on one node: etcd as the metadata store, this node's storage
/// node (replica store + listener), connections to the others, the replicated segment
/// storage under the logs, membership, log ownership (which drives the broker's
/// writers), re-replication (run by the lowest live node) and garbage collection.
final class ClusterNode: Sendable {
    let settings: ClusterSettings
    let nodeID: NodeID
    let etcd: EtcdMetadataStore
    let replicaStore: ReplicaStore
    let storageServer: StorageServer
    let storageAddress: String
    let pool: StorageNodePool
    let segments: ReplicatedSegmentStorage
    let live: LiveNodes
    let logger: Logger
    let running = Mutex<(membership: ClusterMembership, agent: OwnershipAgent, tasks: [Task<Void, Never>])?>(nil)
    /// Consumer groups: their shards, and the offsets log of each (owned like partitions).
    let groups = Mutex<(shards: GroupShards, logIDs: [UInt64], logs: LogStore)?>(nil)
    /// Topologies, owned like logs once the HTTP listener runs (containers call it).
    let topologies = Mutex<ClusterTopologies?>(nil)
    /// Tasks started with the topologies (program copies, following records).
    let topologyTasks = Mutex<[Task<Void, Never>]>([])

    /// The live storage nodes, as membership last saw them.
    final class LiveNodes: Sendable {
        let nodes = Mutex<Set<NodeID>>([])
        var current: Set<NodeID> { nodes.withLock { $0 } }
    }

    private init(
        settings: ClusterSettings, nodeID: NodeID, etcd: EtcdMetadataStore, replicaStore: ReplicaStore, storageServer: StorageServer,
        storageAddress: String, pool: StorageNodePool, segments: ReplicatedSegmentStorage, live: LiveNodes, logger: Logger
    ) {
        self.settings = settings
        self.nodeID = nodeID
        self.etcd = etcd
        self.replicaStore = replicaStore
        self.storageServer = storageServer
        self.storageAddress = storageAddress
        self.pool = pool
        self.segments = segments
        self.live = live
        self.logger = logger
    }

    /// Reaches etcd, opens the replica store and starts the storage listener.
    static func open(_ settings: ClusterSettings, nodeID: NodeID, dataDirectory: String, logger: Logger) async throws -> ClusterNode {
        var etcdConfiguration = EtcdMetadataStore.Configuration(endpoint: settings.etcdEndpoint)
        etcdConfiguration.namespace = settings.namespace
        let etcd = EtcdMetadataStore(configuration: etcdConfiguration, logger: logger)
        do {
            _ = try await etcd.currentRevision()
        } catch {
            throw ConfigurationError(message: "cannot reach etcd at \(settings.etcdEndpoint): \(error); start etcd (scripts/cluster.sh does) or fix --cluster")
        }
        let replicaStore = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: dataDirectory + "/replica"), logger: logger)
        var listener = StorageListenerConfiguration()
        listener.host = settings.storageHost
        listener.port = settings.storagePort
        let storageServer = StorageServer(store: replicaStore, configuration: listener, logger: logger)
        let bound: Int
        do {
            bound = try await storageServer.start().port ?? settings.storagePort
        } catch {
            await replicaStore.close()
            throw ConfigurationError(message: "cannot listen for storage traffic on \(settings.storageHost):\(settings.storagePort): \(error); free the port or set --storage-listen")
        }
        let pool = StorageNodePool(logger: logger)
        let live = LiveNodes()
        let segments = ReplicatedSegmentStorage(
            configuration: ReplicatedStorageConfiguration(shape: settings.shape, owner: "node-\(nodeID)"), transport: pool,
            metadataStore: SegmentMetadataStore(etcd), liveNodes: { Array(live.current) }, logger: logger)
        return ClusterNode(
            settings: settings, nodeID: nodeID, etcd: etcd, replicaStore: replicaStore, storageServer: storageServer,
            storageAddress: "\(settings.storageHost):\(bound)", pool: pool, segments: segments, live: live, logger: logger)
    }

    static let offsetsLogsKey = "/cluster/offsets-logs"

    /// The cluster's consumer-group shards: one offsets log each, created once for the
    /// whole cluster (the first node to start creates them; the count is fixed then).
    /// None is coordinated here until this node owns its log.
    func openGroups(logs: LogStore, limits: GroupLimits) async throws -> GroupShards {
        var ids: [UInt64]
        if let stored = try await etcd.getJSON([UInt64].self, Self.offsetsLogsKey) {
            ids = stored.value
        } else {
            ids = try await logs.allocateIDs(settings.groupShards)
            var operations = try ids.enumerated().map { shard, id in
                try logs.newLogRecordOperation(id: id, name: "\(OffsetStore.logName)-\(shard)", configuration: OffsetStore.logConfiguration)
            }
            operations.append(.put(key: Self.offsetsLogsKey, value: try EmbeddedMetadataStore.encodeJSON(ids), expect: .absent))
            do {
                _ = try await etcd.commit(operations)
                logger.info("consumer group shards created", metadata: ["shards": "\(ids.count)"])
            } catch MetadataError.conflict(let key, let expected, let actual) {
                // Another node created them first.
                guard let stored = try await etcd.getJSON([UInt64].self, Self.offsetsLogsKey) else {
                    throw MetadataError.conflict(key: key, expected: expected, actualVersion: actual)
                }
                ids = stored.value
            }
        }
        if ids.count != settings.groupShards {
            logger.notice("the cluster keeps the consumer group shard count it was created with", metadata: [
                "shards": "\(ids.count)", "configured": "\(settings.groupShards)",
            ])
        }
        _ = try await logs.adopt(ids: ids.filter { logs.log($0) == nil })
        let defaultShape = settings.shape
        segments.setShapeProvider { logID in logs.log(logID).flatMap { Self.shape(of: $0.configuration, default: defaultShape) } }
        let shards = GroupShards(count: ids.count, limits: limits)
        groups.withLock { $0 = (shards, ids, logs) }
        return shards
    }

    /// The shape a log's configuration asks for (a topic's `replication.*`), the unset
    /// parts from the cluster's; nil when it asks for nothing of its own.
    static func shape(of configuration: LogConfiguration, default shape: QuorumShape) -> QuorumShape? {
        guard configuration.replicationEnsemble != nil || configuration.replicationWrite != nil || configuration.replicationAck != nil else { return nil }
        let ensemble = configuration.replicationEnsemble ?? shape.ensembleSize
        let write = configuration.replicationWrite ?? min(shape.writeQuorumSize, ensemble)
        let ack = configuration.replicationAck ?? min(shape.ackQuorumSize, write)
        return try? QuorumShape(ensemble: ensemble, write: write, ack: ack)
    }

    /// This node owns a log now: a partition's (the broker writes it) or a group
    /// shard's offsets log (this node coordinates the shard's groups).
    private func acquire(_ logID: UInt64, broker: Broker) async -> Bool {
        // A new cluster's first node must not make its first segments on fewer nodes
        // than the ensemble (degraded from the start) while the others are starting.
        await storageNodesAtStart()
        do {
            if let (shards, ids, logs) = groups.withLock({ $0 }), let shard = ids.firstIndex(of: logID) {
                guard let log = logs.log(logID) else { return false }
                let store = try await OffsetStore.open(log: log, offsetsMax: shards.limits.offsetsMax, logger: logger)
                shards.activate(shard, GroupCoordinator(offsets: store, limits: shards.limits, logger: logger))
                logger.info("now coordinating consumer groups", metadata: ["shard": "\(shard)", "groups": "\(store.groups.count)"])
                return true
            }
            if let topologies = topologies.withLock({ $0 }), topologies.isTopology(logID) {
                return await topologies.acquire(logID)
            }
            try await broker.acquire(logID: logID)
            return true
        } catch {
            logger.warning("cannot open the writer of an owned log", metadata: ["log": "\(logID)", "error": "\(error)"])
            return false
        }
    }

    private func release(_ logID: UInt64, broker: Broker) {
        if let (shards, ids, _) = groups.withLock({ $0 }), let shard = ids.firstIndex(of: logID) {
            shards.deactivate(shard)
            logger.info("no longer coordinating consumer groups", metadata: ["shard": "\(shard)"])
            return
        }
        if let topologies = topologies.withLock({ $0 }), topologies.isTopology(logID) {
            topologies.release(logID)
            return
        }
        broker.release(logID: logID)
    }

    /// The node writing a partition now; nil while it moves.
    func owner(topic: String, partition: Int, broker: Broker) -> NodeID? {
        if broker.owns(topic: topic, partition: partition) { return nodeID }
        guard let log = broker.logID(topic: topic, partition: partition) else { return nil }
        return running.withLock { $0?.agent }?.owners[log]
    }

    /// The node coordinating a group now (the owner of its shard's log).
    func coordinator(group: String) -> NodeID? {
        guard let (shards, ids, _) = groups.withLock({ $0 }) else { return nil }
        let shard = shards.shard(of: group)
        if shards.isActive(shard) { return nodeID }
        return running.withLock { $0?.agent }?.owners[ids[shard]]
    }

    /// Joins: registers (storage address first; `publish` adds the Kafka and HTTP
    /// listeners once bound), follows members (their storage addresses feed the
    /// connection pool), and starts owning logs.
    func join(broker: Broker) async throws {
        let kafka: String? = nil
        let http: String? = nil
        var membershipConfiguration = ClusterMembership.Configuration()
        membershipConfiguration.leaseSeconds = settings.leaseSeconds
        let membership = ClusterMembership(
            me: ClusterMember(id: nodeID, storage: storageAddress, kafka: kafka, http: http), etcd: etcd,
            configuration: membershipConfiguration, logger: logger)
        let pool = pool
        let live = live
        let segments = segments
        membership.onChange { members in
            live.nodes.withLock { $0 = Set(members.keys) }
            segments.liveNodesChanged(Set(members.keys))
            for (id, member) in members {
                guard let colon = member.storage.lastIndex(of: ":"), let port = Int(member.storage[member.storage.index(after: colon)...]) else { continue }
                pool.setAddress(StorageAddress(host: String(member.storage[..<colon]), port: port), of: id)
            }
        }
        let groupLogs = groups.withLock { $0?.logIDs ?? [] }
        let agent = OwnershipAgent(
            membership: membership, etcd: etcd, logs: { broker.partitionLogIDs() + groupLogs },
            workloads: { try await self.topologies.withLock({ $0 })?.ids() ?? [] }, logger: logger,
            acquired: { log in await self.acquire(log, broker: broker) },
            released: { log in self.release(log, broker: broker) })
        broker.onPartitionsChanged { agent.poke() }
        try await membership.join()
        agent.start()
        let tasks = [
            Task { await self.followTopics(broker: broker, agent: agent) },
            Task { await self.auditAndCollect(membership: membership, agent: agent) },
        ]
        running.withLock { $0 = (membership, agent, tasks) }
    }

    /// Topologies in the cluster: this node starts those it comes to own, copies
    /// uploaded programs, and hears of new topologies at once (not at the next pass).
    func makeTopologies(master: TopologyMaster, token: String?, logs: LogStore) -> ClusterTopologies {
        let programs = ProgramCopies(
            directory: master.programsDirectory, bytesMax: master.programBytesMax, etcd: etcd, nodeID: nodeID, token: token,
            addresses: { [weak self] in self?.httpAddresses() ?? [:] },
            install: { name, file in _ = try master.installProgram(name: name, uploadedFile: file) }, logger: logger)
        return ClusterTopologies(
            master: master, programs: programs, etcd: etcd, nodeID: nodeID, allocateID: { try await logs.allocateIDs(1)[0] },
            owners: { [weak self] in self?.running.withLock { $0?.agent }?.owners ?? [:] },
            poke: { [weak self] in self?.running.withLock { $0?.agent }?.poke() }, logger: logger)
    }

    /// Starts owning topologies (once containers can reach this node's HTTP listener).
    func attach(_ clusterTopologies: ClusterTopologies) {
        topologies.withLock { $0 = clusterTopologies }
        let etcd = etcd
        let logger = logger
        let follow = Task {
            await etcd.follow(prefix: MetadataTopologyRegistry.prefix, what: "topologies", logger: logger) { clusterTopologies.poke() }
        }
        topologyTasks.withLock { $0 = [follow, Task { await clusterTopologies.programs.run() }] }
    }

    /// Live nodes' HTTP listeners.
    func httpAddresses() -> [NodeID: String] {
        guard let membership = running.withLock({ $0?.membership }) else { return [:] }
        return membership.members.compactMapValues(\.http)
    }

    static let httpTokenKey = "/cluster/http-token"

    /// The token nodes present to each other over HTTP when the API needs tokens (to
    /// copy programs), made once for the cluster; whoever can read etcd can act as a
    /// node anyway.
    func clusterHTTPToken() async throws -> String {
        if let stored = try await etcd.get(Self.httpTokenKey) { return String(decoding: stored.value, as: UTF8.self) }
        var random = SystemRandomNumberGenerator()
        let token = (0..<4).map { _ in String(random.next() as UInt64, radix: 16) }.joined()
        do {
            try await etcd.put(Self.httpTokenKey, Array(token.utf8), expect: .absent)
            return token
        } catch MetadataError.conflict {
            guard let stored = try await etcd.get(Self.httpTokenKey) else { throw MetadataError.conflict(key: Self.httpTokenKey, expected: .absent, actualVersion: nil) }
            return String(decoding: stored.value, as: UTF8.self)
        }
    }

    func publish(kafka: String?, http: String?) async throws {
        try await running.withLock { $0?.membership }?.update(kafka: kafka, http: http)
    }

    private let startGate = Mutex<Task<Void, Never>?>(nil)

    /// Waits once, at start, for the storage nodes a segment needs (3 for 3/3/2):
    /// nodes of a new cluster start one by one. Gives up after two lease periods: a
    /// node restarting into a cluster that lost a node goes on with fewer.
    func storageNodesAtStart() async {
        let gate = startGate.withLock { gate in
            if gate == nil { gate = Task { await self.waitForStorageNodes(seconds: 2 * self.settings.leaseSeconds) } }
            return gate!
        }
        await gate.value
    }

    private func waitForStorageNodes(seconds: Int) async {
        var waited = 0
        while live.current.count < settings.shape.ensembleSize && waited < seconds * 2 {
            if waited % 10 == 0 {
                logger.notice("waiting for storage nodes to join", metadata: ["live": "\(live.current.count)", "needed": "\(settings.shape.ensembleSize)"])
            }
            waited += 1
            try? await Task.sleep(for: .milliseconds(500))
            if Task.isCancelled { return }
        }
    }

    /// Topics created, grown or deleted on other nodes.
    private func followTopics(broker: Broker, agent: OwnershipAgent) async {
        await etcd.follow(prefix: "/topics/", what: "topics", logger: logger) {
            try await broker.refreshTopics()
            agent.poke()
        }
    }

    static let removedPrefix = "cluster/removed/"
    let auditWake = Mutex<CheckedContinuation<Void, Never>?>(nil)

    /// Runs the next audit pass now (a node was removed).
    func auditNow() {
        auditWake.withLock { waiting in
            waiting?.resume()
            waiting = nil
        }
    }

    /// Every `auditSeconds` (or when a node is removed): every node rolls the segments it
    /// writes whose earlier fragments name a lost node; the lowest live node
    /// re-replicates sealed segments that lost a copy; every node drops the segments no
    /// metadata names any more.
    private func auditAndCollect(membership: ClusterMembership, agent: OwnershipAgent) async {
        let auditor = ReplicationAuditor(transport: pool, metadataStore: SegmentMetadataStore(etcd), logger: logger)
        while !Task.isCancelled {
            let timer = Task {
                try? await Task.sleep(for: .seconds(self.settings.auditSeconds))
                self.auditNow()
            }
            await withCheckedContinuation { continuation in auditWake.withLock { $0 = continuation } }
            timer.cancel()
            if Task.isCancelled { return }
            for removed in (try? await etcd.list(prefix: Self.removedPrefix)) ?? [] {
                if let id = NodeID(removed.key.dropFirst(Self.removedPrefix.count)) { auditor.nodeRemoved(id) }
            }
            let liveNodes = membership.liveNodes
            await rollSegmentsNamingLostNodes(owned: agent.ownedLogs, live: Set(liveNodes))
            if liveNodes.min() == nodeID {
                let now = Int64(Date().timeIntervalSince1970 * 1_000)
                if let report = try? await auditor.audit(liveNodes: liveNodes.sorted(), nowMilliseconds: now), report.underReplicated > 0 {
                    logger.info("re-replication pass", metadata: [
                        "underReplicated": "\(report.underReplicated)", "repaired": "\(report.repaired)", "failed": "\(report.failed)",
                    ])
                }
            }
            let store = replicaStore
            _ = try? await ReplicaGarbage.collect(nodeSegments: { store.segmentIDs }, metadataStore: SegmentMetadataStore(etcd)) {
                try store.deleteSegments($0)
            }
        }
    }

    /// Rolls the active segment of every log this node writes when the segment should
    /// be repaired (an earlier fragment names a lost node) or was made degraded.
    private func rollSegmentsNamingLostNodes(owned: Set<UInt64>, live: Set<NodeID>) async {
        guard let logs = groups.withLock({ $0?.logs }) else { return }
        for logID in owned.sorted() {
            guard let log = logs.log(logID), let active = log.activeSegmentID, await segments.shouldRoll(active, live: live) else { continue }
            do {
                try await log.rollActiveSegment()
            } catch {
                logger.warning("cannot roll a segment that lost a copy; retrying at the next audit", metadata: ["segment": "\(active)", "error": "\(error)"])
            }
        }
    }

    func stop() async {
        for task in topologyTasks.withLock({ $0 }) { task.cancel() }
        if let running = running.withLock({ $0 }) {
            for task in running.tasks { task.cancel() }
            auditNow()
            running.agent.stop()
            await running.membership.leave()
        }
        await pool.close()
        await storageServer.stop()
        await replicaStore.close()
    }
}

/// What Kafka clients learn of the cluster: live members' Kafka listeners and each
/// partition's owner as its leader; a group's coordinator is the owner of its shard.
struct ClusterKafkaView: KafkaClusterView {
    let node: ClusterNode
    let broker: Broker

    func brokers() -> [(id: Int32, host: String, port: Int32)] {
        guard let membership = node.running.withLock({ $0?.membership }) else { return [] }
        return membership.members.values.sorted { $0.id < $1.id }.compactMap { member in
            guard let kafka = member.kafka, let colon = kafka.lastIndex(of: ":"), let port = Int32(kafka[kafka.index(after: colon)...]) else { return nil }
            return (Int32(member.id), String(kafka[..<colon]), port)
        }
    }

    func leader(topic: String, partition: Int) -> Int32? {
        node.owner(topic: topic, partition: partition, broker: broker).map(Int32.init)
    }

    func coordinator(group: String) -> Int32? { node.coordinator(group: group).map(Int32.init) }
}

/// `GET /v1/cluster` in cluster mode.
struct ClusterStatusSource: ClusterDirectory {
    let node: ClusterNode
    let broker: Broker

    func httpAddress(topic: String, partition: Int) -> String? {
        httpAddress(of: node.owner(topic: topic, partition: partition, broker: broker))
    }

    func httpAddress(group: String) -> String? {
        httpAddress(of: node.coordinator(group: group))
    }

    func httpAddress(topology: String) -> String? {
        httpAddress(of: node.topologies.withLock { $0 }?.owner(of: topology))
    }

    /// Another live node's HTTP listener; nil for this node or an unknown one.
    private func httpAddress(of id: NodeID?) -> String? {
        guard let id, id != node.nodeID, let membership = node.running.withLock({ $0?.membership }) else { return nil }
        return membership.members[id]?.http
    }

    func otherNodesHTTP() -> [String] {
        guard let membership = node.running.withLock({ $0?.membership }) else { return [] }
        return membership.members.values.filter { $0.id != node.nodeID }.sorted { $0.id < $1.id }.compactMap(\.http)
    }

    func setDraining(_ id: Int, _ draining: Bool) async throws(BrokerError) {
        do {
            try await OwnershipAgent.setDraining(id, draining, etcd: node.etcd)
        } catch {
            throw BrokerError(.unavailable, "cannot record the drain in etcd: \(error)", hint: "check that etcd is running, then retry")
        }
        node.running.withLock { $0?.agent }?.poke()
    }

    func remove(_ id: Int) async throws(BrokerError) {
        guard !node.live.current.contains(id) else {
            throw BrokerError(.invalidRequest, "node \(id) is live; stop it before removing it", hint: "drain it first: aqueduct cluster drain \(id)")
        }
        do {
            try await node.etcd.put(ClusterNode.removedPrefix + String(id), Array("removed".utf8))
        } catch {
            throw BrokerError(.unavailable, "cannot record the removal in etcd: \(error)", hint: "check that etcd is running, then retry")
        }
        node.auditNow()
    }

    func status() async throws(BrokerError) -> ClusterStatusJSON {
        guard let membership = node.running.withLock({ $0?.membership }) else {
            throw BrokerError(.unavailable, "this node has not joined the cluster yet", hint: "retry in a moment")
        }
        let members = membership.members
        let live = Set(members.keys)
        var partitions: [ClusterStatusJSON.Partition] = []
        for topic in broker.topicNames() {
            for partition in 0..<((try? broker.partitionCount(topic)) ?? 0) {
                partitions.append(.init(topic: topic, partition: partition, owner: node.owner(topic: topic, partition: partition, broker: broker)))
            }
        }
        // Segments naming a node that is not live now (re-replicated once it has been
        // gone past the grace period).
        var underReplicated = 0
        var referenced: Set<NodeID> = []
        if let stored = try? await node.etcd.list(prefix: SegmentMetadataStore.prefix) {
            let segments = stored.compactMap { try? JSONDecoder().decode(SegmentMetadata.self, from: Data($0.value.value)) }
            referenced = Set(segments.flatMap { $0.fragments.flatMap(\.ensemble) })
            let gone = referenced.subtracting(live)
            underReplicated = segments.filter {
                ReplicaRepair.isUnderReplicated(fragments: $0.fragments, sealed: $0.state == .sealed, lastEntry: $0.lastEntry ?? -1, lostNodes: gone)
            }.count
        }
        var nodes = members.values.sorted { $0.id < $1.id }.map {
            ClusterStatusJSON.Node(id: $0.id, storage: $0.storage, kafka: $0.kafka, http: $0.http, live: true)
        }
        for gone in referenced.subtracting(live).sorted() {
            nodes.append(.init(id: gone, storage: nil, kafka: nil, http: nil, live: false))
        }
        return ClusterStatusJSON(mode: "cluster", nodeID: node.nodeID, nodes: nodes, partitions: partitions, underReplicatedSegments: underReplicated)
    }
}

extension MetadataStore {
    /// Runs `changed` now and after every change under `prefix`, until cancelled: the
    /// watch starts from a revision read before the first run, so no change in between
    /// is missed; a failure (etcd away) is retried after a second.
    func follow(prefix: String, what: String, logger: Logger, _ changed: @Sendable () async throws -> Void) async {
        while !Task.isCancelled {
            do {
                let revision = try await currentRevision()
                try await changed()
                for try await _ in watch(prefix: prefix, afterRevision: revision) { try await changed() }
            } catch {
                logger.debug("following \(what): retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
