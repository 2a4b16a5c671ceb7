import AqueductAPI
import AqueductBroker
import AqueductCommon

/// One consumer group's membership protocol (Kafka's classic group protocol) as a pure
/// state machine: events in (join, sync, heartbeat, leave, the clock), replies out.
/// No I/O, no clock of its own: the coordinator feeds it `nowMilliseconds` and
/// delivers its replies, so a test can script any interleaving and replay it.
///
///     Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
///     CompletingRebalance --leader's SyncGroup--> Stable
///     Stable / CompletingRebalance --join, leave, expiry--> PreparingRebalance
///     any --last member gone--> Empty
public struct GroupStateMachine: Sendable {
    public enum State: String, Sendable {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
        case dead = "Dead"
    }

    /// Identifies a request waiting for its reply (the coordinator's continuation).
    public typealias Token = UInt64

    public struct SupportedProtocol: Sendable, Equatable {
        public var name: String
        public var metadata: [UInt8]

        public init(name: String, metadata: [UInt8]) {
            self.name = name
            self.metadata = metadata
        }
    }

    public struct Member: Sendable, Equatable {
        public var id: String
        public var instanceID: String?
        public var clientID: String
        public var clientHost: String
        public var sessionTimeoutMilliseconds: Int64
        public var rebalanceTimeoutMilliseconds: Int64
        public var protocols: [SupportedProtocol]
        public var assignment: [UInt8] = []
        public var lastHeartbeatMilliseconds: Int64
        var pendingJoin: Token?
        var pendingSync: Token?
    }

    public struct JoinReply: Sendable, Equatable {
        public var errorCode: Int16
        public var generation: Int32 = -1
        public var protocolType: String?
        public var protocolName: String?
        public var leaderID: String = ""
        public var memberID: String
        /// Filled for the leader only: every member and its metadata for the chosen protocol.
        public var members: [(id: String, instanceID: String?, metadata: [UInt8])] = []

        public static func == (a: JoinReply, b: JoinReply) -> Bool {
            a.errorCode == b.errorCode && a.generation == b.generation && a.protocolName == b.protocolName
                && a.leaderID == b.leaderID && a.memberID == b.memberID && a.members.map(\.id) == b.members.map(\.id)
        }
    }

    public struct SyncReply: Sendable, Equatable {
        public var errorCode: Int16
        public var protocolType: String?
        public var protocolName: String?
        public var assignment: [UInt8] = []
    }

    public enum Reply: Sendable, Equatable {
        case join(Token, JoinReply)
        case sync(Token, SyncReply)

        /// The request this reply answers.
        public var token: Token {
            switch self {
            case .join(let token, _), .sync(let token, _): token
            }
        }
    }

    public let groupID: String
    public let limits: GroupLimits
    /// Makes the random part of member ids; seeded, so a test replays a run.
    private var random: SplitMix64
    public private(set) var state: State = .empty
    public private(set) var generation: Int32 = 0
    public private(set) var protocolType: String?
    public private(set) var protocolName: String?
    public private(set) var leaderID: String?
    /// Members in the order they joined (the first is the default leader).
    public private(set) var members: [Member] = []
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet used, with their deadline.
    private var pendingMemberIDs: [String: Int64] = [:]
    private var rebalanceDeadline: Int64?
    /// The first rebalance of an empty group waits `initialRebalanceDelayMilliseconds`
    /// for more members (Kafka's group.initial.rebalance.delay.ms), again while members
    /// keep arriving, within the rebalance timeout: consumers started together land in
    /// one generation instead of a rebalance each.
    private var initialDelay: (deadline: Int64, remaining: Int64, memberAdded: Bool)?

    /// `random` makes member ids unguessable and unique across restarts, as Kafka's
    /// (`clientId-UUID`); tests pass a seeded one.
    public init(groupID: String, limits: GroupLimits = GroupLimits(), random: SplitMix64 = SplitMix64()) {
        self.groupID = groupID
        self.limits = limits
        self.random = random
    }

    private func index(of memberID: String) -> Int? { members.firstIndex { $0.id == memberID } }

    public func member(_ id: String) -> Member? { index(of: id).map { members[$0] } }

    // MARK: - JoinGroup

    public struct JoinRequest: Sendable {
        public var memberID: String
        public var instanceID: String?
        public var clientID: String
        public var clientHost: String
        public var protocolType: String
        public var protocols: [SupportedProtocol]
        public var sessionTimeoutMilliseconds: Int64
        public var rebalanceTimeoutMilliseconds: Int64
        /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
        public var requiresKnownMemberID: Bool

        public init(
            memberID: String, instanceID: String?, clientID: String, clientHost: String, protocolType: String,
            protocols: [SupportedProtocol], sessionTimeoutMilliseconds: Int64, rebalanceTimeoutMilliseconds: Int64, requiresKnownMemberID: Bool
        ) {
            self.memberID = memberID
            self.instanceID = instanceID
            self.clientID = clientID
            self.clientHost = clientHost
            self.protocolType = protocolType
            self.protocols = protocols
            self.sessionTimeoutMilliseconds = sessionTimeoutMilliseconds
            self.rebalanceTimeoutMilliseconds = rebalanceTimeoutMilliseconds
            self.requiresKnownMemberID = requiresKnownMemberID
        }
    }

    public mutating func join(_ token: Token, _ request: JoinRequest, now: Int64) -> [Reply] {
        func fail(_ code: Int16, memberID: String = request.memberID) -> [Reply] {
            [.join(token, JoinReply(errorCode: code, memberID: memberID))]
        }
        guard state != .dead else { return fail(KafkaErrorCode.coordinatorNotAvailable) }
        guard limits.sessionTimeoutMilliseconds.contains(request.sessionTimeoutMilliseconds) else {
            return fail(KafkaErrorCode.invalidSessionTimeout)
        }
        guard !request.protocolType.isEmpty, !request.protocols.isEmpty else { return fail(KafkaErrorCode.inconsistentGroupProtocol) }
        // What a member keeps here is bounded: it is shown to the others, some in
        // 16-bit strings, and it takes memory until the member leaves.
        let identifiers = [request.protocolType, request.instanceID ?? ""] + request.protocols.map(\.name)
        guard identifiers.allSatisfy({ $0.utf8.count <= limits.identifierBytesMax }) else { return fail(KafkaErrorCode.invalidRequest) }
        guard Self.bytes(of: request.protocols) <= limits.memberMetadataBytesMax else { return fail(KafkaErrorCode.invalidRequest) }
        if !members.isEmpty {
            // Every member must speak the group's protocol type and share a protocol with it.
            let names = Set(request.protocols.map(\.name))
            let shared = members.allSatisfy { member in member.protocols.contains { names.contains($0.name) } }
            guard request.protocolType == protocolType, shared || (members.count == 1 && members[0].id == request.memberID) else {
                return fail(KafkaErrorCode.inconsistentGroupProtocol)
            }
        }
        var memberID = request.memberID
        var replies: [Reply] = []
        if memberID.isEmpty {
            if let instanceID = request.instanceID, let existing = members.firstIndex(where: { $0.instanceID == instanceID }) {
                // A static member restarting: it takes over its old place under a new
                // id; the old id is fenced (its pending requests fail).
                let oldID = members[existing].id
                let previousLeader = leaderID
                memberID = newMemberID(request.clientID)
                replies += failPending(of: members[existing], code: KafkaErrorCode.fencedInstanceID)
                members[existing].pendingJoin = nil
                members[existing].pendingSync = nil
                members[existing].id = memberID
                if leaderID == oldID { leaderID = memberID }
                // KIP-345 (Kafka 2.3-3.0): in a stable group a returning static member,
                // leader or not, keeps its assignment without a rebalance (its SyncGroup
                // returns it) unless its protocols change the group's choice. The reply
                // names the leader by its old id, so a returning leader does not take
                // itself for the leader and assign to a group that is not rebalancing.
                if state == .stable {
                    let before = members[existing].protocols
                    members[existing].protocols = request.protocols
                    if chooseProtocol() == protocolName {
                        members[existing].sessionTimeoutMilliseconds = request.sessionTimeoutMilliseconds
                        members[existing].rebalanceTimeoutMilliseconds = request.rebalanceTimeoutMilliseconds
                        members[existing].lastHeartbeatMilliseconds = now
                        return replies + [.join(token, JoinReply(
                            errorCode: KafkaErrorCode.none, generation: generation, protocolType: protocolType,
                            protocolName: protocolName, leaderID: previousLeader ?? "", memberID: memberID))]
                    }
                    members[existing].protocols = before
                }
            } else {
                guard members.count + pendingMemberIDs.count < limits.membersMax else { return fail(KafkaErrorCode.groupMaxSizeReached) }
                memberID = newMemberID(request.clientID)
                if request.requiresKnownMemberID && request.instanceID == nil {
                    pendingMemberIDs[memberID] = now + request.sessionTimeoutMilliseconds
                    return fail(KafkaErrorCode.memberIDRequired, memberID: memberID)
                }
            }
        } else if index(of: memberID) == nil {
            guard pendingMemberIDs.removeValue(forKey: memberID) != nil else { return fail(KafkaErrorCode.unknownMemberID) }
        }
        if let existing = index(of: memberID) {
            if let instanceID = request.instanceID, members[existing].instanceID != nil, members[existing].instanceID != instanceID {
                return fail(KafkaErrorCode.fencedInstanceID)
            }
            if let previous = members[existing].pendingJoin {
                // A retried join replaces the earlier one, which gets no answer but this.
                replies.append(.join(previous, JoinReply(errorCode: KafkaErrorCode.rebalanceInProgress, memberID: memberID)))
            }
            members[existing].protocols = request.protocols
            members[existing].sessionTimeoutMilliseconds = request.sessionTimeoutMilliseconds
            members[existing].rebalanceTimeoutMilliseconds = request.rebalanceTimeoutMilliseconds
            members[existing].lastHeartbeatMilliseconds = now
            members[existing].pendingJoin = token
        } else {
            // Only a group that never had a generation waits again for more (Kafka's rule).
            if initialDelay != nil && generation == 0 { initialDelay?.memberAdded = true }
            members.append(Member(
                id: memberID, instanceID: request.instanceID, clientID: request.clientID, clientHost: request.clientHost,
                sessionTimeoutMilliseconds: request.sessionTimeoutMilliseconds,
                rebalanceTimeoutMilliseconds: request.rebalanceTimeoutMilliseconds,
                protocols: request.protocols, lastHeartbeatMilliseconds: now, pendingJoin: token))
        }
        protocolType = request.protocolType
        replies += prepareRebalance(now: now)
        replies += completeJoinIfReady(now: now, deadlinePassed: false)
        return replies
    }

    /// Longest part of a client id that goes into a member id, in bytes. Kafka uses
    /// the whole client id, which can make a member id too long for the 16-bit string
    /// it travels in (JoinGroup v0-5); a prefix keeps every member id encodable.
    public static let memberIDClientBytesMax = 128

    /// Kafka's form: the client id, a dash, a random UUID (a member from before a
    /// restart can never collide with a new one).
    private mutating func newMemberID(_ clientID: String) -> String {
        let prefix = clientID.isEmpty ? "member" : clientID.utf8Prefix(Self.memberIDClientBytesMax)
        return "\(prefix)-\(random.uuidString())"
    }

    /// Moves to PreparingRebalance (from any other live state); pending syncs learn
    /// that a rebalance started.
    private mutating func prepareRebalance(now: Int64) -> [Reply] {
        var replies: [Reply] = []
        if state != .preparingRebalance {
            for index in members.indices {
                if let sync = members[index].pendingSync {
                    replies.append(.sync(sync, SyncReply(errorCode: KafkaErrorCode.rebalanceInProgress)))
                    members[index].pendingSync = nil
                }
            }
            let rebalanceTimeout = members.map(\.rebalanceTimeoutMilliseconds).max() ?? 0
            let delay = limits.initialRebalanceDelayMilliseconds
            if state == .empty && delay > 0 {
                initialDelay = (now + delay, max(rebalanceTimeout - delay, 0), false)
            }
            state = .preparingRebalance
            rebalanceDeadline = now + rebalanceTimeout
        }
        return replies
    }

    /// Ends the join phase when every member has joined, or at the rebalance deadline
    /// (members that did not join are dropped).
    private mutating func completeJoinIfReady(now: Int64, deadlinePassed: Bool) -> [Reply] {
        guard state == .preparingRebalance else { return [] }
        if !deadlinePassed && (initialDelay != nil || members.contains(where: { $0.pendingJoin == nil })) { return [] }
        initialDelay = nil
        var replies: [Reply] = []
        let absent = members.filter { $0.pendingJoin == nil }
        members.removeAll { $0.pendingJoin == nil }
        for member in absent { replies += failPending(of: member, code: KafkaErrorCode.unknownMemberID) }
        rebalanceDeadline = nil
        guard !members.isEmpty else {
            becomeEmpty()
            return replies
        }
        generation += 1
        protocolName = chooseProtocol()
        if leaderID.map({ index(of: $0) == nil }) ?? true { leaderID = members[0].id }
        let leader = leaderID!
        let everyone = members.map { member in
            (id: member.id, instanceID: member.instanceID,
             metadata: member.protocols.first { $0.name == protocolName }?.metadata ?? [])
        }
        for index in members.indices {
            members[index].assignment = []
            guard let token = members[index].pendingJoin else { continue }
            members[index].pendingJoin = nil
            members[index].lastHeartbeatMilliseconds = now
            var reply = JoinReply(
                errorCode: KafkaErrorCode.none, generation: generation, protocolType: protocolType, protocolName: protocolName,
                leaderID: leader, memberID: members[index].id)
            if members[index].id == leader { reply.members = everyone }
            replies.append(.join(token, reply))
        }
        state = .completingRebalance
        return replies
    }

    /// The protocol every member supports that gets the most votes, each member voting
    /// for its first supported choice (Kafka's rule); ties go to the leader's order.
    private func chooseProtocol() -> String? {
        guard let first = members.first else { return nil }
        let candidates = first.protocols.map(\.name).filter { name in members.allSatisfy { $0.protocols.contains { $0.name == name } } }
        guard !candidates.isEmpty else { return first.protocols.first?.name }
        var votes: [String: Int] = [:]
        for member in members {
            if let choice = member.protocols.first(where: { candidates.contains($0.name) }) { votes[choice.name, default: 0] += 1 }
        }
        var best: String?
        var bestVotes = -1
        for name in candidates where (votes[name] ?? 0) > bestVotes {
            best = name
            bestVotes = votes[name] ?? 0
        }
        return best
    }

    private mutating func becomeEmpty() {
        state = .empty
        leaderID = nil
        protocolName = nil
        generation += 1
        rebalanceDeadline = nil
        initialDelay = nil
    }

    private func failPending(of member: Member, code: Int16) -> [Reply] {
        var replies: [Reply] = []
        if let join = member.pendingJoin { replies.append(.join(join, JoinReply(errorCode: code, memberID: member.id))) }
        if let sync = member.pendingSync { replies.append(.sync(sync, SyncReply(errorCode: code))) }
        return replies
    }

    // MARK: - SyncGroup

    public mutating func sync(
        _ token: Token, memberID: String, instanceID: String? = nil, generation requested: Int32,
        assignments: [(memberID: String, assignment: [UInt8])], now: Int64
    ) -> [Reply] {
        func reply(_ code: Int16) -> [Reply] { [.sync(token, SyncReply(errorCode: code))] }
        if isFenced(memberID, instanceID) { return reply(KafkaErrorCode.fencedInstanceID) }
        guard let index = index(of: memberID) else { return reply(KafkaErrorCode.unknownMemberID) }
        guard requested == generation else { return reply(KafkaErrorCode.illegalGeneration) }
        members[index].lastHeartbeatMilliseconds = now
        switch state {
        case .empty, .dead: return reply(KafkaErrorCode.unknownMemberID)
        case .preparingRebalance: return reply(KafkaErrorCode.rebalanceInProgress)
        case .stable:
            return [.sync(token, SyncReply(
                errorCode: KafkaErrorCode.none, protocolType: protocolType, protocolName: protocolName, assignment: members[index].assignment))]
        case .completingRebalance:
            var replies: [Reply] = []
            if let previous = members[index].pendingSync {
                replies.append(.sync(previous, SyncReply(errorCode: KafkaErrorCode.rebalanceInProgress)))
            }
            members[index].pendingSync = token
            guard memberID == leaderID else { return replies }
            guard assignments.allSatisfy({ $0.assignment.count <= limits.memberMetadataBytesMax }) else {
                members[index].pendingSync = nil
                return replies + reply(KafkaErrorCode.invalidRequest)
            }
            let byMember = Dictionary(assignments.map { ($0.memberID, $0.assignment) }, uniquingKeysWith: { _, last in last })
            for other in members.indices {
                members[other].assignment = byMember[members[other].id] ?? []
                if let waiting = members[other].pendingSync {
                    members[other].pendingSync = nil
                    replies.append(.sync(waiting, SyncReply(
                        errorCode: KafkaErrorCode.none, protocolType: protocolType, protocolName: protocolName,
                        assignment: members[other].assignment)))
                }
            }
            state = .stable
            return replies
        }
    }

    // MARK: - Heartbeat, LeaveGroup, offsets

    /// Whether a request names a static member's instance id with another member id
    /// than the instance's current one: an older incarnation, fenced (Kafka's
    /// FENCED_INSTANCE_ID, which tells that client to stop).
    public func isFenced(_ memberID: String, _ instanceID: String?) -> Bool {
        guard let instanceID, let current = members.first(where: { $0.instanceID == instanceID }) else { return false }
        return current.id != memberID
    }

    public mutating func heartbeat(memberID: String, instanceID: String? = nil, generation requested: Int32, now: Int64) -> Int16 {
        if isFenced(memberID, instanceID) { return KafkaErrorCode.fencedInstanceID }
        guard let index = index(of: memberID), state != .empty, state != .dead else { return KafkaErrorCode.unknownMemberID }
        guard requested == generation else { return KafkaErrorCode.illegalGeneration }
        members[index].lastHeartbeatMilliseconds = now
        return state == .preparingRebalance ? KafkaErrorCode.rebalanceInProgress : KafkaErrorCode.none
    }

    /// Removes members by id, or by instance id for static members (LeaveGroup v3+).
    /// Returns an error code per departing member and the replies due.
    public mutating func leave(_ departing: [(memberID: String, instanceID: String?)], now: Int64) -> (codes: [Int16], replies: [Reply]) {
        var codes: [Int16] = []
        var replies: [Reply] = []
        var removedAny = false
        for (memberID, instanceID) in departing {
            let found = members.firstIndex { member in
                if let instanceID, member.instanceID == instanceID { return memberID.isEmpty || member.id == memberID }
                return member.id == memberID
            }
            guard let found else {
                codes.append(KafkaErrorCode.unknownMemberID)
                continue
            }
            if instanceID == nil, members[found].instanceID != nil, memberID != members[found].id {
                codes.append(KafkaErrorCode.fencedInstanceID)
                continue
            }
            replies += failPending(of: members[found], code: KafkaErrorCode.unknownMemberID)
            members.remove(at: found)
            codes.append(KafkaErrorCode.none)
            removedAny = true
        }
        if removedAny { replies += membershipChanged(now: now) }
        return (codes, replies)
    }

    private mutating func membershipChanged(now: Int64) -> [Reply] {
        if members.isEmpty {
            if state != .empty { becomeEmpty() }
            return []
        }
        var replies = prepareRebalance(now: now)
        replies += completeJoinIfReady(now: now, deadlinePassed: false)
        return replies
    }

    /// Whether a member may commit offsets now (OffsetCommit's checks). A commit with
    /// generation -1 and no member id is a "simple" commit from outside the group,
    /// allowed while the group has no members. As in Kafka, a member of the current
    /// generation may commit while a rebalance gathers members (cooperative consumers
    /// commit what they give up then); only between the join and the assignment,
    /// when its partitions are not settled, is it told REBALANCE_IN_PROGRESS.
    public func commitError(memberID: String, instanceID: String? = nil, generation requested: Int32) -> Int16 {
        if isFenced(memberID, instanceID) { return KafkaErrorCode.fencedInstanceID }
        if requested < 0 && memberID.isEmpty {
            return members.isEmpty ? KafkaErrorCode.none : KafkaErrorCode.unknownMemberID
        }
        guard index(of: memberID) != nil else { return KafkaErrorCode.unknownMemberID }
        guard requested == generation else { return KafkaErrorCode.illegalGeneration }
        if state == .completingRebalance { return KafkaErrorCode.rebalanceInProgress }
        return KafkaErrorCode.none
    }

    // MARK: - Time

    /// Expires members whose session ran out and ends a join phase at its deadline.
    public mutating func tick(now: Int64) -> [Reply] {
        pendingMemberIDs = pendingMemberIDs.filter { $0.value > now }
        var replies: [Reply] = []
        let expired = members.filter { member in
            member.pendingJoin == nil && member.lastHeartbeatMilliseconds + member.sessionTimeoutMilliseconds < now
        }
        if !expired.isEmpty {
            for member in expired { replies += failPending(of: member, code: KafkaErrorCode.unknownMemberID) }
            members.removeAll { member in expired.contains { $0.id == member.id } }
            replies += membershipChanged(now: now)
        }
        if state == .preparingRebalance, let delay = initialDelay, now >= delay.deadline {
            if delay.memberAdded && delay.remaining > 0 {
                // Members still arriving: wait once more, within the rebalance timeout.
                let next = min(limits.initialRebalanceDelayMilliseconds, delay.remaining)
                initialDelay = (now + next, max(delay.remaining - next, 0), false)
            } else {
                initialDelay = nil
                replies += completeJoinIfReady(now: now, deadlinePassed: false)
            }
        }
        if state == .preparingRebalance, let deadline = rebalanceDeadline, now >= deadline {
            replies += completeJoinIfReady(now: now, deadlinePassed: true)
        }
        return replies
    }

    /// Bytes a member's protocols take (names and metadata).
    static func bytes(of protocols: [SupportedProtocol]) -> Int {
        protocols.reduce(0) { $0 + $1.name.utf8.count + $1.metadata.count }
    }

    /// Bytes the members keep here (ids, protocols, metadata, assignments), what the
    /// coordinator's `stateBytesMax` bounds over all groups.
    public var retainedBytes: Int {
        let perMember = members.reduce(0) { total, member in
            total + member.id.utf8.count + (member.instanceID?.utf8.count ?? 0) + member.clientID.utf8.count + member.clientHost.utf8.count
                + Self.bytes(of: member.protocols) + member.assignment.count + 64
        }
        return groupID.utf8.count + perMember + pendingMemberIDs.keys.reduce(0) { $0 + $1.utf8.count + 16 }
    }

    /// Whether the coordinator can forget this group (no members; offsets live apart).
    public var isIdle: Bool { members.isEmpty && pendingMemberIDs.isEmpty }
}
