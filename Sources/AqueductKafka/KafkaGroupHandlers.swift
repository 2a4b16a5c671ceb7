import AqueductAPI
import AqueductGroups
import AqueductBroker
import Foundation

/// Consumer group APIs: translate requests to the coordinator and its replies back.
extension KafkaRequestHandler {
    func joinGroup(_ request: JoinGroupRequest, version: Int16, session: KafkaSession) async -> JoinGroupResponse {
        var response = JoinGroupResponse()
        guard !request.groupId.isEmpty else {
            response.errorCode = KafkaErrorCode.invalidGroupID
            return response
        }
        guard let coordinator = groups.coordinator(for: request.groupId) else {
            response.errorCode = KafkaErrorCode.notCoordinator
            return response
        }
        let reply = await coordinator.join(groupID: request.groupId, GroupStateMachine.JoinRequest(
            memberID: request.memberId, instanceID: request.groupInstanceId, clientID: session.clientID ?? "",
            clientHost: "/" + (session.peer.split(separator: ":").first.map(String.init) ?? session.peer), protocolType: request.protocolType,
            protocols: request.protocols.map { GroupStateMachine.SupportedProtocol(name: $0.name, metadata: $0.metadata) },
            sessionTimeoutMilliseconds: Int64(request.sessionTimeoutMs),
            // v0 has no rebalance timeout: the session timeout serves for both.
            rebalanceTimeoutMilliseconds: Int64(version >= 1 ? request.rebalanceTimeoutMs : request.sessionTimeoutMs),
            requiresKnownMemberID: version >= 4))
        response.errorCode = reply.errorCode
        response.generationId = reply.generation
        response.protocolType = reply.protocolType
        response.protocolName = reply.protocolName ?? (version >= 7 ? nil : "")
        response.leader = reply.leaderID
        response.memberId = reply.memberID
        response.members = reply.members.map {
            JoinGroupResponse.JoinGroupResponseMember(memberId: $0.id, groupInstanceId: $0.instanceID, metadata: $0.metadata)
        }
        return response
    }

    func syncGroup(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        guard let coordinator = groups.coordinator(for: request.groupId) else {
            var response = SyncGroupResponse()
            response.errorCode = KafkaErrorCode.notCoordinator
            return response
        }
        let reply = await coordinator.sync(
            groupID: request.groupId, memberID: request.memberId, instanceID: request.groupInstanceId, generation: request.generationId,
            assignments: request.assignments.map { ($0.memberId, $0.assignment) })
        var response = SyncGroupResponse()
        response.errorCode = reply.errorCode
        response.protocolType = reply.protocolType
        response.protocolName = reply.protocolName
        response.assignment = reply.assignment
        return response
    }

    func heartbeat(_ request: HeartbeatRequest) -> HeartbeatResponse {
        var response = HeartbeatResponse()
        response.errorCode = groups.coordinator(for: request.groupId)?.heartbeat(
            groupID: request.groupId, memberID: request.memberId, instanceID: request.groupInstanceId, generation: request.generationId) ?? KafkaErrorCode.notCoordinator
        return response
    }

    func leaveGroup(_ request: LeaveGroupRequest, version: Int16) -> LeaveGroupResponse {
        var response = LeaveGroupResponse()
        guard let coordinator = groups.coordinator(for: request.groupId) else {
            response.errorCode = KafkaErrorCode.notCoordinator
            return response
        }
        if version < 3 {
            let codes = coordinator.leave(groupID: request.groupId, members: [(request.memberId, nil)])
            response.errorCode = codes.first ?? KafkaErrorCode.unknownMemberID
            return response
        }
        let departing = request.members.map { ($0.memberId, $0.groupInstanceId) }
        let codes = coordinator.leave(groupID: request.groupId, members: departing)
        response.members = zip(request.members, codes).map { member, code in
            LeaveGroupResponse.MemberResponse(memberId: member.memberId, groupInstanceId: member.groupInstanceId, errorCode: code)
        }
        return response
    }

    func offsetCommit(_ request: OffsetCommitRequest) async -> OffsetCommitResponse {
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        var commits: [(TopicPartition, OffsetStore.Committed)] = []
        for topic in request.topics {
            for partition in topic.partitions {
                commits.append((TopicPartition(topic.name, Int(partition.partitionIndex)), OffsetStore.Committed(
                    offset: partition.committedOffset, leaderEpoch: partition.committedLeaderEpoch,
                    metadata: partition.committedMetadata, commitTimestamp: now)))
            }
        }
        // Partitions of unknown topics, and metadata longer than Kafka's
        // offset.metadata.max.bytes, are refused one by one; the rest are stored together.
        var codes: [TopicPartition: Int16] = [:]
        let metadataBytesMax = groups.limits.offsetMetadataBytesMax
        let known = commits.filter { commit in
            guard let count = try? broker.partitionCount(commit.0.topic), commit.0.partition >= 0, commit.0.partition < count else {
                codes[commit.0] = KafkaErrorCode.unknownTopicOrPartition
                return false
            }
            guard (commit.1.metadata?.utf8.count ?? 0) <= metadataBytesMax else {
                codes[commit.0] = KafkaErrorCode.offsetMetadataTooLarge
                return false
            }
            return true
        }
        let coordinator = groups.coordinator(for: request.groupId)
        let code = coordinator == nil ? KafkaErrorCode.notCoordinator : known.isEmpty ? KafkaErrorCode.none : await coordinator!.commit(
            groupID: request.groupId, memberID: request.memberId, instanceID: request.groupInstanceId,
            generation: request.generationIdOrMemberEpoch, known)
        for commit in known { codes[commit.0] = code }
        if coordinator == nil { for commit in commits { codes[commit.0] = code } }
        var response = OffsetCommitResponse()
        response.topics = request.topics.map { topic in
            OffsetCommitResponse.OffsetCommitResponseTopic(name: topic.name, partitions: topic.partitions.map {
                OffsetCommitResponse.OffsetCommitResponsePartition(
                    partitionIndex: $0.partitionIndex, errorCode: codes[TopicPartition(topic.name, Int($0.partitionIndex))] ?? 0)
            })
        }
        return response
    }

    func offsetFetch(_ request: OffsetFetchRequest, version: Int16) -> OffsetFetchResponse {
        var response = OffsetFetchResponse()
        // v8+ asks for several groups at once; earlier versions for one.
        // Nil: another node coordinates the group.
        func lookUp(_ groupID: String, _ topics: [(name: String, partitions: [Int32])]?) -> [(String, [(Int32, OffsetStore.Committed?)])]? {
            guard let offsets = groups.coordinator(for: groupID)?.offsets else { return nil }
            if let topics {
                let wanted = topics.flatMap { topic in topic.partitions.map { TopicPartition(topic.name, Int($0)) } }
                let found = offsets.offsets(group: groupID, partitions: wanted)
                return topics.map { topic in
                    (topic.name, topic.partitions.map { ($0, found[TopicPartition(topic.name, Int($0))]) })
                }
            }
            let all = offsets.offsets(group: groupID)
            let byTopic = Dictionary(grouping: all, by: \.key.topic)
            return byTopic.keys.sorted().map { name in
                (name, byTopic[name]!.sorted { $0.key.partition < $1.key.partition }.map { (Int32($0.key.partition), $0.value) })
            }
        }
        if version >= 8 {
            response.groups = request.groups.map { group in
                guard let results = lookUp(group.groupId, group.topics.map { $0.map { ($0.name, $0.partitionIndexes) } }) else {
                    return OffsetFetchResponse.OffsetFetchResponseGroup(groupId: group.groupId, errorCode: KafkaErrorCode.notCoordinator)
                }
                return OffsetFetchResponse.OffsetFetchResponseGroup(groupId: group.groupId, topics: results.map { name, partitions in
                    OffsetFetchResponse.OffsetFetchResponseTopics(name: name, partitions: partitions.map { index, committed in
                        OffsetFetchResponse.OffsetFetchResponsePartitions(
                            partitionIndex: index, committedOffset: committed?.offset ?? -1,
                            committedLeaderEpoch: committed?.leaderEpoch ?? -1, metadata: committed?.metadata ?? "")
                    })
                })
            }
            return response
        }
        guard let results = lookUp(request.groupId, request.topics.map { $0.map { ($0.name, $0.partitionIndexes) } }) else {
            // v2+ has a response-wide code; v0-1 carry it per partition.
            response.errorCode = KafkaErrorCode.notCoordinator
            response.topics = (request.topics ?? []).map { topic in
                OffsetFetchResponse.OffsetFetchResponseTopic(name: topic.name, partitions: topic.partitionIndexes.map {
                    OffsetFetchResponse.OffsetFetchResponsePartition(partitionIndex: $0, committedOffset: -1, errorCode: KafkaErrorCode.notCoordinator)
                })
            }
            return response
        }
        response.topics = results.map { name, partitions in
            OffsetFetchResponse.OffsetFetchResponseTopic(name: name, partitions: partitions.map { index, committed in
                OffsetFetchResponse.OffsetFetchResponsePartition(
                    partitionIndex: index, committedOffset: committed?.offset ?? -1,
                    committedLeaderEpoch: committed?.leaderEpoch ?? -1, metadata: committed?.metadata ?? "")
            })
        }
        return response
    }

    func describeGroups(_ request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        var response = DescribeGroupsResponse()
        for groupID in request.groups {
            var described = DescribeGroupsResponse.DescribedGroup(groupId: groupID)
            guard let coordinator = groups.coordinator(for: groupID) else {
                described.errorCode = KafkaErrorCode.notCoordinator
                response.groups.append(described)
                continue
            }
            guard let group = coordinator.describe(groupID) else {
                described.groupState = GroupStateMachine.State.dead.rawValue
                response.groups.append(described)
                continue
            }
            described.groupState = group.state.rawValue
            described.protocolType = group.protocolType ?? ""
            described.protocolData = group.protocolName ?? ""
            described.members = group.members.map { member in
                DescribeGroupsResponse.DescribedGroupMember(
                    memberId: member.id, groupInstanceId: member.instanceID, clientId: member.clientID, clientHost: member.clientHost,
                    memberMetadata: member.protocols.first { $0.name == group.protocolName }?.metadata ?? [],
                    memberAssignment: member.assignment)
            }
            response.groups.append(described)
        }
        return response
    }

    func listGroups(_ request: ListGroupsRequest) -> ListGroupsResponse {
        var response = ListGroupsResponse()
        let states = Set(request.statesFilter.map { $0.lowercased() })
        response.groups = groups.allGroups()
            .filter { states.isEmpty || states.contains($0.state.rawValue.lowercased()) }
            .sorted { $0.groupID < $1.groupID }
            .map { ListGroupsResponse.ListedGroup(groupId: $0.groupID, protocolType: $0.protocolType ?? "consumer", groupState: $0.state.rawValue, groupType: "classic") }
        return response
    }

    func deleteGroups(_ request: DeleteGroupsRequest) async -> DeleteGroupsResponse {
        var response = DeleteGroupsResponse()
        for groupID in request.groupsNames {
            let code = await groups.coordinator(for: groupID)?.deleteGroup(groupID) ?? KafkaErrorCode.notCoordinator
            response.results.append(DeleteGroupsResponse.DeletableGroupResult(groupId: groupID, errorCode: code))
        }
        return response
    }
}
