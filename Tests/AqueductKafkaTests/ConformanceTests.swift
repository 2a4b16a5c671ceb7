import struct AqueductAPI.TopicDescription
import struct AqueductAPI.TopicConfiguration
import AqueductBroker
import AqueductGroups
import AqueductRecords
@testable import AqueductKafka
import AqueductTestSupport
import NIOCore
import Testing

/// What librdkafka's and kafka-go's own test suites found (issue #11), each as a test
/// of our own against the handler.
@Suite struct ConformanceTests {
    @Test func onlyTheFirstBatchOfAnAnswerMayPassMaxBytes() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("big", partitions: 2)
        // One ~300 KB batch in each partition; max_bytes 500,000 holds one, not two.
        let value = String(repeating: "x", count: 300_000)
        for partition in Int32(0)..<2 {
            let produced = try await stack.produce("big", partition: partition, batch([value]))
            #expect(produced.errorCode == 0, "\(produced)")
        }
        var request = FetchRequest()
        request.replicaId = -1
        request.maxBytes = 500_000
        request.topics = [.init(topic: "big", partitions: (Int32(0)..<2).map { .init(partition: $0, fetchOffset: 0, partitionMaxBytes: 1 << 20) })]
        let response = try await stack.call(.fetch, version: 11, request, as: FetchResponse.self)
        let sizes = response.responses[0].partitions.map { $0.records?.readableBytes ?? 0 }
        #expect(sizes[0] > 300_000 && sizes[1] == 0, "\(sizes)")
        // A first batch larger than the whole limit still comes, so consumers progress.
        request.maxBytes = 1_000
        request.topics = [.init(topic: "big", partitions: (Int32(0)..<2).map { .init(partition: $0, fetchOffset: 0, partitionMaxBytes: 1_000) })]
        let small = try await stack.call(.fetch, version: 11, request, as: FetchResponse.self)
        #expect(small.responses[0].partitions.map { $0.records?.readableBytes ?? 0 }.filter { $0 > 0 }.count == 1)
        try await stack.close()
    }

    func createTopics(_ stack: KafkaStack, _ topics: [CreateTopicsRequest.CreatableTopic], validateOnly: Bool = false) async throws
        -> [CreateTopicsResponse.CreatableTopicResult]
    {
        var request = CreateTopicsRequest()
        request.topics = topics
        request.validateOnly = validateOnly
        return try await stack.call(.createTopics, version: 5, request, as: CreateTopicsResponse.self).topics
    }

    @Test func createTopicsTakesKafkasConfigsAssignmentsAndRefusesDuplicates() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        var configured = CreateTopicsRequest.CreatableTopic(name: "configured", numPartitions: 2, replicationFactor: 1)
        configured.configs = [.init(name: "compression.type", value: "lz4"), .init(name: "delete.retention.ms", value: "900"),
                              .init(name: "retention.ms", value: "60000")]
        var assigned = CreateTopicsRequest.CreatableTopic(name: "assigned", numPartitions: -1, replicationFactor: -1)
        assigned.assignments = [.init(partitionIndex: 0, brokerIds: [0]), .init(partitionIndex: 1, brokerIds: [0]), .init(partitionIndex: 2, brokerIds: [0])]
        var elsewhere = CreateTopicsRequest.CreatableTopic(name: "elsewhere", numPartitions: -1, replicationFactor: -1)
        elsewhere.assignments = [.init(partitionIndex: 0, brokerIds: [1])]
        var unknown = CreateTopicsRequest.CreatableTopic(name: "unknown-config", numPartitions: 1, replicationFactor: 1)
        unknown.configs = [.init(name: "dummy.doesntexist", value: "x")]
        var bad = CreateTopicsRequest.CreatableTopic(name: "bad-value", numPartitions: 1, replicationFactor: 1)
        bad.configs = [.init(name: "compression.type", value: "brotli")]
        let twice = CreateTopicsRequest.CreatableTopic(name: "twice", numPartitions: 1, replicationFactor: 1)
        let results = try await createTopics(stack, [configured, assigned, elsewhere, unknown, bad, twice, twice])
        #expect(results.map(\.errorCode) == [
            0, 0, KafkaErrorCode.invalidReplicaAssignment, KafkaErrorCode.invalidConfig, KafkaErrorCode.invalidConfig,
            KafkaErrorCode.invalidRequest, KafkaErrorCode.invalidRequest,
        ])
        #expect(try stack.broker.partitionCount("assigned") == 3)
        #expect(stack.broker.topicNames() == ["assigned", "configured"])
        #expect(try stack.broker.describeTopic("configured").configuration.retentionMilliseconds == 60_000)
        try await stack.close()
    }

    @Test func validateOnlyMakesEveryCheckOfACreationAndCreatesNothing() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("exists", partitions: 1)
        var badConfig = CreateTopicsRequest.CreatableTopic(name: "bad-config", numPartitions: 1, replicationFactor: 1)
        badConfig.configs = [.init(name: "compression.type", value: "brotli")]
        let results = try await createTopics(stack, [
            .init(name: "fine", numPartitions: 3, replicationFactor: 1),
            .init(name: "no-partitions", numPartitions: 0, replicationFactor: 1),
            .init(name: "too-many", numPartitions: Int32(Broker.partitionsPerTopicMax + 1), replicationFactor: 1),
            .init(name: "exists", numPartitions: 1, replicationFactor: 1),
            .init(name: "__internal", numPartitions: 1, replicationFactor: 1),
            .init(name: "three-replicas", numPartitions: 1, replicationFactor: 3),
            badConfig,
        ], validateOnly: true)
        #expect(results.map(\.errorCode) == [
            0, KafkaErrorCode.invalidPartitions, KafkaErrorCode.invalidPartitions, KafkaErrorCode.topicAlreadyExists,
            KafkaErrorCode.invalidTopicException, KafkaErrorCode.invalidReplicationFactor, KafkaErrorCode.invalidConfig,
        ])
        #expect(results[0].numPartitions == 3)
        #expect(stack.broker.topicNames() == ["exists"])
        try await stack.close()
    }

    func describe(_ stack: KafkaStack, _ topic: String) async throws -> [String: (value: String?, source: Int8)] {
        var request = DescribeConfigsRequest()
        request.resources = [.init(resourceType: 2, resourceName: topic, configurationKeys: nil)]
        let response = try await stack.call(.describeConfigs, version: 4, request, as: DescribeConfigsResponse.self)
        #expect(response.results[0].errorCode == 0)
        return Dictionary(uniqueKeysWithValues: response.results[0].configs.map { ($0.name, ($0.value, $0.configSource)) })
    }

    @Test func topicConfigsAreDescribedAndAlteredWholeOrIncrementally() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        var topic = CreateTopicsRequest.CreatableTopic(name: "t", numPartitions: 2, replicationFactor: 1)
        topic.configs = [.init(name: "compression.type", value: "lz4")]
        _ = try await createTopics(stack, [topic])
        var configs = try await describe(stack, "t")
        #expect(configs["compression.type"]?.value == "lz4" && configs["compression.type"]?.source == 1)
        #expect(configs["cleanup.policy"]?.value == "delete" && configs["cleanup.policy"]?.source == 5)
        #expect(configs.count == TopicConfigs.names.count)

        // AlterConfigs replaces the set: compression.type goes back to its default.
        var alter = AlterConfigsRequest()
        alter.resources = [
            .init(resourceType: 2, resourceName: "t", configs: [.init(name: "flush.ms", value: "12345678"), .init(name: "max.message.bytes", value: "2000")]),
            .init(resourceType: 2, resourceName: "missing", configs: [.init(name: "flush.ms", value: "1")]),
            .init(resourceType: 4, resourceName: "0", configs: [.init(name: "sasl.kerberos.min.time.before.relogin", value: "58000")]),
        ]
        let altered = try await stack.call(.alterConfigs, version: 1, alter, as: AlterConfigsResponse.self)
        #expect(altered.responses.map(\.errorCode) == [0, KafkaErrorCode.unknownTopicOrPartition, 0])
        configs = try await describe(stack, "t")
        #expect(configs["compression.type"]?.value == "producer" && configs["flush.ms"]?.value == "12345678")
        // max.message.bytes applies at once, to every partition.
        #expect(try await stack.produce("t", partition: 1, batch([String(repeating: "y", count: 3_000)])).errorCode == KafkaErrorCode.messageTooLarge)

        var incremental = IncrementalAlterConfigsRequest()
        incremental.resources = [.init(resourceType: 2, resourceName: "t", configs: [
            .init(name: "flush.ms", configOperation: 1, value: nil),
            .init(name: "retention.ms", configOperation: 0, value: "3600000"),
            .init(name: "max.message.bytes", configOperation: 1, value: nil),
        ])]
        var incrementalResult = try await stack.call(.incrementalAlterConfigs, version: 1, incremental, as: IncrementalAlterConfigsResponse.self)
        #expect(incrementalResult.responses.map(\.errorCode) == [0])
        configs = try await describe(stack, "t")
        #expect(configs["flush.ms"]?.source == 5 && configs["retention.ms"]?.value == "3600000")
        #expect(try await stack.produce("t", batch([String(repeating: "y", count: 3_000)])).errorCode == 0)
        incremental.resources = [.init(resourceType: 2, resourceName: "t", configs: [.init(name: "no.such.config", configOperation: 0, value: "1")])]
        incrementalResult = try await stack.call(.incrementalAlterConfigs, version: 1, incremental, as: IncrementalAlterConfigsResponse.self)
        #expect(incrementalResult.responses.map(\.errorCode) == [KafkaErrorCode.invalidConfig])
        try await stack.close()
    }

    @Test func deleteRecordsMovesTheStartOffset() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        for value in ["a", "b", "c", "d"] { _ = try await stack.produce("t", batch([value])) }
        var request = DeleteRecordsRequest()
        request.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, offset: 2), .init(partitionIndex: 7, offset: 0)])]
        var response = try await stack.call(.deleteRecords, version: 2, request, as: DeleteRecordsResponse.self)
        #expect(response.topics[0].partitions.map(\.errorCode) == [0, KafkaErrorCode.unknownTopicOrPartition])
        #expect(response.topics[0].partitions[0].lowWatermark == 2)
        #expect(try await stack.readAllFrom("t", offset: 2) == ["c", "d"])
        #expect(try await stack.fetch("t", offset: 0).errorCode == KafkaErrorCode.offsetOutOfRange)
        // -1: up to the end; past the end: OFFSET_OUT_OF_RANGE.
        request.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, offset: 99)])]
        response = try await stack.call(.deleteRecords, version: 2, request, as: DeleteRecordsResponse.self)
        #expect(response.topics[0].partitions[0].errorCode == KafkaErrorCode.offsetOutOfRange)
        request.topics = [.init(name: "t", partitions: [.init(partitionIndex: 0, offset: -1)])]
        response = try await stack.call(.deleteRecords, version: 2, request, as: DeleteRecordsResponse.self)
        #expect(response.topics[0].partitions[0].lowWatermark == 4)
        try await stack.close()
    }

    @Test func offsetDeleteKeepsOffsetsOfSubscribedTopics() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        for topic in ["subscribed", "other"] { _ = try await stack.broker.createTopic(topic, partitions: 1) }
        // A simple commit (no members) on both topics, then a member subscribing to one.
        var commit = OffsetCommitRequest()
        commit.groupId = "g"
        commit.generationIdOrMemberEpoch = -1
        commit.topics = ["subscribed", "other"].map { .init(name: $0, partitions: [.init(partitionIndex: 0, committedOffset: 1)]) }
        _ = try await stack.call(.offsetCommit, version: 8, commit, as: OffsetCommitResponse.self)
        var subscription = KafkaWriter()
        subscription.writeInt16(1)
        var subscribed = ConsumerProtocolSubscription()
        subscribed.topics = ["subscribed"]
        subscribed.encode(to: &subscription, version: 1)
        let joined = await stack.handler.groups.coordinator(for: "g")!.join(groupID: "g", GroupStateMachine.JoinRequest(
            memberID: "", instanceID: "i", clientID: "c", clientHost: "/127.0.0.1", protocolType: "consumer",
            protocols: [.init(name: "range", metadata: Array(subscription.buffer.readableBytesView))],
            sessionTimeoutMilliseconds: 30_000, rebalanceTimeoutMilliseconds: 30_000, requiresKnownMemberID: false))
        #expect(joined.errorCode == 0)

        var request = OffsetDeleteRequest()
        request.groupId = "g"
        request.topics = ["subscribed", "other"].map { .init(name: $0, partitions: [.init(partitionIndex: 0)]) }
        let response = try await stack.call(.offsetDelete, version: 0, request, as: OffsetDeleteResponse.self)
        #expect(response.errorCode == 0)
        #expect(response.topics.map { $0.partitions[0].errorCode } == [KafkaErrorCode.groupSubscribedToTopic, 0])
        let left = stack.handler.groups.coordinator(for: "g")!.offsets.offsets(group: "g")
        #expect(left.keys.map(\.topic) == ["subscribed"])
        request.groupId = "nobody"
        #expect(try await stack.call(.offsetDelete, version: 0, request, as: OffsetDeleteResponse.self).errorCode == KafkaErrorCode.groupIDNotFound)
        try await stack.close()
    }

    @Test func theNodeIDIsConfigurable() async throws {
        var listener = KafkaListenerConfiguration()
        listener.nodeID = 7
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var request = MetadataRequest()
        request.topics = [.init(name: "t")]
        let metadata = try await stack.call(.metadata, version: 9, request, as: MetadataResponse.self)
        #expect(metadata.brokers.map(\.nodeId) == [7] && metadata.controllerId == 7)
        #expect(metadata.topics[0].partitions[0].leaderId == 7 && metadata.topics[0].partitions[0].replicaNodes == [7])
        var find = FindCoordinatorRequest()
        find.key = "g"
        #expect(try await stack.call(.findCoordinator, version: 2, find, as: FindCoordinatorResponse.self).nodeId == 7)
        try await stack.close()
    }

    /// Cluster mode: every live node is a broker, each partition's owner its leader, a
    /// partition that is moving is LEADER_NOT_AVAILABLE, the coordinator is wherever
    /// the cluster says.
    struct FixedCluster: KafkaClusterView {
        func brokers() -> [(id: Int32, host: String, port: Int32)] { [(1, "127.0.0.1", 19092), (2, "127.0.0.1", 29092), (3, "127.0.0.1", 39092)] }
        func leader(topic: String, partition: Int) -> Int32? { partition == 2 ? nil : Int32(partition + 1) }
        func coordinator(group: String) -> Int32? { 3 }
    }

    @Test func inClusterModeMetadataNamesEveryNodeAndEachPartitionsOwner() async throws {
        var listener = KafkaListenerConfiguration()
        listener.nodeID = 1
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener, cluster: FixedCluster())
        _ = try await stack.broker.createTopic("t", partitions: 3)
        var request = MetadataRequest()
        request.topics = [.init(name: "t")]
        let metadata = try await stack.call(.metadata, version: 9, request, as: MetadataResponse.self)
        #expect(metadata.brokers.map(\.nodeId) == [1, 2, 3] && metadata.brokers.map(\.port) == [19092, 29092, 39092])
        let partitions = metadata.topics[0].partitions
        #expect(partitions.map(\.leaderId) == [1, 2, -1])
        #expect(partitions.map(\.errorCode) == [0, 0, KafkaErrorCode.leaderNotAvailable])
        var find = FindCoordinatorRequest()
        find.key = "g"
        let coordinator = try await stack.call(.findCoordinator, version: 2, find, as: FindCoordinatorResponse.self)
        #expect(coordinator.nodeId == 3 && coordinator.port == 39092)
        try await stack.close()
    }

    /// In cluster mode a replication factor is the topic's ensemble; `replication.*`
    /// configs set the quorums, and contradicting ones are refused.
    @Test func inClusterModeAReplicationFactorIsTheTopicsEnsemble() async throws {
        var listener = KafkaListenerConfiguration()
        listener.nodeID = 1
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener, cluster: FixedCluster())
        let two = CreateTopicsRequest.CreatableTopic(name: "two", numPartitions: 1, replicationFactor: 2)
        var quorums = CreateTopicsRequest.CreatableTopic(name: "quorums", numPartitions: 1, replicationFactor: -1)
        quorums.configs = [.init(name: "replication.ensemble", value: "4"), .init(name: "replication.write", value: "3"), .init(name: "replication.ack", value: "2")]
        var contradiction = CreateTopicsRequest.CreatableTopic(name: "contradiction", numPartitions: 1, replicationFactor: -1)
        contradiction.configs = [.init(name: "replication.write", value: "2"), .init(name: "replication.ack", value: "3")]
        let zero = CreateTopicsRequest.CreatableTopic(name: "zero", numPartitions: 1, replicationFactor: 0)
        let results = try await createTopics(stack, [two, quorums, contradiction, zero])
        #expect(results.map(\.errorCode) == [0, 0, KafkaErrorCode.invalidConfig, KafkaErrorCode.invalidReplicationFactor])
        #expect(results[0].replicationFactor == 2 && results[1].replicationFactor == 4)
        let configuration = try stack.broker.describeTopic("quorums").configuration
        #expect(configuration.replicationEnsemble == 4 && configuration.replicationWrite == 3 && configuration.replicationAck == 2)
        #expect(try stack.broker.describeTopic("two").configuration.replicationEnsemble == 2)
        try await stack.close()
    }
}

extension KafkaStack {
    /// The values of a partition from `offset` to its end.
    func readAllFrom(_ topic: String, offset: Int64) async throws -> [String] {
        let data = try await fetch(topic, offset: offset)
        return try values(of: data.records)
    }
}

@Suite struct FetchAfterDeletionTests {
    /// librdkafka 0113 h_delete_topic: a consumer's fetch right after one of its topics
    /// is deleted must still be answered by its wait.
    @Test func aFetchAfterATopicIsDeletedIsAnsweredByItsWait() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        for topic in ["kept", "deleted"] { _ = try await stack.broker.createTopic(topic, partitions: 1) }
        var both = FetchRequest()
        both.replicaId = -1
        both.maxWaitMs = 500
        both.minBytes = 1
        both.maxBytes = 52_428_800
        both.topics = ["kept", "deleted"].map { .init(topic: $0, partitions: [.init(partition: 0, fetchOffset: 0, partitionMaxBytes: 1 << 20)]) }
        var session = KafkaSession(peer: "test")
        let parked = await stack.handler.dispatch(frame: KafkaStack.requestFrame(.fetch, version: 11, both), session: &session)
        guard case .deferred(let later) = parked else {
            Issue.record("an empty fetch did not wait")
            return
        }
        let waiting = Task { await later() }
        try await stack.broker.deleteTopic("deleted")
        _ = await waiting.value
        var kept = both
        kept.topics = [.init(topic: "kept", partitions: [.init(partition: 0, fetchOffset: 0, partitionMaxBytes: 1 << 20)])]
        let next = await stack.handler.dispatch(frame: KafkaStack.requestFrame(.fetch, version: 11, kept), session: &session)
        switch next {
        case .deferred(let later): #expect(await later().frame != nil)
        case .ready(let answer): #expect(answer.frame != nil)
        case .none: Issue.record("no answer")
        }
        try await stack.close()
    }
}
