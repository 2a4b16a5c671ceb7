import AqueductBroker
@testable import AqueductGroups
import Testing

/// The group protocol as scripts of events against the pure state machine.
@Suite struct GroupStateMachineTests {
    let range = GroupStateMachine.SupportedProtocol(name: "range", metadata: [1])
    let roundRobin = GroupStateMachine.SupportedProtocol(name: "roundrobin", metadata: [2])

    func request(_ memberID: String = "", instance: String? = nil, protocols: [GroupStateMachine.SupportedProtocol]? = nil,
                 session: Int64 = 10_000, rebalance: Int64 = 30_000, v4: Bool = true) -> GroupStateMachine.JoinRequest {
        GroupStateMachine.JoinRequest(
            memberID: memberID, instanceID: instance, clientID: "client", clientHost: "/127.0.0.1", protocolType: "consumer",
            protocols: protocols ?? [range, roundRobin], sessionTimeoutMilliseconds: session, rebalanceTimeoutMilliseconds: rebalance,
            requiresKnownMemberID: v4)
    }

    func joinReply(_ replies: [GroupStateMachine.Reply], _ token: UInt64) -> GroupStateMachine.JoinReply? {
        for case .join(let t, let reply) in replies where t == token { return reply }
        return nil
    }

    func syncReply(_ replies: [GroupStateMachine.Reply], _ token: UInt64) -> GroupStateMachine.SyncReply? {
        for case .sync(let t, let reply) in replies where t == token { return reply }
        return nil
    }

    /// Joins a new dynamic member the v4 way (MEMBER_ID_REQUIRED, then again with the id).
    func joinNew(_ group: inout GroupStateMachine, token: UInt64, now: Int64) -> (String, [GroupStateMachine.Reply]) {
        let first = group.join(token, request(), now: now)
        let required = joinReply(first, token)!
        #expect(required.errorCode == KafkaErrorCode.memberIDRequired)
        return (required.memberID, group.join(token + 1000, request(required.memberID), now: now))
    }

    @Test func aSingleMemberJoinsSyncsAndIsStable() {
        var group = GroupStateMachine(groupID: "g")
        let (member, replies) = joinNew(&group, token: 1, now: 0)
        let joined = joinReply(replies, 1001)!
        #expect(joined.errorCode == 0 && joined.generation == 1 && joined.leaderID == member)
        #expect(joined.protocolName == "range" && joined.members.map(\.id) == [member])
        #expect(group.state == .completingRebalance)
        let synced = group.sync(2, memberID: member, generation: 1, assignments: [(member, [9, 9])], now: 10)
        #expect(syncReply(synced, 2) == GroupStateMachine.SyncReply(errorCode: 0, protocolType: "consumer", protocolName: "range", assignment: [9, 9]))
        #expect(group.state == .stable)
        #expect(group.heartbeat(memberID: member, generation: 1, now: 20) == 0)
        #expect(group.heartbeat(memberID: member, generation: 0, now: 20) == KafkaErrorCode.illegalGeneration)
        #expect(group.heartbeat(memberID: "stranger", generation: 1, now: 20) == KafkaErrorCode.unknownMemberID)
    }

    @Test func aSecondMemberTriggersARebalanceThatWaitsForEveryone() {
        var group = GroupStateMachine(groupID: "g")
        let (first, firstJoin) = joinNew(&group, token: 1, now: 0)
        _ = group.sync(2, memberID: first, generation: joinReply(firstJoin, 1001)!.generation, assignments: [(first, [1])], now: 0)
        #expect(group.state == .stable)

        // The newcomer's join waits: the first member has not rejoined yet.
        let (second, secondJoin) = joinNew(&group, token: 10, now: 100)
        #expect(joinReply(secondJoin, 1010) == nil)
        #expect(group.state == .preparingRebalance)
        // The first member learns of it from its heartbeat, and rejoins.
        #expect(group.heartbeat(memberID: first, generation: 1, now: 200) == KafkaErrorCode.rebalanceInProgress)
        let rejoin = group.join(20, request(first), now: 300)
        let leader = joinReply(rejoin, 20)!
        let follower = joinReply(rejoin, 1010)!
        #expect(leader.generation == 2 && follower.generation == 2)
        #expect(leader.leaderID == first && follower.leaderID == first)
        #expect(leader.members.map(\.id) == [first, second] && follower.members.isEmpty)

        // The follower's sync waits for the leader's, which carries both assignments.
        #expect(group.sync(30, memberID: second, generation: 2, assignments: [], now: 400).isEmpty)
        let synced = group.sync(31, memberID: first, generation: 2, assignments: [(first, [1]), (second, [2])], now: 410)
        #expect(syncReply(synced, 30)?.assignment == [2])
        #expect(syncReply(synced, 31)?.assignment == [1])
        #expect(group.state == .stable)
    }

    @Test func membersThatDoNotRejoinByTheRebalanceTimeoutAreDropped() {
        var group = GroupStateMachine(groupID: "g")
        let (first, firstJoin) = joinNew(&group, token: 1, now: 0)
        _ = group.sync(2, memberID: first, generation: joinReply(firstJoin, 1001)!.generation, assignments: [], now: 0)
        let (second, _) = joinNew(&group, token: 10, now: 1_000)
        // The first member never rejoins; its heartbeats keep its session alive, but the
        // rebalance timeout (30 s) ends the join phase without it.
        for now in stride(from: Int64(5_000), through: 30_000, by: 5_000) {
            #expect(group.heartbeat(memberID: first, generation: 1, now: now) == KafkaErrorCode.rebalanceInProgress)
            #expect(group.tick(now: now).isEmpty)
        }
        let replies = group.tick(now: 31_001)
        let joined = joinReply(replies, 1010)!
        #expect(joined.errorCode == 0 && joined.leaderID == second && joined.members.map(\.id) == [second])
        #expect(group.member(first) == nil)
    }

    @Test func anExpiredSessionRemovesTheMemberAndRebalancesTheRest() {
        var group = GroupStateMachine(groupID: "g")
        let (first, _) = joinNew(&group, token: 1, now: 0)
        _ = group.sync(2, memberID: first, generation: 1, assignments: [], now: 0)
        let (second, _) = joinNew(&group, token: 10, now: 0)
        let rejoined = group.join(20, request(first), now: 5)
        let generation = joinReply(rejoined, 20)!.generation
        #expect(generation == 2 && joinReply(rejoined, 1010)?.generation == 2)
        _ = group.sync(30, memberID: second, generation: generation, assignments: [], now: 10)
        _ = group.sync(31, memberID: first, generation: generation, assignments: [], now: 10)
        #expect(group.state == .stable)
        // Only the second member heartbeats; the first one's 10 s session runs out.
        #expect(group.heartbeat(memberID: second, generation: generation, now: 8_000) == 0)
        _ = group.tick(now: 10_011)
        #expect(group.member(first) == nil)
        #expect(group.state == .preparingRebalance)
        let alone = group.join(40, request(second), now: 10_100)
        #expect(joinReply(alone, 40)?.generation == generation + 1)
    }

    @Test func leavingEmptiesTheGroupAndStaticMembersKeepTheirPlace() {
        var group = GroupStateMachine(groupID: "g")
        // A static member gets its id at once (no MEMBER_ID_REQUIRED).
        let joined = joinReply(group.join(1, request(instance: "consumer-a"), now: 0), 1)!
        #expect(joined.errorCode == 0 && joined.generation == 1)
        _ = group.sync(2, memberID: joined.memberID, generation: 1, assignments: [(joined.memberID, [7])], now: 0)
        // Restarted with the same instance id: a new member id replaces the old one.
        let restarted = joinReply(group.join(3, request(instance: "consumer-a"), now: 100), 3)!
        #expect(restarted.errorCode == 0 && restarted.memberID != joined.memberID)
        #expect(group.members.count == 1)
        #expect(group.heartbeat(memberID: joined.memberID, generation: restarted.generation, now: 200) == KafkaErrorCode.unknownMemberID)
        let (codes, _) = group.leave([(restarted.memberID, "consumer-a")], now: 300)
        #expect(codes == [0])
        #expect(group.state == .empty && group.isIdle)
    }

    @Test func aRestartedStaticFollowerKeepsItsAssignmentWithoutARebalance() {
        var group = GroupStateMachine(groupID: "g")
        let leader = joinReply(group.join(1, request(instance: "a"), now: 0), 1)!
        let joined = group.join(2, request(instance: "b"), now: 0)  // the leader must rejoin
        let rejoin = group.join(3, request(leader.memberID, instance: "a"), now: 1)
        let follower = joinReply(joined + rejoin, 2)!
        let generation = follower.generation
        _ = group.sync(4, memberID: follower.memberID, generation: generation, assignments: [], now: 2)
        _ = group.sync(5, memberID: leader.memberID, generation: generation,
                       assignments: [(leader.memberID, [1]), (follower.memberID, [2])], now: 2)
        #expect(group.state == .stable)

        // b restarts: same instance id, no member id, same subscription.
        let back = joinReply(group.join(6, request(instance: "b"), now: 100), 6)!
        #expect(back.errorCode == 0 && back.generation == generation && back.memberID != follower.memberID)
        #expect(group.state == .stable, "no rebalance for a returning static follower")
        let synced = group.sync(7, memberID: back.memberID, generation: generation, assignments: [], now: 101)
        #expect(syncReply(synced, 7)?.assignment == [2])
        // Its old incarnation is fenced.
        #expect(group.heartbeat(memberID: follower.memberID, generation: generation, now: 102) == KafkaErrorCode.unknownMemberID)
        #expect(group.heartbeat(memberID: leader.memberID, generation: generation, now: 102) == 0)
    }

    @Test func joinsThatDisagreeOnProtocolsAreRefused() {
        var group = GroupStateMachine(groupID: "g")
        _ = joinNew(&group, token: 1, now: 0)
        let other = GroupStateMachine.SupportedProtocol(name: "sticky", metadata: [])
        let refused = group.join(5, request("", protocols: [other], v4: false), now: 0)
        #expect(joinReply(refused, 5)?.errorCode == KafkaErrorCode.inconsistentGroupProtocol)
        let badTimeout = group.join(6, request("", session: 10, v4: false), now: 0)
        #expect(joinReply(badTimeout, 6)?.errorCode == KafkaErrorCode.invalidSessionTimeout)
    }

    @Test func offsetCommitsAreCheckedAgainstMembership() {
        var group = GroupStateMachine(groupID: "g")
        #expect(group.commitError(memberID: "", generation: -1) == 0)  // simple commit, no members
        let (member, replies) = joinNew(&group, token: 1, now: 0)
        let generation = joinReply(replies, 1001)!.generation
        #expect(group.commitError(memberID: member, generation: generation) == KafkaErrorCode.rebalanceInProgress)
        _ = group.sync(2, memberID: member, generation: generation, assignments: [], now: 0)
        #expect(group.commitError(memberID: member, generation: generation) == 0)
        #expect(group.commitError(memberID: member, generation: generation - 1) == KafkaErrorCode.illegalGeneration)
        #expect(group.commitError(memberID: "", generation: -1) == KafkaErrorCode.unknownMemberID)
    }
}
