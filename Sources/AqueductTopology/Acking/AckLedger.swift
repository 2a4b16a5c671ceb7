/// The tuple trees of one spout task, tracked as Storm's acker does: each tree is a
/// 64-bit value that every emitted edge id is XORed into once when the tuple is sent and
/// once when it is acked, so the value is zero exactly when every tuple of the tree was
/// acked (a false zero has probability 2^-64). Heron keeps this state beside the spout
/// instead of in acker tasks; so does Aqueduct: the ledger lives on the spout's thread.
///
/// Pure: time comes in as arguments, outcomes go out as values.
///
/// Trees live in a slab: a tree's key is its slot and the slot's generation, so an ack
/// finds its tree in one array access (no hashing or probing: with random keys, the
/// hash table this replaced cost two cache misses per operation and a third of a
/// spout's time). Freed slots are reused last-in first-out (still in cache); a stale
/// key (a tree that already finished, or a spout that restarted: generations start at
/// a seeded value) finds another generation and is ignored. Pending trees are also
/// linked oldest to newest, so timeouts are exact and cost nothing until they happen.
/// Memory is proportional to the trees pending at most.
struct AckLedger {
    enum FailureReason: Equatable, Sendable {
        /// A bolt failed a tuple of the tree.
        case failed
        /// The tree was not complete within the message timeout.
        case timedOut
    }

    enum Outcome: Equatable, Sendable {
        case completed(messageID: TupleValue, latencyNanos: UInt64)
        case failed(messageID: TupleValue, reason: FailureReason)
    }

    private struct Slot {
        var generation: UInt32
        var pending = false
        var value: UInt64 = 0
        var beganNanos: UInt64 = 0
        var messageID: TupleValue = .null
        /// Neighbours in the oldest-to-newest list of pending trees (-1: none); for a
        /// free slot, `newer` is the next free one.
        var older: Int32 = -1
        var newer: Int32 = -1
    }

    /// Slots at most (the key keeps the slot in its low 32 bits).
    static let slotsMax = Int(Int32.max)

    private var slots: [Slot] = []
    private var freeSlot: Int32 = -1
    private var oldest: Int32 = -1
    private var newest: Int32 = -1
    private let timeoutNanos: UInt64
    private var nextGeneration: UInt32
    private(set) var pendingCount = 0

    init(timeoutNanos: UInt64, now: UInt64, generationSeed: UInt32 = 1) {
        self.timeoutNanos = timeoutNanos
        nextGeneration = max(1, generationSeed)
    }

    /// A key for the next tree: emit its tuples with it, then `begin` it.
    mutating func reserve() -> UInt64 {
        let index: Int32
        if freeSlot >= 0 {
            index = freeSlot
            freeSlot = slots[Int(index)].newer
        } else {
            precondition(slots.count < Self.slotsMax, "more than \(Self.slotsMax) pending tuple trees")
            index = Int32(slots.count)
            slots.append(Slot(generation: 0))
        }
        let generation = nextGeneration
        nextGeneration = nextGeneration == UInt32.max ? 1 : nextGeneration + 1
        slots[Int(index)].generation = generation
        slots[Int(index)].newer = -1
        return UInt64(generation) << 32 | UInt64(UInt32(index))
    }

    /// The spout tuple of a reserved key was emitted: `value` is the XOR of the edge ids
    /// sent. With no receivers the value is zero and the tree is complete at once.
    mutating func begin(key: UInt64, value: UInt64, messageID: TupleValue, now: UInt64) -> Outcome? {
        // A key not reserved (a bug): fail the tuple so the spout replays it.
        guard let index = slot(of: key, pending: false) else { return .failed(messageID: messageID, reason: .failed) }
        if value == 0 {
            free(index)
            return .completed(messageID: messageID, latencyNanos: 0)
        }
        slots[index].pending = true
        slots[index].value = value
        slots[index].beganNanos = now
        slots[index].messageID = messageID
        slots[index].older = newest
        slots[index].newer = -1
        if newest >= 0 { slots[Int(newest)].newer = Int32(index) } else { oldest = Int32(index) }
        newest = Int32(index)
        pendingCount += 1
        return nil
    }

    /// A bolt acked a tuple of tree `key`: `value` is the tuple's edge id XOR the edge
    /// ids of the tuples it emitted anchored to it. Unknown keys (trees that already
    /// failed or timed out) are ignored.
    mutating func ack(key: UInt64, value: UInt64, now: UInt64) -> Outcome? {
        guard let index = slot(of: key, pending: true) else { return nil }
        slots[index].value ^= value
        guard slots[index].value == 0 else { return nil }
        let outcome = Outcome.completed(messageID: slots[index].messageID, latencyNanos: now &- slots[index].beganNanos)
        finish(index)
        return outcome
    }

    /// A bolt failed a tuple of tree `key`: the whole tree fails now.
    mutating func fail(key: UInt64) -> Outcome? {
        guard let index = slot(of: key, pending: true) else { return nil }
        let outcome = Outcome.failed(messageID: slots[index].messageID, reason: .failed)
        finish(index)
        return outcome
    }

    /// Fails the trees that began `timeoutNanos` or longer before `now`, oldest first;
    /// call it often (each loop of the spout).
    mutating func expire(now: UInt64) -> [Outcome] {
        var outcomes: [Outcome] = []
        while oldest >= 0, now >= slots[Int(oldest)].beganNanos.addingReportingOverflow(timeoutNanos).partialValue {
            let index = Int(oldest)
            outcomes.append(.failed(messageID: slots[index].messageID, reason: .timedOut))
            finish(index)
        }
        return outcomes
    }

    @inline(__always)
    private func slot(of key: UInt64, pending: Bool) -> Int? {
        let index = Int(truncatingIfNeeded: key & 0xFFFF_FFFF)
        guard index < slots.count, slots[index].generation == UInt32(truncatingIfNeeded: key >> 32), slots[index].pending == pending else { return nil }
        return index
    }

    /// Takes a pending tree out of the time list and frees its slot.
    private mutating func finish(_ index: Int) {
        let older = slots[index].older
        let newer = slots[index].newer
        if older >= 0 { slots[Int(older)].newer = newer } else { oldest = newer }
        if newer >= 0 { slots[Int(newer)].older = older } else { newest = older }
        pendingCount -= 1
        free(index)
    }

    private mutating func free(_ index: Int) {
        slots[index].pending = false
        slots[index].generation = 0
        slots[index].messageID = .null
        slots[index].newer = freeSlot
        freeSlot = Int32(index)
    }
}
