import AqueductAPI
import AqueductBroker
import AqueductLog
import AqueductTestSupport
import Logging
import Testing

@testable import AqueductGroups

/// Groups split into shards that move between nodes (cluster mode): Kafka's group →
/// partition rule, and what members see when their shard moves away and back.
@Suite struct GroupShardsTests {
    @Test func groupsMapToShardsByKafkasRule() {
        // Java: "abc".hashCode() == 96354; Kafka's partitionFor = abs(hash) % count.
        #expect(GroupShards.shard(of: "abc", count: 50) == 96354 % 50)
        // A negative hashCode ("polygenelubricants".hashCode() == Int.MIN_VALUE) has its sign bit cleared.
        #expect(GroupShards.shard(of: "polygenelubricants", count: 7) == 0)
        #expect(GroupShards.shard(of: "", count: 6) == 0)
        // Every shard gets some of many groups.
        let used = Set((0..<600).map { GroupShards.shard(of: "group-\($0)", count: 6) })
        #expect(used == Set(0..<6))
    }

    @Test func aShardThatMovesAwayAnswersNotCoordinatorAndItsOffsetsMoveWithIt() async throws {
        let stack = try await GroupStack.open(temporaryDirectory())
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 0
        let shards = GroupShards(count: 1, limits: limits)
        #expect(shards.coordinator(for: "g") == nil)
        shards.activate(0, stack.coordinator)
        let coordinator = try #require(shards.coordinator(for: "g"))

        let first = await coordinator.join(groupID: "g", stack.joinRequest())
        _ = await coordinator.sync(groupID: "g", memberID: first.memberID, generation: first.generation, assignments: [])
        let committed = await coordinator.commit(
            groupID: "g", memberID: first.memberID, generation: first.generation, [(TopicPartition("t", 0), GroupStack.committed(42))])
        #expect(committed == KafkaErrorCode.none)
        // A second member's join waits for the first to rejoin: parked when the shard moves.
        let parked = Task { await coordinator.join(groupID: "g", stack.joinRequest()) }
        try await waitUntil { coordinator.describe("g")?.state == .preparingRebalance }
        shards.deactivate(0)
        #expect(await parked.value.errorCode == KafkaErrorCode.notCoordinator)
        #expect(shards.coordinator(for: "g") == nil)
        // Requests that reach the old coordinator after the move are refused too.
        #expect(coordinator.heartbeat(groupID: "g", memberID: first.memberID, generation: first.generation) == KafkaErrorCode.notCoordinator)
        #expect(coordinator.leave(groupID: "g", members: [(first.memberID, nil)]) == [KafkaErrorCode.notCoordinator])
        let late = await coordinator.commit(groupID: "g", memberID: "", generation: -1, [(TopicPartition("t", 0), GroupStack.committed(7))])
        #expect(late == KafkaErrorCode.notCoordinator)
        #expect(await coordinator.deleteGroup("g") == KafkaErrorCode.notCoordinator)

        // The next owner opens the same log (fencing this writer) and finds the offset.
        let log = try #require(stack.logs.allLogs.first { $0.name == OffsetStore.logName })
        let reopened = try await OffsetStore.open(log: log, logger: Logger(label: "test"))
        shards.activate(0, GroupCoordinator(offsets: reopened, limits: limits, logger: Logger(label: "test")))
        #expect(shards.coordinator(for: "g")?.offsets.offsets(group: "g")[TopicPartition("t", 0)]?.offset == 42)
        let rejoined = await shards.coordinator(for: "g")!.join(groupID: "g", stack.joinRequest())
        #expect(rejoined.errorCode == KafkaErrorCode.none)
        try await stack.close()
    }
}
