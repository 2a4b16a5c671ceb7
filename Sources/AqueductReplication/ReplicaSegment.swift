import NIOCore

/// What a storage node knows of one segment it holds copies of, and how it answers the
/// protocol (BookKeeper's bookie side, without I/O): the fenced bit, the last entry
/// stored, the highest last-add-confirmed it was told, and the long polls waiting for
/// that to move. The shell stores entries (journal, entry storage), persists the fenced
/// bit before answering a fence, and delivers what the machine returns.
public struct ReplicaSegment: Sendable {
    public typealias RequestID = UInt64

    public enum AddDecision: Sendable, Hashable {
        /// Make the entry durable, then call `stored` and answer `ok`.
        case store
        /// Answer at once with this status; nothing is stored.
        case refuse(StorageProtocol.Status)
    }

    /// A long poll answered: its request, the status (ok or timedOut) and what to report.
    public struct PollAnswer: Sendable, Hashable {
        public var request: RequestID
        public var status: StorageProtocol.Status
        public var lastAddConfirmed: Int64
        public var lastEntry: Int64

        public init(request: RequestID, status: StorageProtocol.Status, lastAddConfirmed: Int64, lastEntry: Int64) {
            self.request = request
            self.status = status
            self.lastAddConfirmed = lastAddConfirmed
            self.lastEntry = lastEntry
        }
    }

    public private(set) var isFenced: Bool
    /// The highest entry stored (-1: none).
    public private(set) var lastEntry: Int64
    /// The highest last-add-confirmed a writer told this node, with an entry or explicitly.
    public private(set) var lastAddConfirmed: Int64
    private var polls: [(request: RequestID, after: Int64, deadlineMilliseconds: Int64)] = []
    /// Long polls one segment may hold at once: a reader's input must not grow without bound.
    public let pollsMax: Int

    /// A segment as recovered from disk (a new one: nothing stored, not fenced).
    public init(isFenced: Bool = false, lastEntry: Int64 = -1, lastAddConfirmed: Int64 = -1, pollsMax: Int = 1_024) {
        self.isFenced = isFenced
        self.lastEntry = lastEntry
        self.lastAddConfirmed = lastAddConfirmed
        self.pollsMax = pollsMax
    }

    /// Whether to store an entry: a damaged one never, a normal add never once fenced
    /// (the deposed writer must not reach a quorum), a recovery add always.
    public func add(_ entry: StorageProtocol.Entry, isRecovery: Bool, payloadBytesMax: Int) -> AddDecision {
        guard entry.payload.readableBytes <= payloadBytesMax else { return .refuse(.tooLarge) }
        guard entry.isIntact else { return .refuse(.badChecksum) }
        if isFenced && !isRecovery { return .refuse(.fenced) }
        return .store
    }

    /// The entry is durable: it and the last-add-confirmed it carried count now. Returns
    /// the long polls that its last-add-confirmed satisfies.
    public mutating func stored(_ entry: StorageProtocol.Entry) -> [PollAnswer] {
        lastEntry = max(lastEntry, entry.entry)
        return advance(to: entry.lastAddConfirmed)
    }

    /// An explicit last-add-confirmed from an idle writer.
    public mutating func advertised(_ lastAddConfirmed: Int64) -> [PollAnswer] {
        advance(to: lastAddConfirmed)
    }

    /// Fences the segment. True when the bit is new: the shell persists it before it
    /// answers, so a restart cannot un-fence.
    public mutating func fence() -> Bool {
        guard !isFenced else { return false }
        isFenced = true
        return true
    }

    /// A read-LAC: answered now (no long poll, or the last-add-confirmed already passed
    /// `after`), or parked until it does or `deadline`; `unavailable` when the segment
    /// holds its limit of polls.
    public mutating func readLastAddConfirmed(
        _ request: RequestID, after: Int64?, waitMilliseconds: UInt32, nowMilliseconds: Int64
    ) -> PollAnswer? {
        guard let after, lastAddConfirmed <= after, waitMilliseconds > 0 else {
            return PollAnswer(request: request, status: .ok, lastAddConfirmed: lastAddConfirmed, lastEntry: lastEntry)
        }
        guard polls.count < pollsMax else {
            return PollAnswer(request: request, status: .unavailable, lastAddConfirmed: lastAddConfirmed, lastEntry: lastEntry)
        }
        polls.append((request, after, nowMilliseconds + Int64(waitMilliseconds)))
        return nil
    }

    /// Long polls whose wait is over, answered `timedOut` with what the node has.
    public mutating func expirePolls(nowMilliseconds: Int64) -> [PollAnswer] {
        var expired: [PollAnswer] = []
        polls.removeAll { poll in
            guard poll.deadlineMilliseconds <= nowMilliseconds else { return false }
            expired.append(PollAnswer(request: poll.request, status: .timedOut, lastAddConfirmed: lastAddConfirmed, lastEntry: lastEntry))
            return true
        }
        return expired
    }

    /// A reader went away: its poll is dropped unanswered.
    public mutating func cancelPoll(_ request: RequestID) {
        polls.removeAll { $0.request == request }
    }

    public var waitingPolls: Int { polls.count }

    private mutating func advance(to confirmed: Int64) -> [PollAnswer] {
        guard confirmed > lastAddConfirmed else { return [] }
        lastAddConfirmed = confirmed
        var woken: [PollAnswer] = []
        polls.removeAll { poll in
            guard lastAddConfirmed > poll.after else { return false }
            woken.append(PollAnswer(request: poll.request, status: .ok, lastAddConfirmed: lastAddConfirmed, lastEntry: lastEntry))
            return true
        }
        return woken
    }
}
