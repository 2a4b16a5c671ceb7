import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductGroups
import AqueductLog
import Foundation
import NIOCore
import Synchronization

/// Admin APIs: topics and their configs, records deletion, offsets deletion.
extension KafkaRequestHandler {
    // MARK: - CreateTopics

    func createTopics(_ request: CreateTopicsRequest) async -> CreateTopicsResponse {
        var response = CreateTopicsResponse()
        // Kafka answers a name given twice in one request with INVALID_REQUEST for it.
        let counts = Dictionary(request.topics.map { ($0.name, 1) }, uniquingKeysWith: +)
        for topic in request.topics {
            var result = CreateTopicsResponse.CreatableTopicResult(name: topic.name)
            do throws(BrokerError) {
                if counts[topic.name, default: 0] > 1 {
                    throw BrokerError(.invalidRequest, "topic '\(topic.name)' is named more than once in the request")
                }
                let partitions = try partitionCount(of: topic)
                var configs: [String: String] = [:]
                for config in topic.configs {
                    guard let value = config.value else { continue }  // null: the default
                    configs[config.name] = value
                }
                // Cluster mode: a replication factor is the topic's ensemble (copies of
                // each segment); write and ack quorums follow the cluster's, capped by it.
                if cluster != nil, topic.replicationFactor > 0, configs["replication.ensemble"] == nil {
                    configs["replication.ensemble"] = String(topic.replicationFactor)
                }
                let settings = try TopicConfigs.settings(from: configs)
                if request.validateOnly {
                    try await broker.validateNewTopic(topic.name, partitions: partitions, settings: settings)
                    result.numPartitions = Int32(clamping: partitions)
                } else {
                    let created = try await broker.createTopic(topic.name, partitions: partitions, settings: settings, configs: configs)
                    result.topicId = KafkaUUID(uuidString: created.id) ?? .zero
                    result.numPartitions = Int32(clamping: created.partitions.count)
                }
                result.replicationFactor = cluster == nil ? 1 : Int16(clamping: settings.applied(to: broker.defaults).replicationEnsemble ?? 1)
            } catch {
                result.errorCode = KafkaErrorCode.from(error)
                result.errorMessage = Self.shortened(error.message)
            }
            response.topics.append(result)
        }
        return response
    }

    /// Partitions of a topic to create: its count, or its manual assignment, which may
    /// name this node only (one replica per partition, partitions 0…n-1).
    private func partitionCount(of topic: CreateTopicsRequest.CreatableTopic) throws(BrokerError) -> Int {
        if topic.assignments.isEmpty {
            if cluster == nil {
                guard topic.replicationFactor == -1 || topic.replicationFactor == 1 else {
                    throw BrokerError(.invalidReplicationFactor, "this server keeps one replica; use replication factor 1 or -1")
                }
            } else if topic.replicationFactor == 0 || topic.replicationFactor < -1 || Int(topic.replicationFactor) > LogConfiguration.replicationEnsembleMax {
                throw BrokerError(.invalidReplicationFactor, "a replication factor is 1 to \(LogConfiguration.replicationEnsembleMax), or -1 for the cluster's")
            }
            return topic.numPartitions == -1 ? max(1, listener.autoCreatePartitions) : Int(topic.numPartitions)
        }
        guard topic.numPartitions == -1, topic.replicationFactor == -1 else {
            throw BrokerError(.invalidRequest, "a manual replica assignment comes with partitions and replication factor -1")
        }
        let indexes = topic.assignments.map { Int($0.partitionIndex) }.sorted()
        guard indexes == Array(0..<indexes.count) else {
            throw BrokerError(.invalidReplicaAssignment, "a manual assignment must name partitions 0 to \(indexes.count - 1), each once")
        }
        for assignment in topic.assignments where assignment.brokerIds != [nodeID] {
            throw BrokerError(.invalidReplicaAssignment,
                "partition \(assignment.partitionIndex) is assigned to nodes \(assignment.brokerIds.prefix(8)); this server is node \(nodeID) alone")
        }
        return indexes.count
    }

    // MARK: - DescribeConfigs, AlterConfigs, IncrementalAlterConfigs

    /// Kafka's resource types.
    enum ConfigResource {
        static let topic: Int8 = 2
        static let broker: Int8 = 4
    }

    /// DescribeConfigs' config sources.
    enum ConfigSource {
        static let dynamicTopic: Int8 = 1
        static let dynamicBroker: Int8 = 2
        static let staticBroker: Int8 = 4
        static let defaultConfig: Int8 = 5
    }

    func describeConfigs(_ request: DescribeConfigsRequest) -> DescribeConfigsResponse {
        var response = DescribeConfigsResponse()
        for resource in request.resources {
            var result = DescribeConfigsResponse.DescribeConfigsResult(resourceType: resource.resourceType, resourceName: resource.resourceName)
            let wanted = resource.configurationKeys.map(Set.init)
            switch resource.resourceType {
            case ConfigResource.topic:
                guard let (overrides, configuration) = try? broker.topicConfigs(resource.resourceName) else {
                    result.errorCode = KafkaErrorCode.unknownTopicOrPartition
                    result.errorMessage = Self.shortened("topic '\(resource.resourceName)' does not exist")
                    break
                }
                result.configs = TopicConfigs.describe(overrides: overrides, configuration: configuration)
                    .filter { wanted?.contains($0.name) ?? true }
                    .map { entry in
                        DescribeConfigsResponse.DescribeConfigsResourceResult(
                            name: entry.name, value: entry.value, readOnly: false,
                            configSource: entry.isSet ? ConfigSource.dynamicTopic : ConfigSource.defaultConfig, isDefault: !entry.isSet)
                    }
            case ConfigResource.broker:
                guard resource.resourceName.isEmpty || resource.resourceName == String(nodeID) else {
                    result.errorCode = KafkaErrorCode.invalidRequest
                    result.errorMessage = Self.shortened("this server is node \(nodeID), not '\(resource.resourceName)'")
                    break
                }
                let dynamic = brokerConfigs.withLock { $0 }
                let entries = brokerConfigEntries(dynamic: dynamic)
                result.configs = entries.filter { wanted?.contains($0.name) ?? true }.map { entry in
                    DescribeConfigsResponse.DescribeConfigsResourceResult(
                        name: entry.name, value: entry.value, readOnly: entry.source != ConfigSource.dynamicBroker,
                        configSource: entry.source, isDefault: entry.source == ConfigSource.defaultConfig)
                }
            default:
                result.errorCode = KafkaErrorCode.invalidRequest
                result.errorMessage = "resource type \(resource.resourceType) is not supported"
            }
            response.results.append(result)
        }
        return response
    }

    /// The broker configs a client can read: those this node has, as Kafka names them,
    /// and the dynamic ones clients set.
    private func brokerConfigEntries(dynamic: [String: String]) -> [(name: String, value: String, source: Int8)] {
        let (host, port) = listener.advertised
        var entries: [(String, String, Int8)] = [
            ("broker.id", String(nodeID), ConfigSource.staticBroker),
            ("advertised.listeners", "PLAINTEXT://\(host):\(port)", ConfigSource.staticBroker),
            ("auto.create.topics.enable", String(listener.autoCreatePartitions > 0), ConfigSource.staticBroker),
            ("num.partitions", String(max(1, listener.autoCreatePartitions)), ConfigSource.staticBroker),
            ("default.replication.factor", "1", ConfigSource.staticBroker),
            ("message.max.bytes", String(broker.defaults.batchBytesMax), ConfigSource.staticBroker),
            ("log.retention.ms", String(broker.defaults.retentionMilliseconds ?? -1), ConfigSource.staticBroker),
            ("log.segment.bytes", String(broker.defaults.segmentBytes), ConfigSource.staticBroker),
        ]
        let fixed = Set(entries.map(\.0))
        entries += dynamic.filter { !fixed.contains($0.key) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value, ConfigSource.dynamicBroker) }
        return entries
    }

    /// Most dynamic broker configs kept (they are accepted and reported, not applied).
    static let brokerConfigsMax = 256

    func alterConfigs(_ request: AlterConfigsRequest) async -> AlterConfigsResponse {
        var response = AlterConfigsResponse()
        for resource in request.resources {
            // AlterConfigs replaces the whole set: names not given go back to defaults.
            var configs: [String: String] = [:]
            for config in resource.configs { if let value = config.value { configs[config.name] = value } }
            let (code, message) = await alter(
                type: resource.resourceType, name: resource.resourceName, validateOnly: request.validateOnly) { _ in configs }
            response.responses.append(AlterConfigsResponse.AlterConfigsResourceResponse(
                errorCode: code, errorMessage: message, resourceType: resource.resourceType, resourceName: resource.resourceName))
        }
        return response
    }

    func incrementalAlterConfigs(_ request: IncrementalAlterConfigsRequest) async -> IncrementalAlterConfigsResponse {
        var response = IncrementalAlterConfigsResponse()
        for resource in request.resources {
            let (code, message) = await alter(
                type: resource.resourceType, name: resource.resourceName, validateOnly: request.validateOnly
            ) { current throws(BrokerError) in
                var configs = current
                for config in resource.configs {
                    switch config.configOperation {
                    case 0:  // SET
                        guard let value = config.value else { throw BrokerError(.invalidConfig, "SET '\(config.name)' needs a value") }
                        configs[config.name] = value
                    case 1:  // DELETE: back to the default
                        configs[config.name] = nil
                    case 2, 3:  // APPEND, SUBTRACT (list configs)
                        guard let value = config.value else { throw BrokerError(.invalidConfig, "'\(config.name)' needs a value") }
                        var items = (configs[config.name] ?? "").split(separator: ",").map(String.init)
                        let given = value.split(separator: ",").map(String.init)
                        if config.configOperation == 2 { items += given.filter { !items.contains($0) } } else { items.removeAll { given.contains($0) } }
                        configs[config.name] = items.isEmpty ? nil : items.joined(separator: ",")
                    default:
                        throw BrokerError(.invalidRequest, "unknown config operation \(config.configOperation)")
                    }
                }
                return configs
            }
            response.responses.append(IncrementalAlterConfigsResponse.AlterConfigsResourceResponse(
                errorCode: code, errorMessage: message, resourceType: resource.resourceType, resourceName: resource.resourceName))
        }
        return response
    }

    /// Applies a change to a resource's configs: `change` gets the current set and
    /// returns the new one. Returns Kafka's error code and message.
    private func alter(
        type: Int8, name: String, validateOnly: Bool, _ change: ([String: String]) throws(BrokerError) -> [String: String]
    ) async -> (Int16, String?) {
        do throws(BrokerError) {
            switch type {
            case ConfigResource.topic:
                let configs = try change(try broker.topicConfigs(name).overrides)
                try await broker.alterTopicConfigs(name, configs: configs, validateOnly: validateOnly)
            case ConfigResource.broker:
                guard name.isEmpty || name == String(nodeID) else {
                    throw BrokerError(.invalidRequest, "this server is node \(nodeID), not '\(name)'")
                }
                // Kept and reported by DescribeConfigs; this node applies none of them.
                let current = brokerConfigs.withLock { $0 }
                let configs = try change(current)
                guard configs.count <= Self.brokerConfigsMax,
                    configs.allSatisfy({ $0.key.utf8.count <= 255 && $0.value.utf8.count <= 4_096 && !$0.key.isEmpty })
                else {
                    throw BrokerError(.invalidConfig, "at most \(Self.brokerConfigsMax) broker configs, names up to 255 bytes, values up to 4096")
                }
                if !validateOnly { brokerConfigs.withLock { $0 = configs } }
            default:
                throw BrokerError(.invalidRequest, "resource type \(type) is not supported")
            }
            return (KafkaErrorCode.none, nil)
        } catch {
            return (KafkaErrorCode.from(error), Self.shortened(error.message))
        }
    }

    // MARK: - DeleteRecords

    /// Moves partitions' start offsets forward (Kafka's DeleteRecords): records before
    /// the offset are no longer readable, and whole segments below it are deleted.
    /// Offset -1 means the high watermark.
    func deleteRecords(_ request: DeleteRecordsRequest) async -> DeleteRecordsResponse {
        var response = DeleteRecordsResponse()
        for topic in request.topics {
            var topicResult = DeleteRecordsResponse.DeleteRecordsTopicResult(name: topic.name)
            for partition in topic.partitions {
                var result = DeleteRecordsResponse.DeleteRecordsPartitionResult(partitionIndex: partition.partitionIndex, lowWatermark: -1)
                do throws(BrokerError) {
                    let index = Int(partition.partitionIndex)
                    let (start, end) = try broker.offsets(topic: topic.name, partition: index)
                    let before = partition.offset == -1 ? end : partition.offset
                    guard before >= 0, before <= end else {
                        throw BrokerError(.offsetOutOfRange, "offset \(partition.offset) is past the end (\(end)) of \(topic.name)-\(index)")
                    }
                    if before > start { try await broker.truncate(topic: topic.name, partition: index, before: before) }
                    result.lowWatermark = try broker.offsets(topic: topic.name, partition: index).start
                } catch {
                    result.errorCode = KafkaErrorCode.from(error)
                }
                topicResult.partitions.append(result)
            }
            response.topics.append(topicResult)
        }
        return response
    }

    // MARK: - OffsetDelete

    func offsetDelete(_ request: OffsetDeleteRequest) async -> OffsetDeleteResponse {
        var response = OffsetDeleteResponse()
        let partitions = request.topics.flatMap { topic in topic.partitions.map { TopicPartition(topic.name, Int($0.partitionIndex)) } }
        guard let coordinator = groups.coordinator(for: request.groupId) else {
            response.errorCode = KafkaErrorCode.notCoordinator
            return response
        }
        let (groupCode, codes) = await coordinator.deleteOffsets(groupID: request.groupId, partitions: partitions) { group in
            Self.subscribedTopics(of: group)
        }
        response.errorCode = groupCode
        guard groupCode == KafkaErrorCode.none else { return response }
        response.topics = request.topics.map { topic in
            OffsetDeleteResponse.OffsetDeleteResponseTopic(name: topic.name, partitions: topic.partitions.map { partition in
                OffsetDeleteResponse.OffsetDeleteResponsePartition(
                    partitionIndex: partition.partitionIndex,
                    errorCode: codes[TopicPartition(topic.name, Int(partition.partitionIndex))] ?? KafkaErrorCode.none)
            })
        }
        return response
    }

    /// Topics a consumer group's members subscribe to, read from their metadata for the
    /// chosen protocol (Kafka's ConsumerProtocolSubscription); nil when the group is
    /// not a consumer group or a subscription cannot be read.
    static func subscribedTopics(of group: GroupStateMachine) -> Set<String>? {
        guard group.protocolType == "consumer" else { return nil }
        var topics = Set<String>()
        for member in group.members {
            guard let metadata = member.protocols.first(where: { $0.name == group.protocolName })?.metadata ?? member.protocols.first?.metadata
            else { continue }
            var reader = KafkaReader(ByteBuffer(bytes: metadata))
            guard let version = try? reader.readInt16("version"),
                let subscription = try? ConsumerProtocolSubscription(from: &reader, version: max(0, min(version, 3)))
            else { return nil }
            topics.formUnion(subscription.topics)
        }
        return topics
    }
}
