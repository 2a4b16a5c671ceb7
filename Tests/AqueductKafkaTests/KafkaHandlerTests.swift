import AqueductGroups
import struct AqueductAPI.TopicSettings
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductMetadata
import AqueductRecords
import AqueductStorage
import AqueductTestSupport
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing

@testable import AqueductKafka

/// A broker, its offsets log, a group coordinator and the Kafka request handler, in a
/// scratch directory; requests are encoded as a client would and the responses decoded.
struct KafkaStack {
    let directory: String
    let storage: StorageNode
    let metadata: EmbeddedMetadataStore
    let broker: Broker
    let handler: KafkaRequestHandler

    /// Group limits whose first rebalance does not wait: tests here script joins and
    /// wait for their answers (GroupStateMachineTests script the delay itself).
    static let immediateGroups: GroupLimits = {
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 0
        return limits
    }()

    static func open(
        _ directory: String, listener: KafkaListenerConfiguration = KafkaListenerConfiguration(), partitionsMax: Int = 20_000,
        groupLimits: GroupLimits = KafkaStack.immediateGroups, cluster: (any KafkaClusterView)? = nil
    ) async throws -> KafkaStack {
        var configuration = StorageConfiguration(directory: directory + "/storage")
        configuration.flushIntervalMilliseconds = 50
        configuration.journalFileBytesMax = 4 << 20
        let storage = try StorageNode(configuration: configuration)
        let metadata = try EmbeddedMetadataStore(directory: directory + "/metadata")
        let logs = LogStore(storage: storage, metadata: metadata)
        try await logs.open()
        let broker = Broker(logs: logs, defaults: LogConfiguration(), partitionsMax: partitionsMax)
        try await broker.start()
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let offsets = try await OffsetStore.open(logs: logs, offsetsMax: groupLimits.offsetsMax, logger: logger)
        let groups = GroupCoordinator(offsets: offsets, limits: groupLimits, logger: logger)
        let handler = KafkaRequestHandler(broker: broker, groups: GroupShards(single: groups), listener: listener, clusterID: broker.clusterID, cluster: cluster, logger: logger)
        return KafkaStack(directory: directory, storage: storage, metadata: metadata, broker: broker, handler: handler)
    }

    func close() async throws {
        await storage.close()
        try await metadata.close()
    }

    static func requestFrame(
        _ key: KafkaAPIKey, version: Int16, _ body: some KafkaMessage, correlationID: Int32 = 42, clientID: String? = "aqueduct-test"
    ) -> ByteBuffer {
        var writer = KafkaWriter()
        var header = RequestHeader()
        header.requestApiKey = key.rawValue
        header.requestApiVersion = version
        header.correlationId = correlationID
        header.clientId = clientID
        header.encode(to: &writer, version: KafkaAPIVersions.isFlexible(key, version) ? 2 : 1)
        body.encode(to: &writer, version: version)
        return writer.buffer
    }

    /// Sends a request and decodes its response, checking the framing on the way.
    func call<Response: KafkaMessage>(
        _ key: KafkaAPIKey, version: Int16, _ body: some KafkaMessage, as: Response.Type, clientID: String? = "aqueduct-test"
    ) async throws -> Response {
        var session = KafkaSession(peer: "test")
        guard var frame = await handler.handle(frame: Self.requestFrame(key, version: version, body, clientID: clientID), session: &session) else {
            throw KafkaTestError("no response to \(key) v\(version)")
        }
        #expect(frame.readInteger(as: Int32.self) == Int32(frame.readableBytes))
        #expect(frame.readInteger(as: Int32.self) == 42)
        var reader = KafkaReader(frame)
        if KafkaAPIVersions.isFlexible(key, version) && key != .apiVersions {
            #expect(try reader.readUnsignedVarint("header tags") == 0)
        }
        let response = try Response(from: &reader, version: version)
        #expect(reader.remaining == 0, "\(key) v\(version) left \(reader.remaining) bytes")
        return response
    }

    func produce(_ topic: String, partition: Int32 = 0, _ batch: ByteBuffer, version: Int16 = 9, acks: Int16 = -1) async throws -> ProduceResponse.PartitionProduceResponse {
        var request = ProduceRequest()
        request.acks = acks
        request.timeoutMs = 1_000
        request.topicData = [.init(name: topic, partitionData: [.init(index: partition, records: batch)])]
        let response = try await call(.produce, version: version, request, as: ProduceResponse.self)
        return response.responses[0].partitionResponses[0]
    }

    func fetch(_ topic: String, partition: Int32 = 0, offset: Int64, version: Int16 = 12, maxWaitMs: Int32 = 0, minBytes: Int32 = 1) async throws -> FetchResponse.PartitionData {
        var request = FetchRequest()
        request.replicaId = -1
        request.maxWaitMs = maxWaitMs
        request.minBytes = minBytes
        request.maxBytes = 1 << 20
        request.topics = [.init(topic: topic, partitions: [.init(partition: partition, fetchOffset: offset, partitionMaxBytes: 1 << 20)])]
        let response = try await call(.fetch, version: version, request, as: FetchResponse.self)
        return response.responses[0].partitions[0]
    }
}

extension KafkaStack {
    /// Every record of a partition, fetching on until the high watermark (a fetch stops
    /// at the end of a segment, as Kafka's does).
    func readAll(_ topic: String, partition: Int32 = 0) async throws -> [String] {
        var offset: Int64 = 0
        var result: [String] = []
        while true {
            let data = try await fetch(topic, partition: partition, offset: offset)
            guard var records = data.records, records.readableBytes > 0 else { return result }
            while let header = RecordBatchHeader(from: records) {
                let one = records.readSlice(length: header.totalSize)!
                for record in try RecordBatch.records(of: one) where record.offset >= offset {
                    result.append(String(decoding: record.value ?? [], as: UTF8.self))
                }
                offset = header.lastOffset + 1
            }
            if offset >= data.highWatermark { return result }
        }
    }
}

struct KafkaTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func batch(_ values: [String], producerID: Int64 = -1, sequence: Int32 = -1, timestamp: Int64 = 1_700_000_000_000) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for value in values { builder.append(timestamp: timestamp, key: Array("k-\(value)".utf8), value: Array(value.utf8)) }
    var bytes = builder.build()
    guard producerID >= 0 else { return bytes }
    // Producer id, epoch and base sequence sit inside the CRC'd range: rebuild the CRC.
    bytes.setInteger(producerID, at: 43)
    bytes.setInteger(Int16(0), at: 51)
    bytes.setInteger(sequence, at: 53)
    let crc = RecordBatch.checksumOfBatch(bytes, at: 0, totalSize: bytes.readableBytes)
    bytes.setInteger(crc, at: 17)
    return bytes
}

func values(of records: ByteBuffer?) throws -> [String] {
    guard let records else { return [] }
    var result: [String] = []
    var index = records.readerIndex
    while index < records.writerIndex, let header = RecordBatchHeader(from: records, at: index) {
        let one = records.getSlice(at: index, length: header.totalSize)!
        result += try RecordBatch.records(of: one).map { String(decoding: $0.value ?? [], as: UTF8.self) }
        index += header.totalSize
    }
    return result
}

@Suite struct KafkaHandlerTests {
    @Test func apiVersionsListsWhatIsServedAndAnswersUnknownVersions() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        for version: Int16 in [0, 1, 2, 3] {
            let response = try await stack.call(.apiVersions, version: version, ApiVersionsRequest(), as: ApiVersionsResponse.self)
            #expect(response.errorCode == 0)
            let produce = response.apiKeys.first { $0.apiKey == 0 }
            #expect(produce?.minVersion == 0 && produce?.maxVersion == 9)
            #expect(response.apiKeys.count == KafkaAPIVersions.served.count)
        }
        // A newer ApiVersions than served: error 35 and the list, in the v0 format (KIP-511).
        var session = KafkaSession(peer: "test")
        var frame = try #require(await stack.handler.handle(frame: KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest()).withVersion(9), session: &session))
        frame.moveReaderIndex(forwardBy: 8)
        var reader = KafkaReader(frame)
        let answer = try ApiVersionsResponse(from: &reader, version: 0)
        #expect(answer.errorCode == KafkaErrorCode.unsupportedVersion && !answer.apiKeys.isEmpty)
        #expect(!session.closeAfterResponse)
        // An unknown API key, or a version of another API not served: the connection
        // closes, as Kafka closes it (a bare error code would be read in the shape of
        // the version sent, which old clients cannot parse).
        var unknown = ByteBuffer()
        unknown.writeInteger(Int16(999))
        unknown.writeInteger(Int16(0))
        unknown.writeInteger(Int32(7))
        #expect(await stack.handler.handle(frame: unknown, session: &session) == nil)
        #expect(session.closeAfterResponse)
        var oldProduce = KafkaSession(peer: "test")
        #expect(await stack.handler.handle(frame: KafkaStack.requestFrame(.produce, version: 9, ProduceRequest()).withVersion(2), session: &oldProduce) == nil)
        #expect(oldProduce.closeAfterResponse)
        try await stack.close()
    }

    @Test func producedBatchesAreFetchedBackAsStoredAtEveryVersion() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 2)
        var next: Int64 = 0
        for version: Int16 in [3, 5, 7, 8, 9] {
            let produced = try await stack.produce("t", batch(["a\(version)", "b\(version)"]), version: version)
            #expect(produced.errorCode == 0 && produced.baseOffset == next)
            next += 2
        }
        for version: Int16 in [4, 7, 11, 12] {
            let fetched = try await stack.fetch("t", offset: 2, version: version)
            #expect(fetched.errorCode == 0 && fetched.highWatermark == next)
            #expect(try values(of: fetched.records) == ["a5", "b5", "a7", "b7", "a8", "b8", "a9", "b9"])
        }
        // acks=0: stored, no response.
        var request = ProduceRequest()
        request.acks = 0
        request.topicData = [.init(name: "t", partitionData: [.init(index: 1, records: batch(["silent"]))])]
        var session = KafkaSession(peer: "test")
        #expect(await stack.handler.handle(frame: KafkaStack.requestFrame(.produce, version: 9, request), session: &session) == nil)
        // Queued at once, durable a moment later.
        try await waitUntil { ((try? stack.broker.offsets(topic: "t", partition: 1).end) ?? 0) >= 1 }
        #expect(try stack.broker.offsets(topic: "t", partition: 1).end == 1)
        // Errors per partition: unknown partition, offset out of range.
        #expect(try await stack.produce("t", partition: 5, batch(["x"])).errorCode == KafkaErrorCode.unknownTopicOrPartition)
        #expect(try await stack.fetch("t", offset: 99).errorCode == KafkaErrorCode.offsetOutOfRange)
        try await stack.close()
    }

    @Test func idempotentRetriesAreStoredOnceAndGapsRefused() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var initialize = InitProducerIdRequest()
        initialize.producerId = -1
        initialize.producerEpoch = -1
        let ids = try await stack.call(.initProducerId, version: 4, initialize, as: InitProducerIdResponse.self)
        #expect(ids.errorCode == 0 && ids.producerId >= 0 && ids.producerEpoch == 0)
        let first = batch(["one", "two"], producerID: ids.producerId, sequence: 0)
        #expect(try await stack.produce("t", first).baseOffset == 0)
        #expect(try await stack.produce("t", first).baseOffset == 0)  // the retry
        #expect(try await stack.produce("t", batch(["three"], producerID: ids.producerId, sequence: 2)).baseOffset == 2)
        let gap = try await stack.produce("t", batch(["lost"], producerID: ids.producerId, sequence: 7))
        #expect(gap.errorCode == KafkaErrorCode.outOfOrderSequenceNumber)
        #expect(try values(of: try await stack.fetch("t", offset: 0).records) == ["one", "two", "three"])
        try await stack.close()
    }

    @Test func fetchAnswersHoldTheirReadBudgetUntilWritten() async throws {
        var listener = KafkaListenerConfiguration()
        listener.fetchBytesMax = 64 << 10
        listener.fetchBytesInFlightMax = 128 << 10
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        // Batches of at most 16 KiB: a fetch pass reserves max_bytes (64 KiB), not more.
        _ = try await stack.broker.createTopic("t", partitions: 1, settings: TopicSettings(maxMessageBytes: 16 << 10))
        var builder = RecordBatchBuilder()
        for index in 0..<10 { builder.append(timestamp: 1, key: nil, value: Array(repeating: UInt8(index), count: 1_000)) }
        #expect(try await stack.produce("t", builder.build()).errorCode == 0)
        var request = FetchRequest()
        request.replicaId = -1
        request.maxBytes = 64 << 10
        request.topics = [.init(topic: "t", partitions: [.init(partition: 0, fetchOffset: 0, partitionMaxBytes: 1 << 20)])]
        let frame = KafkaStack.requestFrame(.fetch, version: 11, request)
        // Two answers nobody has written yet take the whole budget (64 KiB each)...
        var held: [KafkaAnswer] = []
        for _ in 0..<2 {
            var session = KafkaSession(peer: "test")
            guard case .ready(let answer) = await stack.handler.dispatch(frame: frame, session: &session) else {
                Issue.record("a fetch with records was not answered at once")
                return
            }
            held.append(answer)
        }
        // ...so a third waits for them, and goes on once they are written.
        let third = Task {
            var session = KafkaSession(peer: "test")
            return await stack.handler.handle(frame: frame, session: &session)
        }
        try await waitUntil { stack.handler.fetchReads.waiting == 1 }
        held.removeAll()
        #expect(await third.value != nil)
        try await stack.close()
    }

    @Test func topicsCreatedByNamingThemAreCapped() async throws {
        var listener = KafkaListenerConfiguration()
        listener.autoCreateTopicsMax = 3
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("existing", partitions: 1)
        var request = MetadataRequest()
        request.topics = (0..<6).map { MetadataRequest.MetadataRequestTopic(name: "named-\($0)") }
        let response = try await stack.call(.metadata, version: 9, request, as: MetadataResponse.self)
        // As from Kafka, the request that creates a topic learns LEADER_NOT_AVAILABLE
        // and no partitions; the next one finds them.
        #expect(response.topics.filter { $0.errorCode == KafkaErrorCode.leaderNotAvailable && $0.partitions.isEmpty }.count == 2)
        #expect(response.topics.filter { $0.errorCode == KafkaErrorCode.unknownTopicOrPartition }.count == 4)
        #expect(stack.broker.topicNames().count == 3)
        let again = try await stack.call(.metadata, version: 9, request, as: MetadataResponse.self)
        #expect(again.topics.filter { $0.errorCode == 0 && $0.partitions.count == 1 }.map(\.name) == ["named-0", "named-1"])
        // Producing to an unknown topic is refused the same way; explicit creation still works.
        #expect(try await stack.produce("named-9", batch(["x"])).errorCode == KafkaErrorCode.unknownTopicOrPartition)
        _ = try await stack.broker.createTopic("explicit", partitions: 1)
        try await stack.close()
    }

    @Test func theSameBatchRetriedOnManyConnectionsAtOnceIsStoredOnce() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        for round in 0..<20 {
            let retried = batch(["r\(round)-a", "r\(round)-b"], producerID: 77, sequence: Int32(round * 2))
            let answers = try await withThrowingTaskGroup(of: ProduceResponse.PartitionProduceResponse.self) { group in
                for _ in 0..<8 { group.addTask { try await stack.produce("t", retried) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Every copy is answered with the one offset it was stored at.
            #expect(answers.allSatisfy { $0.errorCode == 0 && $0.baseOffset == Int64(round * 2) })
        }
        let stored = try await stack.readAll("t")
        #expect(stored.count == 40 && Set(stored).count == 40)
        try await stack.close()
    }

    @Test func newProducerIDsAfterARestartCostALookupNotAScan() async throws {
        let directory = temporaryDirectory()
        var stack = try await KafkaStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        #expect(try await stack.produce("t", batch(["before"], producerID: 1, sequence: 0)).errorCode == 0)
        try await stack.close()
        stack = try await KafkaStack.open(directory)
        for producer in 2..<500 {
            #expect(try await stack.produce("t", batch(["p\(producer)"], producerID: Int64(producer), sequence: 0)).errorCode == 0)
        }
        // One read of the partition's recent batches after the restart, not one per producer.
        #expect(stack.handler.producers.restoreScans.load(ordering: .relaxed) == 1)
        try await stack.close()
    }

    @Test func retriesAreRecognisedAcrossARestart() async throws {
        let directory = temporaryDirectory()
        var stack = try await KafkaStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let first = batch(["one", "two"], producerID: 4_242, sequence: 0)
        #expect(try await stack.produce("t", first).baseOffset == 0)
        _ = try await stack.produce("t", batch(["other"]))  // another producer's records between
        try await stack.close()

        // The response was lost in the crash; the client retries after the restart.
        stack = try await KafkaStack.open(directory)
        #expect(try await stack.produce("t", first).baseOffset == 0)
        #expect(try await stack.produce("t", batch(["three"], producerID: 4_242, sequence: 2)).baseOffset == 3)
        #expect(try await stack.produce("t", batch(["gap"], producerID: 4_242, sequence: 9)).errorCode == KafkaErrorCode.outOfOrderSequenceNumber)
        #expect(try await stack.readAll("t") == ["one", "two", "other", "three"])
        try await stack.close()
    }

    @Test func fetchWaitsForRecordsUpToMaxWait() async throws {
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 600_000
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let began = monotonicNanoseconds()
        let empty = try await stack.fetch("t", offset: 0, maxWaitMs: 200)
        #expect(try values(of: empty.records).isEmpty)
        #expect(monotonicNanoseconds() - began >= 190_000_000)
        // The append wakes the waiting fetch (else it would answer empty, ten minutes on).
        let waiting = Task { try await stack.fetch("t", offset: 0, maxWaitMs: 600_000) }
        try await waitUntil { stack.broker.appends.waiting == 1 }
        _ = try await stack.produce("t", batch(["late"]))
        #expect(try values(of: try await waiting.value.records) == ["late"])
        try await stack.close()
    }

    @Test func listOffsetsFindsEarliestLatestAndByTime() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        for (index, time) in [1_000, 2_000, 3_000].enumerated() {
            _ = try await stack.produce("t", batch(["v\(index)"], timestamp: Int64(time)))
        }
        func offset(at timestamp: Int64) async throws -> Int64 {
            var request = ListOffsetsRequest()
            request.replicaId = -1
            request.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, timestamp: timestamp)])]
            let response = try await stack.call(.listOffsets, version: 5, request, as: ListOffsetsResponse.self)
            return response.topics[0].partitions[0].offset
        }
        #expect(try await offset(at: -2) == 0)
        #expect(try await offset(at: -1) == 3)
        #expect(try await offset(at: 1_500) == 1)
        #expect(try await offset(at: 3_000) == 2)
        #expect(try await offset(at: 9_000) == -1)
        // Max timestamp: the record with the largest timestamp, wherever it is.
        _ = try await stack.produce("t", batch(["late-stamped-early"], timestamp: 2_500))
        #expect(try await offset(at: -3) == 2)
        try await stack.close()
    }

    @Test func partitionsCanBeAddedNeverRemoved() async throws {
        let directory = temporaryDirectory()
        var stack = try await KafkaStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 2)
        _ = try await stack.produce("t", partition: 1, batch(["kept"]))
        func grow(to count: Int32) async throws -> Int16 {
            var request = CreatePartitionsRequest()
            request.topics = [.init(name: "t", count: count)]
            return try await stack.call(.createPartitions, version: 2, request, as: CreatePartitionsResponse.self).results[0].errorCode
        }
        #expect(try await grow(to: 4) == 0)
        #expect(try await grow(to: 3) == KafkaErrorCode.invalidPartitions)
        #expect(try await stack.produce("t", partition: 3, batch(["new"])).errorCode == 0)
        try await stack.close()

        stack = try await KafkaStack.open(directory)
        #expect(try stack.broker.partitionCount("t") == 4)
        #expect(try values(of: try await stack.fetch("t", partition: 1, offset: 0).records) == ["kept"])
        #expect(try values(of: try await stack.fetch("t", partition: 3, offset: 0).records) == ["new"])
        try await stack.close()
    }

    @Test func committedOffsetsSurviveARestart() async throws {
        let directory = temporaryDirectory()
        var stack = try await KafkaStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 2)
        var commit = OffsetCommitRequest()
        commit.groupId = "g"
        commit.generationIdOrMemberEpoch = -1
        commit.topics = [.init(name: "t", partitions: [
            .init(partitionIndex: 0, committedOffset: 5, committedMetadata: "m0"),
            .init(partitionIndex: 1, committedOffset: 7),
        ])]
        let committed = try await stack.call(.offsetCommit, version: 8, commit, as: OffsetCommitResponse.self)
        #expect(committed.topics[0].partitions.map(\.errorCode) == [0, 0])
        try await stack.close()

        stack = try await KafkaStack.open(directory)
        var fetch = OffsetFetchRequest()
        fetch.groupId = "g"
        fetch.topics = [.init(name: "t", partitionIndexes: [0, 1])]
        let fetched = try await stack.call(.offsetFetch, version: 7, fetch, as: OffsetFetchResponse.self)
        #expect(fetched.topics[0].partitions.map(\.committedOffset) == [5, 7])
        #expect(fetched.topics[0].partitions[0].metadata == "m0")
        try await stack.close()
    }

    @Test func emptyGroupsCanBeDeletedWithTheirOffsets() async throws {
        let directory = temporaryDirectory()
        var stack = try await KafkaStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var commit = OffsetCommitRequest()
        commit.groupId = "idle"
        commit.generationIdOrMemberEpoch = -1
        commit.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, committedOffset: 3)])]
        _ = try await stack.call(.offsetCommit, version: 8, commit, as: OffsetCommitResponse.self)
        var join = JoinGroupRequest()
        join.groupId = "busy"
        join.protocolType = "consumer"
        join.sessionTimeoutMs = 30_000
        join.protocols = [.init(name: "range", metadata: [])]
        #expect(try await stack.call(.joinGroup, version: 0, join, as: JoinGroupResponse.self).errorCode == 0)

        var delete = DeleteGroupsRequest()
        delete.groupsNames = ["idle", "busy", "never"]
        let results = try await stack.call(.deleteGroups, version: 2, delete, as: DeleteGroupsResponse.self).results
        #expect(results.map(\.errorCode) == [0, KafkaErrorCode.nonEmptyGroup, KafkaErrorCode.groupIDNotFound])
        try await stack.close()

        // Gone after a restart too: the offsets log holds tombstones.
        stack = try await KafkaStack.open(directory)
        var fetch = OffsetFetchRequest()
        fetch.groupId = "idle"
        fetch.topics = [.init(name: "t", partitionIndexes: [0])]
        #expect(try await stack.call(.offsetFetch, version: 7, fetch, as: OffsetFetchResponse.self).topics[0].partitions[0].committedOffset == -1)
        try await stack.close()
    }

    /// Seeded random frames and mutations of valid ones: the handler answers, or asks
    /// to close that connection, and never crashes.
    @Test func malformedFramesAreAnsweredOrCloseTheConnectionNeverCrash() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var generator = SplitMix64(seed: 0xA0ED)
        var versions = ApiVersionsRequest()
        versions.clientSoftwareName = "fuzz"
        versions.clientSoftwareVersion = "1"
        var metadata = MetadataRequest()
        metadata.topics = [.init(name: "t")]
        var valid: [ByteBuffer] = [
            KafkaStack.requestFrame(.apiVersions, version: 3, versions),
            KafkaStack.requestFrame(.metadata, version: 9, metadata),
        ]
        var produce = ProduceRequest()
        produce.acks = 1
        produce.topicData = [.init(name: "t", partitionData: [.init(index: 0, records: batch(["fuzz"]))])]
        valid.append(KafkaStack.requestFrame(.produce, version: 9, produce))
        var join = JoinGroupRequest()
        join.groupId = "fuzz"
        join.protocolType = "consumer"
        join.sessionTimeoutMs = 10_000
        join.protocols = [.init(name: "range", metadata: [0, 1])]
        valid.append(KafkaStack.requestFrame(.joinGroup, version: 5, join))
        var closed = 0
        var answered = 0
        for round in 0..<3_000 {
            var frame: ByteBuffer
            if round % 3 == 0 {
                frame = ByteBuffer(bytes: (0..<Int.random(in: 8...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            } else {
                frame = valid[round % valid.count]
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    let at = Int.random(in: 0..<frame.readableBytes, using: &generator)
                    frame.setInteger(UInt8.random(in: 0...255, using: &generator), at: at)
                }
                if Bool.random(using: &generator) {
                    frame = frame.getSlice(at: 0, length: max(8, Int.random(in: 0...frame.readableBytes, using: &generator)))!
                }
            }
            // The frame decoder guarantees 8 bytes; keep the key in range of something served half the time.
            var session = KafkaSession(peer: "fuzz")
            if await stack.handler.handle(frame: frame, session: &session) != nil { answered += 1 }
            if session.closeAfterResponse { closed += 1 }
        }
        #expect(answered > 0 && closed > 0)
        // Still serving.
        let response = try await stack.call(.apiVersions, version: 3, ApiVersionsRequest(), as: ApiVersionsResponse.self)
        #expect(response.errorCode == 0)
        try await stack.close()
    }
}

extension ByteBuffer {
    /// The same request frame with another API version in its header.
    func withVersion(_ version: Int16) -> ByteBuffer {
        var copy = self
        copy.setInteger(version, at: copy.readerIndex + 2)
        return copy
    }
}
