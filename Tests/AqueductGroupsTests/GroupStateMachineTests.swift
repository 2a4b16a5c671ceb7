import AqueductBroker
@testable import AqueductGroups
import AqueductCommon
import AqueductTestSupport
import Testing

/// The group protocol as scripts of events against the pure state machine.
@Suite struct GroupStateMachineTests {
    let range = GroupStateMachine.SupportedProtocol(name: "range", metadata: [1])
    let roundRobin = GroupStateMachine.SupportedProtocol(name: "roundrobin", metadata: [2])
    /// Scripts about other rules start rebalances at once; the initial delay has its own.
    static let noInitialDelay: GroupLimits = {
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 0
        return limits
    }()

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

    /// Two static members, "a" (the leader, assigned [1]) and "b" (assigned [2]), in a
    /// stable group.
    func stableStaticPair(_ group: inout GroupStateMachine) -> (leader: GroupStateMachine.JoinReply, follower: GroupStateMachine.JoinReply, generation: Int32) {
        let leader = joinReply(group.join(1, request(instance: "a"), now: 0), 1)!
        let joined = group.join(2, request(instance: "b"), now: 0)  // the leader must rejoin
        let rejoin = group.join(3, request(leader.memberID, instance: "a"), now: 1)
        let follower = joinReply(joined + rejoin, 2)!
        let generation = follower.generation
        _ = group.sync(4, memberID: follower.memberID, generation: generation, assignments: [], now: 2)
        _ = group.sync(5, memberID: leader.memberID, generation: generation,
                       assignments: [(leader.memberID, [1]), (follower.memberID, [2])], now: 2)
        #expect(group.state == .stable)
        return (leader, follower, generation)
    }

    @Test func aSingleMemberJoinsSyncsAndIsStable() {
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
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
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
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
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
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
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
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
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
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
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        let (leader, follower, generation) = stableStaticPair(&group)

        // b restarts: same instance id, no member id, same subscription.
        let back = joinReply(group.join(6, request(instance: "b"), now: 100), 6)!
        #expect(back.errorCode == 0 && back.generation == generation && back.memberID != follower.memberID)
        #expect(group.state == .stable, "no rebalance for a returning static follower")
        let synced = group.sync(7, memberID: back.memberID, generation: generation, assignments: [], now: 101)
        #expect(syncReply(synced, 7)?.assignment == [2])
        // Its old incarnation is fenced.
        #expect(group.heartbeat(memberID: follower.memberID, generation: generation, now: 102) == KafkaErrorCode.unknownMemberID)
        #expect(group.heartbeat(memberID: leader.memberID, generation: generation, now: 102) == 0)
        // Named with its instance id, the old incarnation learns it is fenced (a fatal
        // error for the client), on every request.
        #expect(group.heartbeat(memberID: follower.memberID, instanceID: "b", generation: generation, now: 103) == KafkaErrorCode.fencedInstanceID)
        #expect(group.commitError(memberID: follower.memberID, instanceID: "b", generation: generation) == KafkaErrorCode.fencedInstanceID)
        #expect(syncReply(group.sync(8, memberID: follower.memberID, instanceID: "b", generation: generation, assignments: [], now: 104), 8)?
            .errorCode == KafkaErrorCode.fencedInstanceID)
        #expect(group.heartbeat(memberID: back.memberID, instanceID: "b", generation: generation, now: 105) == 0)
    }

    @Test func joinsThatDisagreeOnProtocolsAreRefused() {
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        _ = joinNew(&group, token: 1, now: 0)
        let other = GroupStateMachine.SupportedProtocol(name: "sticky", metadata: [])
        let refused = group.join(5, request("", protocols: [other], v4: false), now: 0)
        #expect(joinReply(refused, 5)?.errorCode == KafkaErrorCode.inconsistentGroupProtocol)
        let badTimeout = group.join(6, request("", session: 10, v4: false), now: 0)
        #expect(joinReply(badTimeout, 6)?.errorCode == KafkaErrorCode.invalidSessionTimeout)
    }

    @Test func offsetCommitsAreCheckedAgainstMembership() {
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        #expect(group.commitError(memberID: "", generation: -1) == 0)  // simple commit, no members
        let (member, replies) = joinNew(&group, token: 1, now: 0)
        let generation = joinReply(replies, 1001)!.generation
        #expect(group.commitError(memberID: member, generation: generation) == KafkaErrorCode.rebalanceInProgress)
        _ = group.sync(2, memberID: member, generation: generation, assignments: [], now: 0)
        #expect(group.commitError(memberID: member, generation: generation) == 0)
        #expect(group.commitError(memberID: member, generation: generation - 1) == KafkaErrorCode.illegalGeneration)
        #expect(group.commitError(memberID: "", generation: -1) == KafkaErrorCode.unknownMemberID)
    }

    @Test func aCurrentMemberMayCommitWhileARebalanceGathersMembers() {
        // Cooperative consumers commit what they give up after their rejoin request:
        // Kafka accepts that in PreparingRebalance, only not between join and sync.
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        let (first, replies) = joinNew(&group, token: 1, now: 0)
        _ = group.sync(2, memberID: first, generation: joinReply(replies, 1001)!.generation, assignments: [], now: 0)
        _ = joinNew(&group, token: 10, now: 100)
        #expect(group.state == .preparingRebalance)
        #expect(group.commitError(memberID: first, generation: 1) == 0)
        #expect(group.commitError(memberID: first, generation: 0) == KafkaErrorCode.illegalGeneration)
        _ = group.join(20, request(first), now: 200)
        #expect(group.state == .completingRebalance)
        #expect(group.commitError(memberID: first, generation: 2) == KafkaErrorCode.rebalanceInProgress)
    }

    @Test func theFirstRebalanceOfAnEmptyGroupWaitsForMembersJoiningTogether() {
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 3_000
        var group = GroupStateMachine(groupID: "g", limits: limits)
        // Three consumers start a few hundred ms apart: one generation, not three.
        let (a, joinA) = joinNew(&group, token: 1, now: 0)
        #expect(joinReply(joinA, 1001) == nil)
        #expect(group.tick(now: 2_000).isEmpty)
        let (b, _) = joinNew(&group, token: 2, now: 2_500)
        #expect(group.tick(now: 3_000).isEmpty, "a member joined during the delay: it waits once more")
        let (c, _) = joinNew(&group, token: 3, now: 4_000)
        #expect(group.tick(now: 5_999).isEmpty)
        #expect(group.tick(now: 6_000).isEmpty, "c joined during the second wait: a third one")
        let replies = group.tick(now: 9_000)
        let joins = [1001, 1002, 1003].compactMap { joinReply(replies, UInt64($0)) }
        #expect(joins.count == 3 && joins.allSatisfy { $0.errorCode == 0 && $0.generation == 1 && $0.leaderID == a })
        #expect(joinReply(replies, 1001)?.members.map(\.id) == [a, b, c])
        // Later rebalances of the (no longer empty) group do not wait.
        _ = group.sync(5, memberID: a, generation: 1, assignments: [], now: 9_001)
        _ = group.leave([(c, nil)], now: 9_100)
        let rejoined = group.join(6, request(a), now: 9_200) + group.join(7, request(b), now: 9_200)
        #expect(joinReply(rejoined, 7)?.generation == 2)
    }

    @Test func theInitialDelayEndsWithinTheRebalanceTimeout() {
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 3_000
        var group = GroupStateMachine(groupID: "g", limits: limits)
        // A member arrives during every wait; the rebalance timeout (30 s) still ends it.
        var token: UInt64 = 1
        var completed: Int64?
        for now in stride(from: Int64(0), through: 45_000, by: 500) {
            if now % 1_000 == 0 && now <= 40_000 {
                _ = joinNew(&group, token: token, now: now)
                token += 1
            }
            if group.tick(now: now).contains(where: { if case .join(_, let reply) = $0 { reply.generation == 1 } else { false } }) {
                completed = completed ?? now
            }
        }
        let done = try! #require(completed)
        #expect(done <= 30_000, "joined at \(done)")
    }

    @Test func aRestartedStaticLeaderKeepsItsAssignmentWithoutARebalance() {
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        let (leader, follower, generation) = stableStaticPair(&group)

        // The leader restarts (same instance id, no member id): no rebalance, and the
        // answer names the leader by its old id, so the restarted client does not take
        // itself for the leader of a stable group.
        let back = joinReply(group.join(6, request(instance: "a"), now: 100), 6)!
        #expect(back.errorCode == 0 && back.generation == generation && back.memberID != leader.memberID)
        #expect(back.leaderID == leader.memberID && back.members.isEmpty)
        #expect(group.state == .stable, "no rebalance for a returning static leader")
        let synced = group.sync(7, memberID: back.memberID, generation: generation, assignments: [], now: 101)
        #expect(syncReply(synced, 7)?.assignment == [1])
        #expect(group.heartbeat(memberID: follower.memberID, generation: generation, now: 102) == 0)
        #expect(group.heartbeat(memberID: leader.memberID, generation: generation, now: 102) == KafkaErrorCode.unknownMemberID)
        // The next rebalance is led by the new incarnation.
        let (newcomer, _) = joinNew(&group, token: 20, now: 200)
        let replies = group.join(21, request(back.memberID, instance: "a"), now: 201)
            + group.join(22, request(follower.memberID, instance: "b"), now: 201)
        #expect(joinReply(replies, 21)?.leaderID == back.memberID)
        #expect(joinReply(replies, 21)?.members.map(\.id).sorted() == [back.memberID, follower.memberID, newcomer].sorted())
    }

    @Test func aStaticMemberWhoseProtocolsChangeTheGroupsChoiceRebalances() {
        var group = GroupStateMachine(groupID: "g", limits: Self.noInitialDelay)
        // a prefers range, b roundrobin: a tie, which the leader's order (range) breaks.
        let a = joinReply(group.join(1, request(instance: "a", protocols: [range, roundRobin]), now: 0), 1)!
        let joined = group.join(2, request(instance: "b", protocols: [roundRobin, range]), now: 0)
            + group.join(3, request(a.memberID, instance: "a", protocols: [range, roundRobin]), now: 0)
        let b = joinReply(joined, 2)!
        #expect(b.protocolName == "range")
        _ = group.sync(4, memberID: b.memberID, generation: b.generation, assignments: [], now: 1)
        _ = group.sync(5, memberID: a.memberID, generation: b.generation, assignments: [], now: 1)
        #expect(group.state == .stable)
        // a comes back preferring roundrobin: the group's choice changes, so it rebalances.
        let back = group.join(6, request(instance: "a", protocols: [roundRobin, range]), now: 10)
        #expect(joinReply(back, 6) == nil && group.state == .preparingRebalance)
        let rejoined = group.join(7, request(b.memberID, instance: "b", protocols: [roundRobin, range]), now: 11)
        #expect(joinReply(rejoined, 6)?.protocolName == "roundrobin" && joinReply(rejoined, 7)?.generation == b.generation + 1)
    }

    /// Many members, random joins, leaves, subscription changes and restarts, each
    /// client behaving as a real consumer (rejoins when told of a rebalance, syncs after
    /// joining, the leader assigns to everyone): once the changes stop, the group
    /// must settle in one generation with every member holding an assignment.
    @Test func manyMembersChangingSubscriptionsConverge() {
        let seed = testSeed()
        var random = SplitMix64(seed: seed)
        var limits = GroupLimits()
        limits.initialRebalanceDelayMilliseconds = 300
        var group = GroupStateMachine(groupID: "g", limits: limits, random: SplitMix64(seed: seed &+ 1))
        struct Client {
            var memberID = ""
            var generation: Int32 = -1
            var joining: UInt64?
            var syncing: UInt64?
            var mustJoin = true
            var metadata: UInt8 = 0
        }
        var clients = [Client](repeating: Client(), count: 12)
        var next: UInt64 = 1
        var now: Int64 = 0
        func deliver(_ replies: [GroupStateMachine.Reply]) {
            for reply in replies {
                guard let index = clients.firstIndex(where: { $0.joining == reply.token || $0.syncing == reply.token }) else { continue }
                switch reply {
                case .join(_, let answer):
                    clients[index].joining = nil
                    switch answer.errorCode {
                    case 0:
                        clients[index].memberID = answer.memberID
                        clients[index].generation = answer.generation
                        let token = next
                        next += 1
                        clients[index].syncing = token
                        deliver(group.sync(token, memberID: answer.memberID, generation: answer.generation,
                                           assignments: answer.members.map { ($0.id, [UInt8(1)]) }, now: now))
                    case KafkaErrorCode.memberIDRequired:
                        clients[index].memberID = answer.memberID
                        clients[index].mustJoin = true
                    case KafkaErrorCode.unknownMemberID:
                        clients[index].memberID = ""
                        clients[index].mustJoin = true
                    default:
                        clients[index].mustJoin = true
                    }
                case .sync(_, let answer):
                    clients[index].syncing = nil
                    if answer.errorCode != 0 { clients[index].mustJoin = true }
                    if answer.errorCode == KafkaErrorCode.unknownMemberID { clients[index].memberID = "" }
                }
            }
        }
        func join(_ index: Int) {
            guard clients[index].joining == nil else { return }
            let token = next
            next += 1
            clients[index].joining = token
            clients[index].mustJoin = false
            let protocols = [GroupStateMachine.SupportedProtocol(name: "range", metadata: [clients[index].metadata])]
            deliver(group.join(token, request(clients[index].memberID, protocols: protocols), now: now))
        }
        for step in 0..<4_000 {
            now += 50
            let index = Int(random.next() % UInt64(clients.count))
            if step < 2_000 {
                switch random.next() % 20 {
                case 0:  // a subscription change
                    clients[index].metadata &+= 1
                    clients[index].mustJoin = true
                case 1 where !clients[index].memberID.isEmpty && clients[index].joining == nil && clients[index].syncing == nil:
                    deliver(group.leave([(clients[index].memberID, nil)], now: now).replies)
                    clients[index] = Client(metadata: clients[index].metadata)
                default: break
                }
            }
            // Every client heartbeats and reacts as a consumer does.
            for index in clients.indices where clients[index].joining == nil && clients[index].syncing == nil {
                if clients[index].mustJoin {
                    join(index)
                    continue
                }
                switch group.heartbeat(memberID: clients[index].memberID, generation: clients[index].generation, now: now) {
                case KafkaErrorCode.rebalanceInProgress, KafkaErrorCode.illegalGeneration: join(index)
                case KafkaErrorCode.unknownMemberID:
                    clients[index].memberID = ""
                    join(index)
                default: break
                }
            }
            deliver(group.tick(now: now))
        }
        #expect(group.state == .stable, "seed \(seed)")
        #expect(group.members.count == clients.count, "seed \(seed)")
        #expect(group.members.allSatisfy { $0.assignment == [1] }, "seed \(seed)")
        #expect(clients.allSatisfy { $0.generation == group.generation }, "seed \(seed)")
    }
}
