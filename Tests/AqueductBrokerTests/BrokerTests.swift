import AqueductAPI
import AqueductCommon
import AqueductLog
import AqueductMetadata
import AqueductRecords
import AqueductStorage
import AqueductTestSupport
import Foundation
import NIOCore
import Testing

@testable import AqueductBroker

struct BrokerStack {
    let storage: StorageNode
    let metadata: EmbeddedMetadataStore
    let broker: Broker

    static func open(_ directory: String, partitionsMax: Int = 20_000) async throws -> BrokerStack {
        var configuration = StorageConfiguration(directory: directory + "/storage")
        configuration.flushIntervalMilliseconds = 50
        configuration.journalFileBytesMax = 4 << 20
        let storage = try StorageNode(configuration: configuration)
        let metadata = try EmbeddedMetadataStore(directory: directory + "/metadata")
        let logs = LogStore(storage: storage, metadata: metadata)
        try await logs.open()
        let broker = Broker(logs: logs, defaults: LogConfiguration(), partitionsMax: partitionsMax)
        try await broker.start()
        return BrokerStack(storage: storage, metadata: metadata, broker: broker)
    }

    func close() async throws {
        await storage.close()
        try await metadata.close()
    }
}

func values(_ read: LogRead, from offset: Int64 = 0) throws -> [String] {
    try read.batches.flatMap { try RecordBatch.records(of: $0) }.filter { $0.offset >= offset }
        .map { String(decoding: $0.value ?? [], as: UTF8.self) }
}

@Suite struct BrokerTests {
    @Test func partitionsOfAllTopicsAreBounded() async throws {
        let stack = try await BrokerStack.open(temporaryDirectory(), partitionsMax: 10)
        _ = try await stack.broker.createTopic("a", partitions: 8)
        await #expect(throws: BrokerError.self) { _ = try await stack.broker.createTopic("b", partitions: 3) }
        await #expect(throws: BrokerError.self) { _ = try await stack.broker.addPartitions("a", count: 11) }
        do {
            _ = try await stack.broker.createTopic("c", partitions: 4)
        } catch {
            #expect(error.code == .limitReached)
        }
        _ = try await stack.broker.createTopic("d", partitions: 2)
        #expect(stack.broker.partitionTotal == 10)
        // Deleting makes room again.
        try await stack.broker.deleteTopic("a")
        _ = try await stack.broker.createTopic("b", partitions: 3)
        try await stack.close()
    }

    @Test func murmur2MatchesKafkasPartitioner() {
        // Values from kafka-python's port of Kafka's Utils.murmur2.
        let vectors: [([UInt8], UInt32)] = [
            ([], 275_646_681), (Array("a".utf8), 2_731_586_172), (Array("ab".utf8), 316_155_434),
            (Array("abc".utf8), 479_470_107), (Array("abcd".utf8), 2_971_317_748),
            (Array("hello world".utf8), 1_221_641_059), (Array("key-42".utf8), 4_107_880_775),
            ((0..<37).map { UInt8($0) }, 74_000_851),
        ]
        for (key, expected) in vectors {
            #expect(UInt32(bitPattern: Partitioner.murmur2(key)) == expected, "\(key)")
        }
    }

    @Test func topicNamesFollowKafkasRules() throws {
        for good in ["a", "orders", "orders.v2", "my_topic-1", String(repeating: "x", count: 249)] {
            #expect(throws: Never.self) { try Broker.validateTopicName(good) }
        }
        for bad in ["", ".", "..", "has space", "slash/name", "ünï", String(repeating: "x", count: 250)] {
            #expect(throws: BrokerError.self) { try Broker.validateTopicName(bad) }
        }
    }

    @Test func topicsAreCreatedDescribedAndDeletedDurably() async throws {
        let directory = temporaryDirectory()
        let stack = try await BrokerStack.open(directory)
        let created = try await stack.broker.createTopic("orders", partitions: 3, settings: TopicSettings(retentionMs: 60_000))
        #expect(created.partitions.count == 3)
        #expect(created.configuration.retentionMilliseconds == 60_000)
        _ = try await stack.broker.createTopic("audit", partitions: 1)
        await #expect(throws: BrokerError.self) { _ = try await stack.broker.createTopic("orders", partitions: 1) }
        await #expect(throws: BrokerError.self) { _ = try await stack.broker.createTopic("zero", partitions: 0) }
        await #expect(throws: BrokerError.self) { _ = try await stack.broker.createTopic("__internal", partitions: 1) }
        await #expect(throws: BrokerError.self) {
            _ = try await stack.broker.createTopic("tiny", partitions: 1, settings: TopicSettings(segmentBytes: 5))
        }
        #expect(stack.broker.topicNames() == ["audit", "orders"])
        _ = try await stack.broker.produce(topic: "audit", records: [ProduceRecord(value: Array("x".utf8))])
        try await stack.broker.deleteTopic("audit")
        await #expect(throws: BrokerError.self) { try await stack.broker.deleteTopic("audit") }
        try await stack.close()

        let reopened = try await BrokerStack.open(directory)
        #expect(reopened.broker.topicNames() == ["orders"])
        #expect(try reopened.broker.describeTopic("orders").id == created.id)
        #expect(reopened.storage.allSegments().allSatisfy { segment in
            created.partitions.count == 3 && segment.id.logID <= 3
        })
        try await reopened.close()
    }

    @Test func producedRecordsLandByKeyAndComeBackInOrder() async throws {
        let stack = try await BrokerStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("events", partitions: 4)
        var records: [ProduceRecord] = []
        for index in 0..<100 {
            records.append(ProduceRecord(
                key: Array("user-\(index % 7)".utf8), value: Array("event-\(index)".utf8),
                headers: [RecordHeader(key: "n", value: Array(String(index).utf8))]))
        }
        let produced = try await stack.broker.produce(topic: "events", records: records)
        for (index, placed) in produced.enumerated() {
            #expect(placed.partition == Partitioner.partition(forKey: Array("user-\(index % 7)".utf8), partitions: 4))
        }
        for partition in 0..<4 {
            let read = try await stack.broker.fetch(topic: "events", partition: partition, offset: 0, maxBytes: 1 << 20, maxWaitMilliseconds: 0)
            let expected = produced.enumerated().filter { $0.element.partition == partition }.map { "event-\($0.offset)" }
            #expect(try values(read) == expected)
            let decoded = try read.batches.flatMap { try RecordBatch.records(of: $0) }
            #expect(decoded.map(\.offset) == Array(0..<Int64(expected.count)))
            #expect(decoded.allSatisfy { $0.headers.first?.key == "n" })
        }
        try await stack.close()
    }

    @Test func badProducesGetClearErrors() async throws {
        let stack = try await BrokerStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("small", partitions: 2, settings: TopicSettings(maxMessageBytes: 1_000))
        func code(_ body: () async throws -> Void) async -> ErrorCode? {
            do { try await body() } catch let error as BrokerError { return error.code } catch { return .internalError }
            return nil
        }
        #expect(await code { _ = try await stack.broker.produce(topic: "nope", records: [ProduceRecord(value: [1])]) } == .topicNotFound)
        #expect(await code { _ = try await stack.broker.produce(topic: "small", records: [ProduceRecord(value: [1], partition: 2)]) } == .partitionNotFound)
        #expect(await code { _ = try await stack.broker.produce(topic: "small", records: [ProduceRecord(value: [UInt8](repeating: 0, count: 2_000))]) } == .recordTooLarge)
        #expect(await code { _ = try await stack.broker.produce(topic: "small", records: []) } == .invalidRequest)
        #expect(await code { _ = try await stack.broker.fetch(topic: "small", partition: 0, offset: 5, maxBytes: 100, maxWaitMilliseconds: 0) } == .offsetOutOfRange)
        // Many records that together exceed the limit are split into several batches.
        let many = (0..<50).map { ProduceRecord(value: [UInt8](repeating: UInt8($0), count: 100), partition: 0) }
        let produced = try await stack.broker.produce(topic: "small", records: many)
        #expect(produced.map(\.offset) == Array(0..<50))
        try await stack.close()
    }
}
