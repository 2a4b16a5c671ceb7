/// The tuple trees of one spout task, tracked as Storm's acker does: each tree is a
/// 64-bit value that every emitted edge id is XORed into once when the tuple is sent and
/// once when it is acked, so the value is zero exactly when every tuple of the tree was
/// acked (a false zero has probability 2^-64). Heron keeps this state beside the spout
/// instead of in acker tasks; so does Aqueduct: the ledger lives on the spout's thread.
///
/// Pure: time comes in as arguments, outcomes go out as values.
///
/// Timeouts use Storm's rotating buckets: a new tree enters the newest bucket, and every
/// `timeout / (bucketCount - 1)` the oldest bucket expires, so a tree fails between
/// `timeout` and `timeout * bucketCount / (bucketCount - 1)` after it began. Memory stays
/// proportional to the trees pending, not to the rate.
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

    private struct Tree {
        var value: UInt64
        var messageID: TupleValue
        var beganNanos: UInt64
    }

    static let bucketCount = 3

    private var buckets: [UInt64Table<Tree>]
    private let rotationNanos: UInt64
    private var nextRotationNanos: UInt64
    private(set) var pendingCount = 0

    init(timeoutNanos: UInt64, now: UInt64) {
        buckets = Array(repeating: UInt64Table(), count: Self.bucketCount)
        rotationNanos = max(1, timeoutNanos / UInt64(Self.bucketCount - 1))
        nextRotationNanos = now + rotationNanos
    }

    /// A spout tuple was emitted: `value` is the XOR of the edge ids sent. With no
    /// receivers the value is zero and the tree is complete at once.
    mutating func begin(key: UInt64, value: UInt64, messageID: TupleValue, now: UInt64) -> Outcome? {
        if value == 0 { return .completed(messageID: messageID, latencyNanos: 0) }
        buckets[0][key] = Tree(value: value, messageID: messageID, beganNanos: now)
        pendingCount += 1
        return nil
    }

    /// A bolt acked a tuple of tree `key`: `value` is the tuple's edge id XOR the edge
    /// ids of the tuples it emitted anchored to it. Unknown keys (trees that already
    /// failed or timed out) are ignored.
    mutating func ack(key: UInt64, value: UInt64, now: UInt64) -> Outcome? {
        for index in buckets.indices {
            guard var tree = buckets[index][key] else { continue }
            tree.value ^= value
            if tree.value == 0 {
                buckets[index][key] = nil
                pendingCount -= 1
                return .completed(messageID: tree.messageID, latencyNanos: now &- tree.beganNanos)
            }
            buckets[index][key] = tree
            return nil
        }
        return nil
    }

    /// A bolt failed a tuple of tree `key`: the whole tree fails now.
    mutating func fail(key: UInt64) -> Outcome? {
        for index in buckets.indices {
            if let tree = buckets[index].removeValue(forKey: key) {
                pendingCount -= 1
                return .failed(messageID: tree.messageID, reason: .failed)
            }
        }
        return nil
    }

    /// Fails the trees whose time is up; call it often (each loop of the spout).
    mutating func expire(now: UInt64) -> [Outcome] {
        var outcomes: [Outcome] = []
        var rotations = 0
        while now >= nextRotationNanos {
            // After a long pause (a suspended process, a test's clock) every bucket has
            // expired once: start counting again from now instead of spinning.
            if rotations == Self.bucketCount {
                nextRotationNanos = now + rotationNanos
                break
            }
            let expired = buckets.removeLast()
            buckets.insert(UInt64Table(), at: 0)
            pendingCount -= expired.count
            for tree in expired.allValues.sorted(by: { $0.beganNanos < $1.beganNanos }) {
                outcomes.append(.failed(messageID: tree.messageID, reason: .timedOut))
            }
            nextRotationNanos += rotationNanos
            rotations += 1
        }
        return outcomes
    }
}
