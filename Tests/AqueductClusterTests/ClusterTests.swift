import AqueductCluster
import AqueductEtcd
import AqueductReplication
import AqueductTestSupport
import Foundation
import Synchronization
import Testing

@Suite struct OwnershipPlanTests {
    @Test func ownersStayWhileLiveAndOrphansGoToTheLeastLoaded() {
        let logs: [UInt64] = Array(1...9)
        let fresh = OwnershipPlan.assign(logs: logs, liveNodes: [1, 2, 3], draining: [], owners: [:])
        #expect(Set(fresh.keys) == Set(logs))
        #expect(Dictionary(grouping: fresh.values, by: { $0 }).mapValues(\.count) == [1: 3, 2: 3, 3: 3], "spread evenly")
        // Node 2 dies: only its logs move, evenly to the others.
        let owners = fresh.filter { $0.value != 2 }
        let after = OwnershipPlan.assign(logs: logs, liveNodes: [1, 3], draining: [], owners: owners)
        for (log, owner) in owners { #expect(after[log] == owner, "log \(log) stays with its live owner") }
        #expect(Dictionary(grouping: after.values, by: { $0 }).mapValues(\.count) == [1: 5, 3: 4] || Dictionary(grouping: after.values, by: { $0 }).mapValues(\.count) == [1: 4, 3: 5])
        // Draining node 3: its logs go, and it gets none.
        let drained = OwnershipPlan.assign(logs: logs, liveNodes: [1, 3], draining: [3], owners: after)
        #expect(drained.values.allSatisfy { $0 == 1 })
        let steps = OwnershipPlan.steps(for: 3, plan: drained, owners: after)
        #expect(steps.release == after.filter { $0.value == 3 }.keys.sorted() && steps.claim.isEmpty)
        #expect(OwnershipPlan.steps(for: 1, plan: drained, owners: after.filter { $0.value != 3 }).claim == after.filter { $0.value == 3 }.keys.sorted())
    }

    @Test func aNodeThatJoinsTakesItsShareAndNothingElseMoves() {
        let logs: [UInt64] = Array(1...8)
        let allOnOne = Dictionary(uniqueKeysWithValues: logs.map { ($0, NodeID(1)) })
        let plan = OwnershipPlan.assign(logs: logs, liveNodes: [1, 2], draining: [], owners: allOnOne)
        #expect(plan.values.filter { $0 == 1 }.count == 4 && plan.values.filter { $0 == 2 }.count == 4)
        let balanced = OwnershipPlan.assign(logs: logs, liveNodes: [1, 2], draining: [], owners: plan)
        #expect(balanced == plan, "a balanced plan is stable")
        let third = OwnershipPlan.assign(logs: logs, liveNodes: [1, 2, 3], draining: [], owners: plan)
        #expect(third.values.filter { $0 == 3 }.count == 2)
        #expect(third.filter { plan[$0.key] != $0.value }.count == 2, "only the joining node's share moves")
    }

    /// Topologies are spread on their own: the node owning most partitions still runs
    /// its share of them, and they move off a dead node like logs do.
    @Test func eachKindIsSpreadOnItsOwn() {
        let partitions: [UInt64] = Array(1...7)
        let topologies: [UInt64] = [20, 21, 22]
        // Node 1 owns five partitions, node 2 two, node 3 none.
        let owners: [UInt64: NodeID] = [1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2]
        let plan = OwnershipPlan.assign(kinds: [partitions, topologies], liveNodes: [1, 2, 3], draining: [], owners: owners)
        #expect(Set(topologies.compactMap { plan[$0] }) == [1, 2, 3], "one topology per node, whatever their partitions")
        let mixed = OwnershipPlan.assign(logs: partitions + topologies, liveNodes: [1, 2, 3], draining: [], owners: owners)
        #expect(topologies.compactMap { mixed[$0] }.filter { $0 == 1 }.isEmpty, "planned with the partitions, node 1 would get none")
        // The node running topology 21 dies: 21 goes to a live node, the others stay.
        let dead = plan[21]!
        let after = OwnershipPlan.assign(kinds: [partitions, topologies], liveNodes: Set([1, 2, 3]).subtracting([dead]), draining: [],
                                         owners: plan.filter { $0.value != dead })
        #expect(after[21] != nil && after[21] != dead)
        #expect(after[20] == plan[20] || plan[20] == dead)
    }

    @Test func withoutEligibleNodesNothingIsAssignedAndDeletedLogsAreReleased() {
        #expect(OwnershipPlan.assign(logs: [1, 2], liveNodes: [1], draining: [1], owners: [:]).isEmpty)
        let steps = OwnershipPlan.steps(for: 1, plan: [:], owners: [7: 1])
        #expect(steps.release == [7], "a log that no longer exists is let go")
    }
}

@Suite(.enabled(if: EtcdProcess.isInstalled, "etcd is not installed: scripts/test.sh installs etcd-server"))
struct ClusterCoordinationTests {
    final class Node: Sendable {
        let membership: ClusterMembership
        let agent: OwnershipAgent
        final class Events: Sendable {
            let list = Mutex<[String]>([])
            func withLock<T>(_ body: (inout [String]) -> T) -> T { list.withLock { body(&$0) } }
        }
        let events = Events()

        init(_ id: NodeID, etcd: EtcdMetadataStore, logs: [UInt64]) {
            var configuration = ClusterMembership.Configuration()
            configuration.leaseSeconds = 2
            membership = ClusterMembership(me: ClusterMember(id: id, storage: "127.0.0.1:\(9000 + id)"), etcd: etcd, configuration: configuration)
            var agentConfiguration = OwnershipAgent.Configuration()
            agentConfiguration.reconcileMilliseconds = 100
            let events = events
            agent = OwnershipAgent(
                membership: membership, etcd: etcd, logs: { logs }, configuration: agentConfiguration,
                acquired: { log in events.withLock { $0.append("+\(log)") }; return true },
                released: { log in events.withLock { $0.append("-\(log)") } })
        }

        func start() async throws {
            try await membership.join()
            agent.start()
        }
    }

    func store(_ etcd: EtcdProcess, namespace: String) -> EtcdMetadataStore {
        var configuration = EtcdMetadataStore.Configuration(endpoint: etcd.endpoint)
        configuration.namespace = namespace
        return EtcdMetadataStore(configuration: configuration)
    }

    @Test func logsAreOwnedOnceAndMoveWhenANodeLeavesOrDrains() async throws {
        let etcdProcess = EtcdProcess(dataDirectory: temporaryDirectory() + "/etcd")
        try await etcdProcess.start()
        let etcd = store(etcdProcess, namespace: "/test-\(UUID().uuidString)/")
        let logs: [UInt64] = Array(1...6)
        let nodes = [1, 2, 3].map { Node($0, etcd: etcd, logs: logs) }
        for node in nodes { try await node.start() }
        func ownedOnce(by live: [Node]) -> Bool {
            let sets = live.map(\.agent.ownedLogs)
            return sets.reduce(0) { $0 + $1.count } == logs.count && Set(sets.flatMap { $0 }) == Set(logs)
        }
        // Node 1 joined first and took everything; the others take their share.
        try await waitUntil("every log owned by exactly one node, two each") {
            nodes.allSatisfy { $0.membership.liveNodes == [1, 2, 3] } && ownedOnce(by: nodes) && nodes.allSatisfy { $0.agent.ownedLogs.count == 2 }
        }
        // Node 2 leaves (its lease revoked, as when it dies and its lease runs out).
        let ofTwo = nodes[1].agent.ownedLogs
        nodes[1].agent.stop()
        await nodes[1].membership.leave()
        try await waitUntil("node 2's logs taken by the others") { ownedOnce(by: [nodes[0], nodes[2]]) }
        #expect(ofTwo.isSubset(of: nodes[0].agent.ownedLogs.union(nodes[2].agent.ownedLogs)))
        // Node 3 drains: its logs are released (stop writing) and node 1 takes them.
        let ofThree = nodes[2].agent.ownedLogs
        try await OwnershipAgent.setDraining(3, true, etcd: etcd)
        try await waitUntil("node 3 drained") { nodes[0].agent.ownedLogs == Set(logs) && nodes[2].agent.ownedLogs.isEmpty }
        let releasedByThree = nodes[2].events.withLock { $0 }
        #expect(ofThree.allSatisfy { releasedByThree.contains("-\($0)") })
        for node in nodes {
            node.agent.stop()
            await node.membership.leave()
        }
        await etcdProcess.stop()
    }

    @Test func aNodeWhoseLeaseIsLostStopsWritingAndJoinsAgain() async throws {
        let etcdProcess = EtcdProcess(dataDirectory: temporaryDirectory() + "/etcd")
        try await etcdProcess.start()
        let etcd = store(etcdProcess, namespace: "/test-\(UUID().uuidString)/")
        let node = Node(1, etcd: etcd, logs: [10, 11])
        try await node.start()
        try await waitUntil { node.agent.ownedLogs == [10, 11] }
        let first = try #require(node.membership.lease)
        // etcd drops the lease (as after a pause longer than its time to live). On a
        // loaded machine the lease may have expired already: the same loss.
        do { try await etcd.revokeLease(first) } catch is EtcdLeaseExpired {}
        try await waitUntil("the loss noticed and both logs released") {
            node.events.withLock { $0.contains("-10") && $0.contains("-11") }
        }
        try await waitUntil("joined again under a new lease and owning the logs again") {
            node.membership.lease.map { $0 != first } == true && node.agent.ownedLogs == [10, 11]
        }
        node.agent.stop()
        await node.membership.leave()
        await etcdProcess.stop()
    }

    @Test func aSecondProcessWithTheSameNodeIDIsRefused() async throws {
        let etcdProcess = EtcdProcess(dataDirectory: temporaryDirectory() + "/etcd")
        try await etcdProcess.start()
        let etcd = store(etcdProcess, namespace: "/test-\(UUID().uuidString)/")
        var configuration = ClusterMembership.Configuration()
        configuration.previousIncarnationWaitSeconds = 1
        let first = ClusterMembership(me: ClusterMember(id: 5, storage: "127.0.0.1:9005"), etcd: etcd, configuration: configuration)
        try await first.join()
        let second = ClusterMembership(me: ClusterMember(id: 5, storage: "127.0.0.1:9105"), etcd: etcd, configuration: configuration)
        let error = await #expect(throws: ClusterError.self) { try await second.join() }
        guard case .nodeIDInUse(5, _)? = error else {
            Issue.record("expected nodeIDInUse, got \(String(describing: error))")
            return
        }
        // Once the first leaves (its lease revoked), the id is free again.
        await first.leave()
        try await second.join()
        #expect(second.members[5]?.storage == "127.0.0.1:9105")
        await second.leave()
        await etcdProcess.stop()
    }
}
