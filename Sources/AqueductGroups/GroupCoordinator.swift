import AqueductAPI
import AqueductBroker
import AqueductCommon
import Logging
import Metrics
import NIOCore
import Synchronization

/// The I/O shell around the groups' state machines: holds one `GroupStateMachine` per
/// group, parks JoinGroup and SyncGroup requests until their replies are due, feeds
/// the clock to the machines, and stores committed offsets.
public final class GroupCoordinator: Sendable {
    public let offsets: OffsetStore
    let clock: any WallClock
    let logger: Logger
    let limits: GroupStateMachine.Limits
    /// How often sessions and rebalance deadlines are checked, in milliseconds.
    static let tickMilliseconds = 100

    private enum Waiter {
        case join(UnsafeContinuation<GroupStateMachine.JoinReply, Never>)
        case sync(UnsafeContinuation<GroupStateMachine.SyncReply, Never>)
    }

    private struct State {
        var groups: [String: GroupStateMachine] = [:]
        var waiters: [GroupStateMachine.Token: Waiter] = [:]
        var nextToken: GroupStateMachine.Token = 0
    }
    private let state = Mutex(State())

    public init(offsets: OffsetStore, clock: any WallClock = SystemWallClock(), limits: GroupStateMachine.Limits = .init(), logger: Logger) {
        self.offsets = offsets
        self.clock = clock
        self.limits = limits
        self.logger = logger
    }

    /// Runs `event` on the group's machine under the lock, with a fresh token; takes
    /// out the waiters its replies are for, and resumes them after the lock.
    private func apply(
        _ groupID: String, register waiter: Waiter? = nil,
        _ event: (inout GroupStateMachine, GroupStateMachine.Token, Int64) -> [GroupStateMachine.Reply]
    ) {
        let now = clock.nowMilliseconds()
        let due: [(Waiter, GroupStateMachine.Reply)] = state.withLock { state in
            let token = state.nextToken
            state.nextToken += 1
            if let waiter { state.waiters[token] = waiter }
            var machine = state.groups[groupID] ?? GroupStateMachine(groupID: groupID, limits: limits)
            let replies = event(&machine, token, now)
            state.groups[groupID] = machine
            return Self.takeWaiters(for: replies, from: &state)
        }
        Self.deliver(due)
    }

    /// Removes the waiters the replies are for, paired with their replies (called under the lock).
    private static func takeWaiters(for replies: [GroupStateMachine.Reply], from state: inout State) -> [(Waiter, GroupStateMachine.Reply)] {
        replies.compactMap { reply in state.waiters.removeValue(forKey: reply.token).map { ($0, reply) } }
    }

    private static func deliver(_ due: [(Waiter, GroupStateMachine.Reply)]) {
        for (waiter, reply) in due {
            switch (waiter, reply) {
            case (.join(let continuation), .join(_, let result)): continuation.resume(returning: result)
            case (.sync(let continuation), .sync(_, let result)): continuation.resume(returning: result)
            case (.join(let continuation), .sync(_, let result)):
                continuation.resume(returning: GroupStateMachine.JoinReply(errorCode: result.errorCode, memberID: ""))
            case (.sync(let continuation), .join(_, let result)):
                continuation.resume(returning: GroupStateMachine.SyncReply(errorCode: result.errorCode))
            }
        }
    }

    public func join(groupID: String, _ request: GroupStateMachine.JoinRequest) async -> GroupStateMachine.JoinReply {
        await withUnsafeContinuation { continuation in
            apply(groupID, register: .join(continuation)) { machine, token, now in
                machine.join(token, request, now: now)
            }
        }
    }

    public func sync(groupID: String, memberID: String, generation: Int32, assignments: [(memberID: String, assignment: [UInt8])]) async
        -> GroupStateMachine.SyncReply
    {
        await withUnsafeContinuation { continuation in
            apply(groupID, register: .sync(continuation)) { machine, token, now in
                machine.sync(token, memberID: memberID, generation: generation, assignments: assignments, now: now)
            }
        }
    }

    public func heartbeat(groupID: String, memberID: String, generation: Int32) -> Int16 {
        var code = KafkaErrorCode.unknownMemberID
        apply(groupID) { machine, _, now in
            code = machine.heartbeat(memberID: memberID, generation: generation, now: now)
            return []
        }
        return code
    }

    public func leave(groupID: String, members: [(memberID: String, instanceID: String?)]) -> [Int16] {
        var codes: [Int16] = []
        apply(groupID) { machine, _, now in
            let (result, replies) = machine.leave(members, now: now)
            codes = result
            return replies
        }
        return codes
    }

    /// Checks membership, then stores the commits durably.
    public func commit(groupID: String, memberID: String, generation: Int32, _ commits: [(TopicPartition, OffsetStore.Committed)]) async -> Int16 {
        let code = state.withLock { state in
            (state.groups[groupID] ?? GroupStateMachine(groupID: groupID)).commitError(memberID: memberID, generation: generation)
        }
        guard code == KafkaErrorCode.none else { return code }
        do throws(BrokerError) {
            try await offsets.commit(group: groupID, commits)
            return KafkaErrorCode.none
        } catch {
            logger.warning("offset commit failed", metadata: ["group": "\(groupID)", "error": "\(error)"])
            return KafkaErrorCode.from(error)
        }
    }

    /// Deletes a group that has no members: its committed offsets and its state.
    /// Returns Kafka's error code (NON_EMPTY_GROUP while members remain).
    public func deleteGroup(_ groupID: String) async -> Int16 {
        let known = state.withLock { state -> Bool? in
            guard let machine = state.groups[groupID] else { return nil }
            guard machine.members.isEmpty else { return false }
            state.groups[groupID] = nil
            return true
        }
        if known == false { return KafkaErrorCode.nonEmptyGroup }
        guard known == true || offsets.groups.contains(groupID) else { return KafkaErrorCode.groupIDNotFound }
        do throws(BrokerError) {
            try await offsets.deleteGroup(groupID)
            return KafkaErrorCode.none
        } catch {
            return KafkaErrorCode.from(error)
        }
    }

    /// A snapshot of a group, or nil when it is unknown (no members, no offsets).
    public func describe(_ groupID: String) -> GroupStateMachine? {
        let machine = state.withLock { $0.groups[groupID] }
        if let machine { return machine }
        return offsets.groups.contains(groupID) ? GroupStateMachine(groupID: groupID) : nil
    }

    /// Every known group: with members, or with committed offsets.
    public func allGroups() -> [GroupStateMachine] {
        let live = state.withLock { Array($0.groups.values) }
        let liveIDs = Set(live.map(\.groupID))
        return live + offsets.groups.subtracting(liveIDs).map { GroupStateMachine(groupID: $0) }
    }

    /// Expires sessions and ends join phases on time, until cancelled.
    public func runTicker() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Self.tickMilliseconds))
            let now = clock.nowMilliseconds()
            let due: [(Waiter, GroupStateMachine.Reply)] = state.withLock { state in
                var due: [(Waiter, GroupStateMachine.Reply)] = []
                for (groupID, var machine) in state.groups {
                    let replies = machine.tick(now: now)
                    state.groups[groupID] = machine
                    due += Self.takeWaiters(for: replies, from: &state)
                }
                return due
            }
            Self.deliver(due)
        }
    }
}
