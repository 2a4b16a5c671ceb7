import AqueductAPI
import AqueductBroker

/// Groups as the HTTP API, the CLI and the metrics see them: members with their
/// decoded assignments, committed offsets with lag against the partitions' ends.
/// In cluster mode it sees the groups this node coordinates.
public struct CoordinatorGroupDirectory: GroupDirectory {
    let groups: GroupShards
    let broker: Broker

    public init(groups: GroupShards, broker: Broker) {
        self.groups = groups
        self.broker = broker
    }

    public func groupSummaries() -> [GroupSummary] {
        groups.active.flatMap { coordinator in
            coordinator.allGroups().map { group in
                GroupSummary(name: group.groupID, state: group.state.rawValue, members: group.members.count,
                    lag: describe(group, offsets: coordinator.offsets).lag)
            }
        }.sorted { $0.name < $1.name }
    }

    public func describeGroup(_ name: String) -> GroupDescription? {
        guard let coordinator = groups.coordinator(for: name) else { return nil }
        return coordinator.describe(name).map { describe($0, offsets: coordinator.offsets) }
    }

    public func commitOffsets(group: String, topic: String, offsets: [Int: Int64]) async throws(BrokerError) {
        guard !group.isEmpty else { throw BrokerError(.invalidRequest, "group name is empty") }
        guard let coordinator = groups.coordinator(for: group) else { throw Self.notHere(group) }
        var commits: [(TopicPartition, OffsetStore.Committed)] = []
        for (partition, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            guard offset >= 0 else { throw BrokerError(.invalidRequest, "offset \(offset) of partition \(partition) is negative") }
            _ = try broker.offsets(topic: topic, partition: partition)  // the partition exists
            commits.append((TopicPartition(topic, partition),
                            OffsetStore.Committed(offset: offset, leaderEpoch: -1, metadata: nil, commitTimestamp: 0)))
        }
        let code = await coordinator.commit(groupID: group, memberID: "", generation: -1, commits)
        switch code {
        case KafkaErrorCode.none: return
        case KafkaErrorCode.unknownMemberID:
            throw BrokerError(.invalidRequest, "group '\(group)' has members: its offsets are committed by them",
                hint: "use another group name for this consumer")
        default:
            throw BrokerError(.unavailable, "offset commit failed (Kafka error code \(code))", hint: "retry")
        }
    }

    public func committedOffsets(group: String, topic: String) -> [Int: Int64] {
        var found: [Int: Int64] = [:]
        for (partition, committed) in groups.coordinator(for: group)?.offsets.offsets(group: group) ?? [:] where partition.topic == topic {
            found[partition.partition] = committed.offset
        }
        return found
    }

    static func notHere(_ group: String) -> BrokerError {
        BrokerError(.unavailable, "group '\(group)' is coordinated by another node of the cluster",
            hint: "send the request to the node GET /v1/cluster names for it, or retry once it has moved")
    }

    private func describe(_ group: GroupStateMachine, offsets: OffsetStore) -> GroupDescription {
        var owners: [TopicPartition: String] = [:]
        let members = group.members.map { member -> GroupDescription.Member in
            var assignment: [String: [Int]] = [:]
            if group.protocolType == "consumer", let decoded = ConsumerAssignment.decode(member.assignment) {
                for (topic, partitions) in decoded {
                    assignment[topic, default: []] += partitions
                    for partition in partitions { owners[TopicPartition(topic, partition)] = member.id }
                }
                for topic in assignment.keys { assignment[topic]?.sort() }
            }
            return GroupDescription.Member(
                memberID: member.id, instanceID: member.instanceID, clientID: member.clientID, clientHost: member.clientHost,
                assignment: assignment)
        }
        let committed = offsets.offsets(group: group.groupID)
        let offsets = committed.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }.map { partition, committed in
            let end = (try? broker.offsets(topic: partition.topic, partition: partition.partition).end) ?? committed.offset
            return GroupDescription.PartitionOffset(
                topic: partition.topic, partition: partition.partition, committedOffset: committed.offset, endOffset: end,
                lag: max(0, end - committed.offset), metadata: committed.metadata, memberID: owners[partition])
        }
        return GroupDescription(
            name: group.groupID, state: group.state.rawValue, protocolType: group.protocolType ?? "",
            assignmentProtocol: group.protocolName ?? "", generation: group.generation, members: members, offsets: offsets)
    }
}

/// The consumer protocol's assignment (Kafka's ConsumerProtocolAssignment v0-3, never
/// flexible): a version, then topics with their partitions, then user data. Decoded
/// here to show who consumes what; bytes that do not parse show no assignment.
enum ConsumerAssignment {
    static func decode(_ bytes: [UInt8]) -> [(topic: String, partitions: [Int])]? {
        var position = 0
        func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard position + MemoryLayout<T>.size <= bytes.count else { return nil }
            var value: T = 0
            for _ in 0..<MemoryLayout<T>.size {
                value = value << 8 | T(truncatingIfNeeded: bytes[position])
                position += 1
            }
            return value
        }
        guard let version = integer(Int16.self), version >= 0, let topics = integer(Int32.self), topics >= 0 else { return nil }
        var result: [(topic: String, partitions: [Int])] = []
        for _ in 0..<topics {
            guard let length = integer(Int16.self), length >= 0, position + Int(length) <= bytes.count else { return nil }
            let topic = String(decoding: bytes[position..<position + Int(length)], as: UTF8.self)
            position += Int(length)
            // At least 4 bytes per partition: a count larger than what is left is malformed.
            guard let count = integer(Int32.self), count >= 0, Int(count) <= (bytes.count - position) / 4 else { return nil }
            var partitions: [Int] = []
            partitions.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let partition = integer(Int32.self) else { return nil }
                partitions.append(Int(partition))
            }
            result.append((topic, partitions))
        }
        return result
    }
}
