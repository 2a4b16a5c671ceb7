import AqueductEtcd
import AqueductMetadata
import AqueductReplicaClient
import AqueductReplicaNode
import AqueductReplication
import AqueductTestSupport
import Foundation
import NIOCore
import Synchronization
import Testing

/// The writer, recovery and readers over real storage nodes on loopback (each a
/// ReplicaStore behind a StorageServer in this process) with segment metadata in an
/// embedded metadata store: the protocol's machines carried out over TCP.
@Suite struct ReplicatedSegmentTests {
    final class Cluster: Sendable {
        let directory = temporaryDirectory()
        let nodes = Mutex<[NodeID: (store: ReplicaStore, server: StorageServer)]>([:])
        let pool = StorageNodePool(connectTimeoutMilliseconds: 1_000)
        let metadata: SegmentMetadataStore

        init(nodes ids: [NodeID], metadataStore: (any MetadataStore)? = nil) async throws {
            metadata = SegmentMetadataStore(try metadataStore ?? EmbeddedMetadataStore(directory: directory + "/metadata"))
            for id in ids { try await start(id) }
        }

        func start(_ id: NodeID) async throws {
            let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: "\(directory)/node-\(id)"))
            let server = StorageServer(store: store, configuration: StorageListenerConfiguration())
            let address = try await server.start()
            nodes.withLock { $0[id] = (store, server) }
            pool.setAddress(StorageAddress(host: "127.0.0.1", port: address.port!), of: id)
        }

        /// The node goes away: its listener and connections close, its store shuts.
        func stop(_ id: NodeID) async {
            guard let node = nodes.withLock({ $0.removeValue(forKey: id) }) else { return }
            await node.server.stop()
            await node.store.close()
        }

        func store(_ id: NodeID) -> ReplicaStore? { nodes.withLock { $0[id]?.store } }

        func shutdown() async {
            for id in nodes.withLock({ Array($0.keys) }) { await stop(id) }
            await pool.close()
            try? await metadata.store.close()
        }

        /// Asks `node` directly for an entry.
        func read(_ segment: UInt64, _ entry: Int64, from node: NodeID) async -> StorageProtocol.Answer? {
            await withCheckedContinuation { continuation in
                pool.send(.read(segment: segment, entry: entry, fence: false), to: node, timeoutMilliseconds: 5_000) { result in
                    continuation.resume(returning: try? result.get())
                }
            }
        }
    }

    static let shape332 = try! QuorumShape(ensemble: 3, write: 3, ack: 2)

    func payload(_ i: Int) -> ByteBuffer { ByteBuffer(string: "record \(i)") }

    /// Appends `count` payloads concurrently; returns the entry id each got.
    func appendAll(_ writer: ReplicatedSegmentWriter, _ range: Range<Int>) async throws -> [Int: Int64] {
        try await withThrowingTaskGroup(of: (Int, Int64).self) { group in
            for i in range { group.addTask { (i, try await writer.append(payload(i))) } }
            var ids: [Int: Int64] = [:]
            for try await (i, id) in group { ids[i] = id }
            return ids
        }
    }

    @Test func entriesAreConfirmedByAQuorumAndReadableFromAnyReplica() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 7, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "test-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        let ids = try await appendAll(writer, 0..<300)
        #expect(Set(ids.values) == Set(0..<300), "every append got its own entry id, none skipped")
        let lastEntry = try await writer.close()
        #expect(lastEntry == 299)
        let (sealed, _) = try await cluster.metadata.load(7)
        #expect(sealed.state == .sealed && sealed.lastEntry == 299)

        let reader = ReplicaReader(transport: cluster.pool)
        for (i, id) in ids {
            let copy = try await reader.read(segment: 7, entry: id, metadata: sealed)
            #expect(copy.payload == payload(i))
        }
        // 3/3/2: a write set is the whole ensemble, so every node got every entry (the
        // third copy is sent even though two acknowledgements confirm it).
        try await waitUntil("every node holds all 300 entries") {
            [1, 2, 3].allSatisfy { cluster.store($0)?.summary(of: 7)?.lastEntry == 299 }
        }
        await cluster.shutdown()
    }

    @Test func anIdleWriterMakesItsNewestEntryReadable() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 8, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "test-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        #expect(try await writer.append(payload(0)) == 0)
        // The entry itself carried last-add-confirmed -1; only the explicit advertisement
        // of the idle writer moves the nodes to 0.
        let (metadata, _) = try await cluster.metadata.load(8)
        let reader = ReplicaReader(transport: cluster.pool)
        var seen: Int64 = -1
        let deadline = ContinuousClock.now + .seconds(60)
        while seen < 0, ContinuousClock.now < deadline {
            seen = await reader.readLastAddConfirmed(segment: 8, metadata: metadata, after: -1, waitMilliseconds: 10_000)
        }
        #expect(seen == 0)
        await cluster.shutdown()
    }

    @Test func aNodeLostMidSegmentIsReplacedByANewFragment() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3, 4])
        var configuration = SegmentWriterConfiguration()
        configuration.addTimeoutMilliseconds = 2_000
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 9, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [4], owner: "test-writer", transport: cluster.pool,
            metadataStore: cluster.metadata, configuration: configuration)
        let before = try await appendAll(writer, 0..<100)
        #expect(Set(before.values) == Set(0..<100))
        await cluster.stop(2)
        // The writer notices on its next add to node 2 (its connection closed); two of
        // three still confirm that add, and the change follows.
        var after = try await appendAll(writer, 100..<101)
        try await waitUntil("the ensemble change is in metadata") { (try? await cluster.metadata.load(9).metadata.fragments.count) == 2 }
        after.merge(try await appendAll(writer, 101..<200)) { a, _ in a }
        #expect(Set(after.values) == Set(100..<200), "appends go on through the change: no outage")
        let metadata = await writer.currentMetadata()
        #expect(metadata.fragments.count == 2)
        #expect(metadata.fragments.first?.ensemble == [1, 2, 3])
        #expect(metadata.fragments.last?.ensemble == [1, 4, 3], "node 4 takes node 2's position")
        let (stored, _) = try await cluster.metadata.load(9)
        #expect(stored.fragments == metadata.fragments, "the change is in metadata before it counts")
        // The replacement holds every entry of the new fragment.
        let firstOfNew = metadata.fragments.last!.firstEntry
        #expect(firstOfNew <= 101)
        for entry in firstOfNew..<200 {
            let answer = await cluster.read(9, entry, from: 4)
            guard case .read(.ok, let copy?)? = answer else {
                Issue.record("node 4 lacks entry \(entry): \(String(describing: answer))")
                break
            }
            #expect(copy.entry == entry)
        }
        #expect(try await writer.close() == 199)
        // Every entry is readable with node 2 gone.
        let (sealed, _) = try await cluster.metadata.load(9)
        let reader = ReplicaReader(transport: cluster.pool)
        for (i, id) in before.merging(after, uniquingKeysWith: { a, _ in a }) {
            #expect(try await reader.read(segment: 9, entry: id, metadata: sealed).payload == payload(i))
        }
        await cluster.shutdown()
    }

    @Test func recoveryClaimsFencesAndSealsWithEveryConfirmedEntry() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 10, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "old-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        let confirmed = try await appendAll(writer, 0..<100)
        // More appends in flight while the new owner takes over: each either is confirmed
        // (then it must survive) or fails with `fenced`.
        let late = Task {
            await withTaskGroup(of: (Int, Int64?).self) { group in
                for i in 100..<200 { group.addTask { (i, try? await writer.append(payload(i))) } }
                var ids: [Int: Int64] = [:]
                for await (i, id) in group { if let id { ids[i] = id } }
                return ids
            }
        }
        let outcome = try await SegmentRecoverer.recover(segment: 10, owner: "new-owner", transport: cluster.pool, metadataStore: cluster.metadata)
        let lateConfirmed = await late.value
        #expect(outcome.metadata.state == .sealed && outcome.metadata.owner == "new-owner")
        let everyConfirmed = confirmed.merging(lateConfirmed, uniquingKeysWith: { a, _ in a })
        #expect(everyConfirmed.values.allSatisfy { $0 <= outcome.lastEntry }, "nothing confirmed is past the seal")
        #expect(outcome.lastEntry >= 99)
        // The old writer can never get another entry confirmed.
        await #expect(throws: ReplicationError.fenced(segment: 10)) { try await writer.append(payload(999)) }
        await #expect(throws: ReplicationError.self) { try await writer.close() }
        // Everything up to the seal is readable, and what was confirmed is what was written.
        let reader = ReplicaReader(transport: cluster.pool)
        for entry in 0...outcome.lastEntry {
            _ = try await reader.read(segment: 10, entry: entry, metadata: outcome.metadata)
        }
        for (i, id) in everyConfirmed {
            #expect(try await reader.read(segment: 10, entry: id, metadata: outcome.metadata).payload == payload(i))
        }
        // Recovering again is a no-op returning the same end.
        let again = try await SegmentRecoverer.recover(segment: 10, owner: "third", transport: cluster.pool, metadataStore: cluster.metadata)
        #expect(again.lastEntry == outcome.lastEntry)
        await cluster.shutdown()
    }

    @Test func recoveryWorksWithANodeDownAndReadsFallBackToAnotherReplica() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 11, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "old-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        let confirmed = try await appendAll(writer, 0..<50)
        await cluster.stop(3)
        let outcome = try await SegmentRecoverer.recover(segment: 11, owner: "new-owner", transport: cluster.pool, metadataStore: cluster.metadata)
        #expect(outcome.lastEntry == 49, "two of three fenced cover 3/3/2; all 50 entries were confirmed")
        let reader = ReplicaReader(transport: cluster.pool)
        for (i, id) in confirmed {
            #expect(try await reader.read(segment: 11, entry: id, metadata: outcome.metadata).payload == payload(i))
        }
        await #expect(throws: ReplicationError.noSuchEntry(segment: 11, entry: 50), "past the seal") {
            try await reader.read(segment: 11, entry: 50, metadata: outcome.metadata)
        }
        // Past the end of an open segment, with a replica down: not "missing", since the
        // node that did not answer might have it.
        var open = outcome.metadata
        open.state = .open
        let error = await #expect(throws: ReplicationError.self) { try await reader.read(segment: 11, entry: 50, metadata: open) }
        guard case .unavailable? = error else {
            Issue.record("expected unavailable, got \(String(describing: error))")
            return
        }
        await cluster.shutdown()
    }

    /// A 2/2/2 segment (made while a node was down) loses one of its two nodes: recovery
    /// writes the entries it reads back to a spare instead of failing until the node
    /// returns, and the seal names the spare from there on.
    @Test func recoveryMovesAFailedNodesPlaceToASpare() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        var configuration = SegmentWriterConfiguration()
        configuration.idleAdvertiseMilliseconds = 600_000  // node 1 never learns the last entries are confirmed
        let pair = try QuorumShape(ensemble: 2, write: 2, ack: 2)
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 14, shape: pair, ensemble: [1, 2], spareNodes: [], owner: "old-writer", transport: cluster.pool,
            metadataStore: cluster.metadata, configuration: configuration)
        // The second batch carries the first's confirmation: recovery reads from entry 10.
        var confirmed = try await appendAll(writer, 0..<10)
        confirmed.merge(try await appendAll(writer, 10..<20)) { a, _ in a }
        await cluster.stop(2)
        await #expect(throws: ReplicationError.self, "without a spare nothing can make 2/2/2's ack quorum") {
            try await SegmentRecoverer.recover(segment: 14, owner: "no-spare", transport: cluster.pool, metadataStore: cluster.metadata)
        }
        let outcome = try await SegmentRecoverer.recover(
            segment: 14, owner: "new-owner", transport: cluster.pool, metadataStore: cluster.metadata, spareNodes: [3])
        #expect(outcome.lastEntry == 19)
        #expect(outcome.metadata.fragments.count == 2 && outcome.metadata.fragments.last?.ensemble == [1, 3])
        #expect(try await cluster.metadata.load(14).metadata.fragments == outcome.metadata.fragments, "sealed with the new fragment")
        let reader = ReplicaReader(transport: cluster.pool)
        for (i, id) in confirmed {
            #expect(try await reader.read(segment: 14, entry: id, metadata: outcome.metadata).payload == payload(i))
        }
        // The entries from the new fragment on are on node 3 itself.
        let first = try #require(outcome.metadata.fragments.last?.firstEntry)
        for entry in first...19 {
            guard case .read(.ok, _)? = await cluster.read(14, entry, from: 3) else { Issue.record("entry \(entry) is not on node 3"); continue }
        }
        await cluster.shutdown()
    }

    @Test func recoveryOfASegmentNothingWasWrittenToSealsItEmpty() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        _ = try await ReplicatedSegmentWriter.create(
            segment: 12, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "crashed-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        let outcome = try await SegmentRecoverer.recover(segment: 12, owner: "new-owner", transport: cluster.pool, metadataStore: cluster.metadata)
        #expect(outcome.lastEntry == -1)
        await cluster.shutdown()
    }

    @Test(.enabled(if: EtcdProcess.isInstalled, "etcd is not installed: scripts/test.sh installs etcd-server"))
    func withSegmentMetadataInEtcdAnEnsembleChangeAndATakeoverKeepEveryConfirmedEntry() async throws {
        let etcd = EtcdProcess(dataDirectory: temporaryDirectory() + "/etcd")
        try await etcd.start()
        let cluster = try await Cluster(nodes: [1, 2, 3, 4], metadataStore: EtcdMetadataStore(configuration: .init(endpoint: etcd.endpoint)))
        let writer = try await ReplicatedSegmentWriter.create(
            segment: 13, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [4], owner: "old-writer", transport: cluster.pool,
            metadataStore: cluster.metadata)
        var confirmed = try await appendAll(writer, 0..<50)
        await cluster.stop(3)
        confirmed.merge(try await appendAll(writer, 50..<51)) { a, _ in a }
        try await waitUntil("the ensemble change is in etcd") { (try? await cluster.metadata.load(13).metadata.fragments.count) == 2 }
        confirmed.merge(try await appendAll(writer, 51..<100)) { a, _ in a }
        let (changed, _) = try await cluster.metadata.load(13)
        #expect(changed.fragments.last?.ensemble == [1, 2, 4], "the ensemble change is in etcd")
        let outcome = try await SegmentRecoverer.recover(segment: 13, owner: "new-owner", transport: cluster.pool, metadataStore: cluster.metadata)
        #expect(outcome.lastEntry == 99)
        await #expect(throws: ReplicationError.fenced(segment: 13)) { try await writer.append(payload(999)) }
        let reader = ReplicaReader(transport: cluster.pool)
        for (i, id) in confirmed {
            #expect(try await reader.read(segment: 13, entry: id, metadata: outcome.metadata).payload == payload(i))
        }
        await cluster.shutdown()
        await etcd.stop()
    }

    @Test func aLostNodesCopiesAreReplacedAfterTheGracePeriod() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3, 4])
        var confirmed: [UInt64: [Int: Int64]] = [:]
        for segment in 20..<23 as Range<UInt64> {
            let writer = try await ReplicatedSegmentWriter.create(
                segment: segment, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [4], owner: "writer", transport: cluster.pool,
                metadataStore: cluster.metadata)
            confirmed[segment] = try await appendAll(writer, 0..<60)
            _ = try await writer.close()
        }
        await cluster.stop(2)
        let auditor = ReplicationAuditor(transport: cluster.pool, metadataStore: cluster.metadata)
        let early = try await auditor.audit(liveNodes: [1, 3, 4], nowMilliseconds: 1_000)
        #expect(early.underReplicated == 0 && early.lostNodes.isEmpty, "a node missing for less than the grace period may be restarting")
        let late = try await auditor.audit(liveNodes: [1, 3, 4], nowMilliseconds: 61_000)
        #expect(late == ReplicationAuditor.Report(underReplicated: 3, repaired: 3, failed: 0, lostNodes: [2]))
        let after = try await auditor.audit(liveNodes: [1, 3, 4], nowMilliseconds: 62_000)
        #expect(after.underReplicated == 0, "the count returns to zero")
        // Every entry is on node 4 now: readable with node 2 gone and node 1 stopped too.
        await cluster.stop(1)
        let reader = ReplicaReader(transport: cluster.pool)
        for segment in 20..<23 as Range<UInt64> {
            let (metadata, _) = try await cluster.metadata.load(segment)
            #expect(metadata.fragments == [Fragment(firstEntry: 0, ensemble: [1, 4, 3])])
            for (i, id) in confirmed[segment]! {
                #expect(try await reader.read(segment: segment, entry: id, metadata: metadata).payload == payload(i))
            }
        }
        await cluster.shutdown()
    }

    @Test func nodesDropSegmentsWhoseMetadataIsGone() async throws {
        let cluster = try await Cluster(nodes: [1, 2, 3])
        for segment in [30, 31] as [UInt64] {
            let writer = try await ReplicatedSegmentWriter.create(
                segment: segment, shape: Self.shape332, ensemble: [1, 2, 3], spareNodes: [], owner: "writer", transport: cluster.pool,
                metadataStore: cluster.metadata)
            _ = try await appendAll(writer, 0..<10)
            _ = try await writer.close()
        }
        try await waitUntil { [1, 2, 3].allSatisfy { cluster.store($0)?.segmentIDs == [30, 31] } }
        try await cluster.metadata.delete(30)
        for node in [1, 2, 3] {
            let store = try #require(cluster.store(node))
            let collected = try await ReplicaGarbage.collect(nodeSegments: { store.segmentIDs }, metadataStore: cluster.metadata) {
                try store.deleteSegments($0)
            }
            #expect(collected == [30])
            #expect(store.segmentIDs == [31])
        }
        await cluster.shutdown()
    }
}
