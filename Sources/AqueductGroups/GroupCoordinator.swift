import AqueductAPI
import AqueductBroker
import AqueductCommon
import Logging
import Metrics
import NIOCore
import Synchronization

/// The I/O shell around the groups' state machines: holds one `GroupStateMachine` per
/// group with members, parks JoinGroup and SyncGroup requests until their replies are
/// due, feeds the clock to the machines, queues committed offsets and expires them.
///
/// Only a join creates a group; every other request naming an unknown group gets
/// Kafka's error and creates nothing. A group whose last member leaves is forgotten
/// (its committed offsets stay, until `offsetsRetentionMilliseconds` after it emptied).
/// What clients make it keep is bounded by `GroupLimits`.
public final class GroupCoordinator: Sendable {
    public let offsets: OffsetStore
    let clock: any WallClock
    let logger: Logger
    public let limits: GroupLimits
    /// How often sessions and rebalance deadlines are checked, in milliseconds.
    static let tickMilliseconds = 100
    /// How often committed offsets of empty groups are checked for expiry.
    static let expiryCheckMilliseconds: Int64 = 60_000

    private enum Waiter {
        case join(UnsafeContinuation<GroupStateMachine.JoinReply, Never>)
        case sync(UnsafeContinuation<GroupStateMachine.SyncReply, Never>)
    }

    private struct State {
        var groups: [String: GroupStateMachine] = [:]
        /// Bytes the groups' members keep, over all groups (`retainedBytes`).
        var retainedBytes = 0
        /// When groups with committed offsets and no members last had members (or the
        /// coordinator started): the start of their offsets' retention.
        var emptySince: [String: Int64] = [:]
        var waiters: [GroupStateMachine.Token: Waiter] = [:]
        var nextToken: GroupStateMachine.Token = 0
        var lastExpiryCheck: Int64
        /// This node stopped coordinating these groups (cluster mode: another node owns
        /// their offsets now): every request gets NOT_COORDINATOR.
        var closed = false
    }
    private let state: Mutex<State>
    private let startedMilliseconds: Int64
    private let refusedGroups = Counter(label: "aqueduct_groups_refused_total", dimensions: [("reason", "groups")])
    private let refusedBytes = Counter(label: "aqueduct_groups_refused_total", dimensions: [("reason", "bytes")])

    public init(offsets: OffsetStore, clock: any WallClock = SystemWallClock(), limits: GroupLimits = GroupLimits(), logger: Logger) {
        self.offsets = offsets
        self.clock = clock
        self.limits = limits
        self.logger = logger
        let now = clock.nowMilliseconds()
        self.startedMilliseconds = now
        self.state = Mutex(State(lastExpiryCheck: now))
    }

    /// What became of an event.
    private enum Outcome {
        case ran
        /// No machine for the group and none was made: nothing was kept.
        case unknownGroup
        /// `admit` refused it with this code.
        case refused(Int16)
    }

    /// Runs `event` on the group's machine under the lock, with a fresh token; takes
    /// out the waiters its replies are for, and resumes them after the lock. Without
    /// `admit`, an unknown group is left unknown (the caller answers for it); with it,
    /// `admit` sees the state and whether the group exists, and either refuses with a
    /// code or lets the event run, making the group if need be (a join).
    @discardableResult
    private func apply(
        _ groupID: String, register waiter: Waiter? = nil, admit: ((borrowing State, _ exists: Bool) -> Int16?)? = nil,
        _ event: (inout GroupStateMachine, GroupStateMachine.Token, Int64) -> [GroupStateMachine.Reply]
    ) -> Outcome {
        let now = clock.nowMilliseconds()
        let (outcome, due): (Outcome, [(Waiter, GroupStateMachine.Reply)]) = state.withLock { state in
            if state.closed { return (.refused(KafkaErrorCode.notCoordinator), []) }
            let existing = state.groups[groupID]
            guard let admit else {
                if existing == nil { return (.unknownGroup, []) }
                return (.ran, runLocked(event, on: existing!, register: waiter, now: now, in: &state))
            }
            if let code = admit(state, existing != nil) { return (.refused(code), []) }
            let machine = existing ?? GroupStateMachine(groupID: groupID, limits: limits)
            return (.ran, runLocked(event, on: machine, register: waiter, now: now, in: &state))
        }
        Self.deliver(due)
        return outcome
    }

    private func runLocked(
        _ event: (inout GroupStateMachine, GroupStateMachine.Token, Int64) -> [GroupStateMachine.Reply], on machine: GroupStateMachine,
        register waiter: Waiter?, now: Int64, in state: inout State
    ) -> [(Waiter, GroupStateMachine.Reply)] {
        var machine = machine
        let token = state.nextToken
        state.nextToken += 1
        if let waiter { state.waiters[token] = waiter }
        let before = state.groups[machine.groupID] == nil ? 0 : machine.retainedBytes
        let replies = event(&machine, token, now)
        Self.store(machine, retainedBefore: before, now: now, in: &state)
        return Self.takeWaiters(for: replies, from: &state)
    }

    /// Keeps a machine after an event, or forgets it once it has no members left.
    private static func store(_ machine: GroupStateMachine, retainedBefore: Int, now: Int64, in state: inout State) {
        if machine.isIdle {
            state.groups[machine.groupID] = nil
            state.retainedBytes -= retainedBefore
            state.emptySince[machine.groupID] = now
        } else {
            state.groups[machine.groupID] = machine
            state.retainedBytes += machine.retainedBytes - retainedBefore
            state.emptySince[machine.groupID] = nil
        }
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

    /// Whether a group id may name a group: not empty, not longer than the limit.
    public func groupIDError(_ groupID: String) -> Int16? {
        groupID.isEmpty || groupID.utf8.count > limits.identifierBytesMax ? KafkaErrorCode.invalidGroupID : nil
    }

    public func join(groupID: String, _ request: GroupStateMachine.JoinRequest) async -> GroupStateMachine.JoinReply {
        if let code = groupIDError(groupID) { return GroupStateMachine.JoinReply(errorCode: code, memberID: request.memberID) }
        // What the member would keep (an upper bound: a rejoin replaces what it had).
        let requestBytes = GroupStateMachine.bytes(of: request.protocols) + request.clientID.utf8.count + request.memberID.utf8.count
            + (request.instanceID?.utf8.count ?? 0) + request.clientHost.utf8.count + 128
        let limits = self.limits
        let (groupsRefused, bytesRefused) = (refusedGroups, refusedBytes)
        return await withUnsafeContinuation { (continuation: UnsafeContinuation<GroupStateMachine.JoinReply, Never>) in
            let outcome = apply(groupID, register: .join(continuation), admit: { state, exists in
                if !exists && state.groups.count >= limits.groupsMax {
                    groupsRefused.increment()
                    return KafkaErrorCode.coordinatorNotAvailable
                }
                if state.retainedBytes + requestBytes > limits.stateBytesMax {
                    bytesRefused.increment()
                    return KafkaErrorCode.coordinatorNotAvailable
                }
                return nil
            }) { machine, token, now in
                machine.join(token, request, now: now)
            }
            if case .refused(let code) = outcome {
                continuation.resume(returning: GroupStateMachine.JoinReply(errorCode: code, memberID: request.memberID))
            }
        }
    }

    public func sync(groupID: String, memberID: String, instanceID: String? = nil, generation: Int32, assignments: [(memberID: String, assignment: [UInt8])]) async
        -> GroupStateMachine.SyncReply
    {
        await withUnsafeContinuation { continuation in
            let outcome = apply(groupID, register: .sync(continuation)) { machine, token, now in
                machine.sync(token, memberID: memberID, instanceID: instanceID, generation: generation, assignments: assignments, now: now)
            }
            switch outcome {
            case .ran: break
            case .unknownGroup: continuation.resume(returning: GroupStateMachine.SyncReply(errorCode: KafkaErrorCode.unknownMemberID))
            case .refused(let code): continuation.resume(returning: GroupStateMachine.SyncReply(errorCode: code))
            }
        }
    }

    public func heartbeat(groupID: String, memberID: String, instanceID: String? = nil, generation: Int32) -> Int16 {
        var code = KafkaErrorCode.unknownMemberID
        let outcome = apply(groupID) { machine, _, now in
            code = machine.heartbeat(memberID: memberID, instanceID: instanceID, generation: generation, now: now)
            return []
        }
        if case .refused(let refusal) = outcome { return refusal }
        return code
    }

    public func leave(groupID: String, members: [(memberID: String, instanceID: String?)]) -> [Int16] {
        var codes = members.map { _ in KafkaErrorCode.unknownMemberID }
        let outcome = apply(groupID) { machine, _, now in
            let (result, replies) = machine.leave(members, now: now)
            codes = result
            return replies
        }
        if case .refused(let refusal) = outcome { return members.map { _ in refusal } }
        return codes
    }

    private enum Queued {
        case refused(Int16)
        case queued(OffsetStore.PendingWrite)
    }

    /// Checks membership and queues the commits under the same lock as the group's
    /// events (so a commit checked against a generation is stored before anything a
    /// later generation commits), then waits until they are durable. Commits are
    /// stamped with the coordinator's clock.
    public func commit(
        groupID: String, memberID: String, instanceID: String? = nil, generation: Int32, _ commits: [(TopicPartition, OffsetStore.Committed)]) async -> Int16 {
        if let code = groupIDError(groupID) { return code }
        let now = clock.nowMilliseconds()
        let stamped = commits.map { partition, committed in
            var committed = committed
            committed.commitTimestamp = now
            return (partition, committed)
        }
        let queued = state.withLock { state -> Queued in
            if state.closed { return .refused(KafkaErrorCode.notCoordinator) }
            let code: Int16
            if let machine = state.groups[groupID] {
                code = machine.commitError(memberID: memberID, instanceID: instanceID, generation: generation)
            } else {
                // No members: only a commit from outside group management (Kafka's
                // "simple" consumers, generation -1) may store offsets.
                code = generation < 0 ? KafkaErrorCode.none : KafkaErrorCode.illegalGeneration
            }
            guard code == KafkaErrorCode.none else { return .refused(code) }
            guard let pending = offsets.enqueueCommit(group: groupID, stamped) else { return .refused(KafkaErrorCode.invalidCommitOffsetSize) }
            if state.groups[groupID] == nil { state.emptySince[groupID] = state.emptySince[groupID] ?? now }
            return .queued(pending)
        }
        return await outcome(of: queued, group: groupID, what: "offset commit")
    }

    /// Waits for a queued write; Kafka's code for how it ended.
    private func outcome(of queued: Queued, group groupID: String, what: String) async -> Int16 {
        switch queued {
        case .refused(let code): return code
        case .queued(let pending):
            do throws(BrokerError) {
                try await pending.completion()
                return KafkaErrorCode.none
            } catch {
                logger.warning("\(what) failed", metadata: ["group": "\(groupID)", "error": "\(error)"])
                return KafkaErrorCode.from(error)
            }
        }
    }

    /// Deletes a group that has no members: its committed offsets and its state.
    /// Returns Kafka's error code (NON_EMPTY_GROUP while members remain).
    public func deleteGroup(_ groupID: String) async -> Int16 {
        let pending = state.withLock { state -> Queued in
            if state.closed { return .refused(KafkaErrorCode.notCoordinator) }
            if state.groups[groupID] != nil { return .refused(KafkaErrorCode.nonEmptyGroup) }
            guard offsets.hasOffsets(groupID) else { return .refused(KafkaErrorCode.groupIDNotFound) }
            state.emptySince[groupID] = nil
            return .queued(offsets.enqueue(.deleteGroup(groupID)))
        }
        return await outcome(of: pending, group: groupID, what: "group deletion")
    }

    /// Deletes a group's committed offsets of some partitions (Kafka's OffsetDelete).
    /// While the group has members, offsets of topics they subscribe to stay
    /// (GROUP_SUBSCRIBED_TO_TOPIC for those partitions); `subscribedTopics` reads the
    /// members' subscriptions, nil for a group whose protocol it cannot read (then the
    /// whole request gets NON_EMPTY_GROUP, as in Kafka). Runs under the group's lock.
    public func deleteOffsets(
        groupID: String, partitions: [TopicPartition], subscribedTopics: (GroupStateMachine) -> Set<String>?
    ) async -> (groupCode: Int16, partitions: [TopicPartition: Int16]) {
        if let code = groupIDError(groupID) { return (code, [:]) }
        let outcome = state.withLock { state -> (Int16, [TopicPartition: Int16], OffsetStore.PendingWrite?) in
            if state.closed { return (KafkaErrorCode.notCoordinator, [:], nil) }
            var codes: [TopicPartition: Int16] = [:]
            var deletable = partitions
            if let machine = state.groups[groupID], !machine.members.isEmpty {
                guard let subscribed = subscribedTopics(machine) else { return (KafkaErrorCode.nonEmptyGroup, [:], nil) }
                deletable = partitions.filter { !subscribed.contains($0.topic) }
                for partition in partitions where subscribed.contains(partition.topic) { codes[partition] = KafkaErrorCode.groupSubscribedToTopic }
            } else if !offsets.hasOffsets(groupID) {
                return (KafkaErrorCode.groupIDNotFound, [:], nil)
            }
            for partition in deletable { codes[partition] = KafkaErrorCode.none }
            guard !deletable.isEmpty else { return (KafkaErrorCode.none, codes, nil) }
            return (KafkaErrorCode.none, codes, offsets.enqueue(.deletePartitions(group: groupID, deletable)))
        }
        guard let pending = outcome.2 else { return (outcome.0, outcome.1) }
        let code = await self.outcome(of: .queued(pending), group: groupID, what: "offset deletion")
        if code != KafkaErrorCode.none { return (code, [:]) }
        return (outcome.0, outcome.1)
    }

    /// A snapshot of a group, or nil when it is unknown (no members, no offsets).
    public func describe(_ groupID: String) -> GroupStateMachine? {
        let machine = state.withLock { $0.groups[groupID] }
        if let machine { return machine }
        return offsets.hasOffsets(groupID) ? GroupStateMachine(groupID: groupID, random: SplitMix64(seed: 0)) : nil
    }

    /// Every known group: with members, or with committed offsets.
    public func allGroups() -> [GroupStateMachine] {
        let live = state.withLock { Array($0.groups.values) }
        let liveIDs = Set(live.map(\.groupID))
        return live + offsets.groups.subtracting(liveIDs).map { GroupStateMachine(groupID: $0, random: SplitMix64(seed: 0)) }
    }

    /// Stops coordinating (cluster mode: the offsets' log moved to another node):
    /// parked joins and syncs, and every later request, get NOT_COORDINATOR, so
    /// clients look the coordinator up again and rejoin there. Members are forgotten;
    /// committed offsets stay in the log for the next coordinator.
    public func close() {
        let parked: [Waiter] = state.withLock { state in
            state.closed = true
            state.groups = [:]
            state.retainedBytes = 0
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in parked {
            switch waiter {
            case .join(let continuation): continuation.resume(returning: GroupStateMachine.JoinReply(errorCode: KafkaErrorCode.notCoordinator, memberID: ""))
            case .sync(let continuation): continuation.resume(returning: GroupStateMachine.SyncReply(errorCode: KafkaErrorCode.notCoordinator))
            }
        }
    }

    /// Groups with members now, and the bytes they keep.
    public var usage: (groups: Int, retainedBytes: Int) { state.withLock { ($0.groups.count, $0.retainedBytes) } }

    /// Expires sessions, ends join phases on time and expires offsets of groups long
    /// empty, until cancelled.
    public func runTicker() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Self.tickMilliseconds))
            tick()
        }
    }

    /// One pass of the ticker (tests call it with a controlled clock).
    func tick() {
        let now = clock.nowMilliseconds()
        let due: [(Waiter, GroupStateMachine.Reply)] = state.withLock { state in
            if state.closed { return [] }
            var due: [(Waiter, GroupStateMachine.Reply)] = []
            for (_, var machine) in state.groups {
                let before = machine.retainedBytes
                let replies = machine.tick(now: now)
                Self.store(machine, retainedBefore: before, now: now, in: &state)
                due += Self.takeWaiters(for: replies, from: &state)
            }
            if now - state.lastExpiryCheck >= Self.expiryCheckMilliseconds {
                state.lastExpiryCheck = now
                expireOffsets(now: now, in: &state)
            }
            return due
        }
        Self.deliver(due)
    }

    /// Queues the expiry of committed offsets of groups without members whose
    /// retention ran out: committed, and empty, longer than the retention ago.
    private func expireOffsets(now: Int64, in state: inout State) {
        let cutoff = now - limits.offsetsRetentionMilliseconds
        for group in offsets.groups where state.groups[group] == nil {
            let emptySince = state.emptySince[group] ?? startedMilliseconds
            guard emptySince < cutoff else { continue }
            let pending = offsets.enqueue(.expire(group: group, before: cutoff))
            Task { try? await pending.completion() }
        }
        let withOffsets = offsets.groups
        state.emptySince = state.emptySince.filter { withOffsets.contains($0.key) }
    }
}
