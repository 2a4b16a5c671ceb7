import AqueductAPI
import AqueductBroker
import AqueductLog
import AqueductMetadata
import AqueductStorage
import AqueductTestSupport
import Logging
import Testing

@testable import AqueductGroups

/// The coordinator with a real offsets log and a clock moved by hand: what clients can
/// make it keep, and how long.
struct GroupStack {
    let storage: StorageNode
    let metadata: EmbeddedMetadataStore
    let logs: LogStore
    let broker: Broker
    let clock: ManualWallClock
    let coordinator: GroupCoordinator

    /// Joins here are answered at once: the first rebalance's delay is scripted in
    /// GroupStateMachineTests, and these tests' clock is manual.
    static func open(_ directory: String, limits: GroupLimits = GroupLimits(), clock: ManualWallClock = ManualWallClock()) async throws -> GroupStack {
        var limits = limits
        limits.initialRebalanceDelayMilliseconds = 0
        var configuration = StorageConfiguration(directory: directory + "/storage")
        configuration.flushIntervalMilliseconds = 50
        configuration.journalFileBytesMax = 4 << 20
        let storage = try StorageNode(configuration: configuration)
        let metadata = try EmbeddedMetadataStore(directory: directory + "/metadata")
        let logs = LogStore(storage: storage, metadata: metadata)
        try await logs.open()
        let broker = Broker(logs: logs, defaults: LogConfiguration())
        try await broker.start()
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let offsets = try await OffsetStore.open(logs: logs, clock: clock, offsetsMax: limits.offsetsMax, logger: logger)
        let coordinator = GroupCoordinator(offsets: offsets, clock: clock, limits: limits, logger: logger)
        return GroupStack(storage: storage, metadata: metadata, logs: logs, broker: broker, clock: clock, coordinator: coordinator)
    }

    func close() async throws {
        await storage.close()
        try await metadata.close()
    }

    func joinRequest(memberID: String = "", instanceID: String? = nil, metadata: [UInt8] = [1], v4: Bool = false) -> GroupStateMachine.JoinRequest {
        GroupStateMachine.JoinRequest(
            memberID: memberID, instanceID: instanceID, clientID: "client", clientHost: "/127.0.0.1", protocolType: "consumer",
            protocols: [.init(name: "range", metadata: metadata)], sessionTimeoutMilliseconds: 10_000,
            rebalanceTimeoutMilliseconds: 10_000, requiresKnownMemberID: v4)
    }

    static func committed(_ offset: Int64, metadata: String? = nil) -> OffsetStore.Committed {
        OffsetStore.Committed(offset: offset, leaderEpoch: -1, metadata: metadata, commitTimestamp: 0)
    }
}

@Suite struct GroupCoordinatorTests {
    @Test func requestsNamingUnknownGroupsGetKafkasErrorAndCreateNothing() async throws {
        let stack = try await GroupStack.open(temporaryDirectory())
        let coordinator = stack.coordinator
        for index in 0..<1_000 {
            let group = "ghost-\(index)"
            #expect(coordinator.heartbeat(groupID: group, memberID: "m", generation: 1) == KafkaErrorCode.unknownMemberID)
            #expect(coordinator.leave(groupID: group, members: [("m", nil)]) == [KafkaErrorCode.unknownMemberID])
            let sync = await coordinator.sync(groupID: group, memberID: "m", generation: 1, assignments: [])
            #expect(sync.errorCode == KafkaErrorCode.unknownMemberID)
            // A commit with a generation for a group that does not exist: Kafka's ILLEGAL_GENERATION.
            let code = await coordinator.commit(groupID: group, memberID: "m", generation: 3, [(TopicPartition("t", 0), GroupStack.committed(1))])
            #expect(code == KafkaErrorCode.illegalGeneration)
        }
        #expect(coordinator.usage.groups == 0 && coordinator.usage.retainedBytes == 0)
        #expect(coordinator.allGroups().isEmpty && stack.coordinator.offsets.count == 0)
        try await stack.close()
    }

    @Test func aGroupWhoseLastMemberLeavesIsForgotten() async throws {
        let stack = try await GroupStack.open(temporaryDirectory())
        let joined = await stack.coordinator.join(groupID: "g", stack.joinRequest())
        #expect(joined.errorCode == 0 && stack.coordinator.usage.groups == 1 && stack.coordinator.usage.retainedBytes > 0)
        #expect(stack.coordinator.leave(groupID: "g", members: [(joined.memberID, nil)]) == [0])
        #expect(stack.coordinator.usage.groups == 0 && stack.coordinator.usage.retainedBytes == 0)
        #expect(stack.coordinator.describe("g") == nil)
        // A member whose session runs out is forgotten the same way.
        let again = await stack.coordinator.join(groupID: "g", stack.joinRequest())
        #expect(again.errorCode == 0)
        stack.clock.advance(byMilliseconds: 11_000)
        stack.coordinator.tick()
        #expect(stack.coordinator.usage.groups == 0 && stack.coordinator.usage.retainedBytes == 0)
        try await stack.close()
    }

    @Test func groupsMembersAndBytesAreBounded() async throws {
        var limits = GroupLimits()
        limits.groupsMax = 3
        limits.membersMax = 4
        limits.stateBytesMax = 64 << 10
        limits.memberMetadataBytesMax = 8 << 10
        let stack = try await GroupStack.open(temporaryDirectory(), limits: limits)
        let coordinator = stack.coordinator
        for index in 0..<3 { #expect(await coordinator.join(groupID: "g\(index)", stack.joinRequest()).errorCode == 0) }
        // A fourth group: refused, retriable, nothing kept.
        #expect(await coordinator.join(groupID: "g3", stack.joinRequest()).errorCode == KafkaErrorCode.coordinatorNotAvailable)
        #expect(coordinator.usage.groups == 3)
        // Members per group, counting ids handed out with MEMBER_ID_REQUIRED (v4).
        for _ in 0..<3 { #expect(await coordinator.join(groupID: "g0", stack.joinRequest(v4: true)).errorCode == KafkaErrorCode.memberIDRequired) }
        #expect(await coordinator.join(groupID: "g0", stack.joinRequest(v4: true)).errorCode == KafkaErrorCode.groupMaxSizeReached)
        // Metadata past the per-member limit.
        #expect(await coordinator.join(groupID: "g1", stack.joinRequest(metadata: Array(repeating: 7, count: 9 << 10))).errorCode
            == KafkaErrorCode.invalidRequest)
        // Long identifiers.
        #expect(await coordinator.join(groupID: String(repeating: "x", count: 256), stack.joinRequest()).errorCode == KafkaErrorCode.invalidGroupID)
        #expect(await coordinator.join(groupID: "g1", stack.joinRequest(instanceID: String(repeating: "i", count: 256))).errorCode
            == KafkaErrorCode.invalidRequest)
        // The bytes of every group's members: joins within the per-member limit fill
        // the total, then are refused (groups of one member each: a join to a group
        // with members would wait for a rebalance).
        var unbounded = limits
        unbounded.groupsMax = 1_000
        let other = try await GroupStack.open(temporaryDirectory(), limits: unbounded)
        var refused = false
        for index in 0..<20 {
            let reply = await other.coordinator.join(groupID: "b\(index)", other.joinRequest(metadata: Array(repeating: UInt8(index), count: 7 << 10)))
            if reply.errorCode == KafkaErrorCode.coordinatorNotAvailable {
                refused = true
                break
            }
            #expect(reply.errorCode == 0)
        }
        #expect(other.coordinator.usage.retainedBytes <= limits.stateBytesMax)
        try await other.close()
        #expect(refused)
        try await stack.close()
    }

    @Test func offsetsOfEmptyGroupsExpireAfterTheRetention() async throws {
        var limits = GroupLimits()
        limits.offsetsRetentionMilliseconds = 3_600_000
        let clock = ManualWallClock()
        let directory = temporaryDirectory()
        let stack = try await GroupStack.open(directory, limits: limits, clock: clock)
        _ = try await stack.broker.createTopic("t", partitions: 2)
        // A standalone commit (no members), and a group with a member that commits.
        #expect(await stack.coordinator.commit(groupID: "simple", memberID: "", generation: -1, [(TopicPartition("t", 0), GroupStack.committed(5))]) == 0)
        let joined = await stack.coordinator.join(groupID: "live", stack.joinRequest())
        let synced = await stack.coordinator.sync(groupID: "live", memberID: joined.memberID, generation: joined.generation, assignments: [])
        #expect(synced.errorCode == 0)
        #expect(await stack.coordinator.commit(groupID: "live", memberID: joined.memberID, generation: joined.generation,
            [(TopicPartition("t", 1), GroupStack.committed(9))]) == 0)
        // Within the retention, and for a group with members, nothing expires.
        for _ in 0..<3 {
            clock.advance(byMilliseconds: 3_000_000)
            _ = stack.coordinator.heartbeat(groupID: "live", memberID: joined.memberID, generation: joined.generation)
            stack.coordinator.tick()
        }
        try await waitUntil { stack.coordinator.offsets.offsets(group: "simple").isEmpty }
        #expect(stack.coordinator.offsets.offsets(group: "live").count == 1)
        // The live group empties: its offsets go a retention later, not before.
        #expect(stack.coordinator.leave(groupID: "live", members: [(joined.memberID, nil)]) == [0])
        clock.advance(byMilliseconds: 3_000_000)
        stack.coordinator.tick()
        #expect(stack.coordinator.offsets.offsets(group: "live").count == 1)
        clock.advance(byMilliseconds: 700_000)
        stack.coordinator.tick()
        try await waitUntil { stack.coordinator.offsets.offsets(group: "live").isEmpty }
        // Expired offsets stay expired after a restart (tombstones in the log).
        try await stack.close()
        let reopened = try await GroupStack.open(directory, limits: limits, clock: clock)
        #expect(reopened.coordinator.offsets.count == 0)
        try await reopened.close()
    }

    @Test func committedOffsetsAreBoundedInNumber() async throws {
        var limits = GroupLimits()
        limits.offsetsMax = 10
        let stack = try await GroupStack.open(temporaryDirectory(), limits: limits)
        _ = try await stack.broker.createTopic("t", partitions: 8)
        let commits = (0..<8).map { (TopicPartition("t", $0), GroupStack.committed(Int64($0))) }
        #expect(await stack.coordinator.commit(groupID: "a", memberID: "", generation: -1, commits) == 0)
        #expect(await stack.coordinator.commit(groupID: "b", memberID: "", generation: -1, commits) == KafkaErrorCode.invalidCommitOffsetSize)
        // Updating offsets already kept is always allowed.
        #expect(await stack.coordinator.commit(groupID: "a", memberID: "", generation: -1, commits) == 0)
        #expect(stack.coordinator.offsets.count == 8)
        try await stack.close()
    }

    @Test func commitsAreStoredInTheOrderTheyWereQueued() async throws {
        // Queued one after another (as the coordinator does under its lock), awaited in
        // the reverse order: the log, the memory view and a replay all keep the last.
        let directory = temporaryDirectory()
        let stack = try await GroupStack.open(directory)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let store = stack.coordinator.offsets
        var pending: [OffsetStore.PendingWrite] = []
        for value in 0..<200 {
            pending.append(try #require(store.enqueueCommit(group: "g", [(TopicPartition("t", 0), GroupStack.committed(Int64(value)))])))
        }
        for write in pending.reversed() { try await write.completion() }
        #expect(store.offsets(group: "g")[TopicPartition("t", 0)]?.offset == 199)
        try await stack.close()
        let reopened = try await GroupStack.open(directory)
        #expect(reopened.coordinator.offsets.offsets(group: "g")[TopicPartition("t", 0)]?.offset == 199)
        try await reopened.close()
    }

    @Test func aCommitCheckedAgainstAGenerationIsStoredBeforeTheNextGenerationsCommits() async throws {
        // A member of generation 1 commits; a rebalance follows at once and the
        // partition's new owner commits. Whatever the interleaving of their awaits,
        // the new owner's offset is the one kept.
        let stack = try await GroupStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let coordinator = stack.coordinator
        let first = await coordinator.join(groupID: "g", stack.joinRequest())
        _ = await coordinator.sync(groupID: "g", memberID: first.memberID, generation: first.generation, assignments: [])
        let partition = TopicPartition("t", 0)
        async let old = coordinator.commit(groupID: "g", memberID: first.memberID, generation: first.generation, [(partition, GroupStack.committed(10))])
        // The old member leaves; a new one joins (generation 2) and commits further.
        _ = coordinator.leave(groupID: "g", members: [(first.memberID, nil)])
        let second = await coordinator.join(groupID: "g", stack.joinRequest())
        _ = await coordinator.sync(groupID: "g", memberID: second.memberID, generation: second.generation, assignments: [])
        let newer = await coordinator.commit(groupID: "g", memberID: second.memberID, generation: second.generation, [(partition, GroupStack.committed(20))])
        let older = await old
        #expect(newer == 0)
        // The old commit either came first (and was overwritten) or was refused.
        #expect(older == 0 || older == KafkaErrorCode.unknownMemberID)
        #expect(coordinator.offsets.offsets(group: "g")[partition]?.offset == 20)
        try await stack.close()
    }
}
