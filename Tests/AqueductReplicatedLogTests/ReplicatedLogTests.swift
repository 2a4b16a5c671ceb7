import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductMetadata
import AqueductRecords
import AqueductReplicaClient
import AqueductReplicaNode
import AqueductReplicatedLog
import AqueductReplication
import AqueductStorage
import AqueductTestSupport
import Foundation
import NIOCore
import Synchronization
import Testing

/// Logs (AqueductLog, unchanged) whose segments are replicated over real storage nodes
/// on loopback: offsets, rolls, reads by offset from replicas, a second node taking a
/// log over, a storage node lost mid-segment.
@Suite struct ReplicatedLogTests {
    /// Storage nodes in this process, and the metadata store every "server" shares
    /// (etcd's role).
    final class Nodes: Sendable {
        let directory = temporaryDirectory()
        let running = Mutex<[NodeID: (store: ReplicaStore, server: StorageServer, address: StorageAddress)]>([:])
        let metadata: EmbeddedMetadataStore

        init(_ ids: [NodeID]) async throws {
            metadata = try EmbeddedMetadataStore(directory: directory + "/metadata")
            for id in ids {
                let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: "\(directory)/node-\(id)"))
                let server = StorageServer(store: store, configuration: StorageListenerConfiguration())
                let address = try await server.start()
                running.withLock { $0[id] = (store, server, StorageAddress(host: "127.0.0.1", port: address.port!)) }
            }
        }

        var live: [NodeID] { running.withLock { Array($0.keys).sorted() } }

        func stop(_ id: NodeID) async {
            guard let node = running.withLock({ $0.removeValue(forKey: id) }) else { return }
            await node.server.stop()
            await node.store.close()
        }

        /// A server's view: its own connections and segment storage, logs over them.
        func server(
            _ name: String, shape: QuorumShape, tailCacheBytes: Int = 2_048, shapeOfLog: (@Sendable (UInt64) -> QuorumShape?)? = nil
        ) async throws -> (logs: LogStore, pool: StorageNodePool) {
            let pool = StorageNodePool(addresses: running.withLock { $0.mapValues(\.address) }, connectTimeoutMilliseconds: 1_000)
            var configuration = ReplicatedStorageConfiguration(shape: shape, owner: name)
            configuration.tailCacheBytesPerSegment = tailCacheBytes
            let storage = ReplicatedSegmentStorage(
                configuration: configuration, transport: pool, metadataStore: SegmentMetadataStore(metadata),
                liveNodes: { [self] in live })
            if let shapeOfLog { storage.setShapeProvider(shapeOfLog) }
            let logs = LogStore(storage: storage, metadata: metadata)
            try await logs.open()
            return (logs, pool)
        }

        func shutdown() async {
            for id in live { await stop(id) }
            try? await metadata.close()
        }
    }

    static let shape332 = try! QuorumShape(ensemble: 3, write: 3, ack: 2)

    func batch(_ values: [String]) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        for value in values { builder.append(timestamp: 1_700_000_000_000, key: nil, value: Array(value.utf8)) }
        return builder.build()
    }

    func readValues(_ log: Log, from offset: Int64, maxBytes: Int = 300) async throws -> [(Int64, String)] {
        var out: [(Int64, String)] = []
        var next = offset
        while true {
            let read = try await log.read(from: next, maxBytes: maxBytes)
            if read.batches.isEmpty { break }
            for batch in read.batches {
                for record in try RecordBatch.records(of: batch) where record.offset >= next {
                    out.append((record.offset, String(decoding: record.value!, as: UTF8.self)))
                }
            }
            next = read.nextOffset
        }
        return out
    }

    @Test func offsetsAreDenseAcrossRolledReplicatedSegmentsAndReadableFromAnyOffset() async throws {
        let nodes = try await Nodes([1, 2, 3])
        // No tail cache: every read goes to the replicas.
        let (logs, pool) = try await nodes.server("node-a", shape: Self.shape332, tailCacheBytes: 0)
        var configuration = LogConfiguration()
        configuration.segmentBytes = 1_024
        let log = try await logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        var expected: [(Int64, String)] = []
        for index in 0..<60 {
            let values = (0..<(index % 3 + 1)).map { "v\(index)-\($0)" }
            let appended = try await writer.append(batch(values))
            #expect(appended.baseOffset == Int64(expected.count))
            for value in values { expected.append((Int64(expected.count), value)) }
        }
        let info = log.info()
        #expect(info.segments.count >= 4, "segments roll at 1 KiB")
        #expect(info.endOffset == Int64(expected.count))
        let all = try await readValues(log, from: 0)
        #expect(all.map(\.0) == expected.map(\.0) && all.map(\.1) == expected.map(\.1))
        // From every offset: the batch holding it is found (searching replicas where
        // the tail cache does not reach), and nothing before the offset is returned.
        for start in stride(from: 0, to: expected.count, by: 7) {
            let read = try await readValues(log, from: Int64(start))
            #expect(read.first?.0 == Int64(start) && read.count == expected.count - start)
        }
        await pool.close()
        await nodes.shutdown()
    }

    /// A log with a shape of its own (a topic's replication settings) gets segments of
    /// that shape; the others keep the storage's.
    @Test func aLogsOwnShapeDecidesItsSegmentsCopies() async throws {
        let nodes = try await Nodes([1, 2, 3])
        let twoCopies = try QuorumShape(ensemble: 2, write: 2, ack: 1)
        let special = Mutex<UInt64?>(nil)
        let (logs, pool) = try await nodes.server("node-a", shape: Self.shape332, shapeOfLog: { id in special.withLock { $0 } == id ? twoCopies : nil })
        let small = try await logs.createLog(name: "small-0", configuration: LogConfiguration())
        special.withLock { $0 = small.id }
        let usual = try await logs.createLog(name: "usual-0", configuration: LogConfiguration())
        let segments = SegmentMetadataStore(nodes.metadata)
        for (log, shape) in [(small, twoCopies), (usual, Self.shape332)] {
            let writer = try await log.openWriter()
            _ = try await writer.append(batch(["a", "b"]))
            let active = try #require(log.activeSegmentID)
            let stored = try await segments.load(ReplicatedSegmentStorage.replicaID(active)).metadata
            #expect(stored.ensembleSize == shape.ensembleSize && stored.writeQuorumSize == shape.writeQuorumSize && stored.ackQuorumSize == shape.ackQuorumSize)
            #expect(stored.fragments.last?.ensemble.count == shape.ensembleSize)
            #expect(try await readValues(log, from: 0).map(\.1) == ["a", "b"])
        }
        await pool.close()
        await nodes.shutdown()
    }

    @Test func aNewOwnerFencesTheOldWriterAndKeepsEveryAcknowledgedBatch() async throws {
        let nodes = try await Nodes([1, 2, 3])
        let (logsA, poolA) = try await nodes.server("node-a", shape: Self.shape332)
        let logA = try await logsA.createLog(name: "t-1", configuration: LogConfiguration())
        let writerA = try await logA.openWriter()
        var acknowledged: [Int64: String] = [:]
        for index in 0..<50 {
            let appended = try await writerA.append(batch(["a\(index)"]))
            acknowledged[appended.baseOffset] = "a\(index)"
        }
        let (logsB, poolB) = try await nodes.server("node-b", shape: Self.shape332)
        let logB = try #require(logsB.log(logA.id))
        // Four appenders keep writing through A until A is fenced, while B takes over.
        let late = Task {
            await withTaskGroup(of: [(Int64, String)].self) { group in
                for appender in 0..<4 {
                    group.addTask {
                        var done: [(Int64, String)] = []
                        for index in 0... {
                            guard let appended = try? await writerA.append(batch(["late\(appender)-\(index)"])) else { break }
                            done.append((appended.baseOffset, "late\(appender)-\(index)"))
                        }
                        return done
                    }
                }
                var done: [(Int64, String)] = []
                for await results in group { done += results }
                return done
            }
        }
        try await waitUntil { logA.endOffset >= 60 }
        let writerB = try await logB.openWriter()
        let lateAcknowledged = await late.value
        for (offset, value) in lateAcknowledged { acknowledged[offset] = value }
        // The old writer never gets another batch acknowledged.
        await #expect(throws: LogError.self) { try await writerA.append(batch(["too late"])) }
        var newOffsets: [Int64] = []
        for index in 0..<10 {
            let appended = try await writerB.append(batch(["b\(index)"]))
            acknowledged[appended.baseOffset] = "b\(index)"
            newOffsets.append(appended.baseOffset)
        }
        let read = try await readValues(logB, from: 0)
        let offsets = read.map(\.0)
        #expect(offsets == Array(0..<Int64(read.count)), "offsets stay dense through the takeover")
        let stored = Dictionary(uniqueKeysWithValues: read)
        for (offset, value) in acknowledged {
            #expect(stored[offset] == value, "acknowledged batch at \(offset) is kept, at its offset")
        }
        #expect(newOffsets.first! >= 50)
        print("takeover: \(lateAcknowledged.count) appends acknowledged to the old writer while the new one took over; the new writer started at offset \(newOffsets.first!)")
        await poolA.close()
        await poolB.close()
        await nodes.shutdown()
    }

    @Test func aStorageNodeLostMidSegmentDoesNotStopTheLog() async throws {
        let nodes = try await Nodes([1, 2, 3, 4])
        let (logs, pool) = try await nodes.server("node-a", shape: Self.shape332)
        let log = try await logs.createLog(name: "t-2", configuration: LogConfiguration())
        let writer = try await log.openWriter()
        for index in 0..<40 { _ = try await writer.append(batch(["v\(index)"])) }
        // Stop one of the active segment's ensemble.
        let segment = try #require(log.info().segments.last)
        let replicaID = ReplicatedSegmentStorage.replicaID(SegmentID(logID: log.id, number: segment.number))
        let ensemble = try await SegmentMetadataStore(nodes.metadata).load(replicaID).metadata.fragments[0].ensemble
        await nodes.stop(ensemble[1])
        // The writer notices on its next add to that node; the change follows.
        _ = try await writer.append(batch(["v40"]))
        try await waitUntil("the ensemble change is in metadata") {
            (try? await SegmentMetadataStore(nodes.metadata).load(replicaID).metadata.fragments.count) == 2
        }
        for index in 41..<80 { _ = try await writer.append(batch(["v\(index)"])) }
        let fragments = try await SegmentMetadataStore(nodes.metadata).load(replicaID).metadata.fragments
        #expect(fragments.count == 2 && !fragments[1].ensemble.contains(ensemble[1]), "an ensemble change replaced the node")
        let read = try await readValues(log, from: 0)
        #expect(read.map(\.1) == (0..<80).map { "v\($0)" })
        await pool.close()
        await nodes.shutdown()
    }

    @Test func twoServersTakingALogAtOnceEndWithOneWriter() async throws {
        let nodes = try await Nodes([1, 2, 3])
        let (logsA, poolA) = try await nodes.server("node-a", shape: Self.shape332)
        let log = try await logsA.createLog(name: "t-3", configuration: LogConfiguration())
        let first = try await log.openWriter()
        for index in 0..<20 { _ = try await first.append(batch(["a\(index)"])) }
        let (logsB, poolB) = try await nodes.server("node-b", shape: Self.shape332)
        let (logsC, poolC) = try await nodes.server("node-c", shape: Self.shape332)
        async let b = try? logsB.log(log.id)!.openWriter()
        async let c = try? logsC.log(log.id)!.openWriter()
        let writers = [await b, await c].compactMap { $0 }
        #expect(!writers.isEmpty, "at least one takeover succeeds")
        // Of every writer ever opened, only one can still append.
        var working = 0
        for writer in writers + [first] {
            if (try? await writer.append(batch(["probe"]))) != nil { working += 1 }
        }
        #expect(working == 1)
        // A server that starts now sees the first writer's batches, sealed.
        let (logsD, poolD) = try await nodes.server("node-d", shape: Self.shape332)
        let read = try await readValues(logsD.log(log.id)!, from: 0)
        #expect(Array(read.map(\.1).prefix(20)) == (0..<20).map { "a\($0)" })
        for pool in [poolA, poolB, poolC, poolD] { await pool.close() }
        await nodes.shutdown()
    }

    @Test func brokersWriteOnlyThePartitionsTheyOwnAndAMovedPartitionKeepsItsOffsets() async throws {
        let nodes = try await Nodes([1, 2, 3])
        let (logsA, poolA) = try await nodes.server("node-a", shape: Self.shape332)
        let (logsB, poolB) = try await nodes.server("node-b", shape: Self.shape332)
        let brokerA = Broker(logs: logsA, defaults: LogConfiguration(), writers: .owned)
        let brokerB = Broker(logs: logsB, defaults: LogConfiguration(), writers: .owned)
        try await brokerA.start()
        try await brokerB.start()
        let changes = Mutex(0)
        brokerB.onPartitionsChanged { changes.withLock { $0 += 1 } }
        _ = try await brokerA.createTopic("orders", partitions: 2)
        // B learns of the topic from the shared metadata.
        try await brokerB.refreshTopics()
        #expect(brokerB.topicNames() == ["orders"] && changes.withLock { $0 } == 1)
        let ids = brokerA.partitionLogIDs()
        #expect(ids == brokerB.partitionLogIDs() && ids.count == 2)
        // Nobody owns anything yet: appends are refused with "not the owner".
        await #expect(throws: BrokerError.self) { try await brokerA.appendBatch(topic: "orders", partition: 0, batch: batch(["x"])) }
        try await brokerA.acquire(logID: ids[0])
        try await brokerB.acquire(logID: ids[1])
        for index in 0..<5 { _ = try await brokerA.appendBatch(topic: "orders", partition: 0, batch: batch(["a\(index)"])) }
        _ = try await brokerB.appendBatch(topic: "orders", partition: 1, batch: batch(["b0"]))
        let refused = await #expect(throws: BrokerError.self) { try await brokerA.appendBatch(topic: "orders", partition: 1, batch: batch(["y"])) }
        #expect(refused?.code == .unavailable, "Kafka clients get NOT_LEADER_OR_FOLLOWER and refresh")
        #expect(brokerA.owns(topic: "orders", partition: 0) && !brokerA.owns(topic: "orders", partition: 1))
        // Partition 0 moves to B (A drains): its offsets continue where A left them.
        brokerA.release(logID: ids[0])
        try await brokerB.acquire(logID: ids[0])
        let moved = try await brokerB.appendBatch(topic: "orders", partition: 0, batch: batch(["b-after-move"]))
        #expect(moved.baseOffset == 5)
        await #expect(throws: BrokerError.self) { try await brokerA.appendBatch(topic: "orders", partition: 0, batch: batch(["z"])) }
        var values: [String] = []
        var next: Int64 = 0
        while true {  // a read stops at a segment's end (the move sealed one)
            let read = try await brokerB.fetch(topic: "orders", partition: 0, offset: next, maxBytes: 1 << 20, maxWaitMilliseconds: 0)
            if read.batches.isEmpty { break }
            values += try read.batches.flatMap { try RecordBatch.records(of: $0) }.map { String(decoding: $0.value ?? [], as: UTF8.self) }
            next = read.nextOffset
        }
        #expect(values == ["a0", "a1", "a2", "a3", "a4", "b-after-move"])
        await poolA.close()
        await poolB.close()
        await nodes.shutdown()
    }
}
