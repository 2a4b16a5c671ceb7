@testable import AqueductTopology
import Testing

/// XOR tuple-tree tracking as scripts of events.
@Suite struct AckLedgerTests {
    let second: UInt64 = 1_000_000_000

    @Test func treeCompletesWhenEveryEdgeIsAcked() {
        // spout → A (edge e1); A emits to B (e2) and C (e3) anchored, acks its input.
        var ledger = AckLedger(timeoutNanos: 30 * second, now: 0)
        let (e1, e2, e3): (UInt64, UInt64, UInt64) = (0x1111, 0x2222_0000, 0x4444_0000_0000)
        #expect(ledger.begin(key: 9, value: e1, messageID: "m", now: 100) == nil)
        #expect(ledger.ack(key: 9, value: e1 ^ e2 ^ e3, now: 200) == nil)  // A
        #expect(ledger.ack(key: 9, value: e3, now: 300) == nil)  // C
        #expect(ledger.pendingCount == 1)
        #expect(ledger.ack(key: 9, value: e2, now: 400) == .completed(messageID: "m", latencyNanos: 300))  // B
        #expect(ledger.pendingCount == 0)
        #expect(ledger.ack(key: 9, value: e2, now: 500) == nil, "late acks of a finished tree are ignored")
    }

    @Test func acksInAnyOrderComplete() {
        var random = TopologyRandom(seed: 42)
        for _ in 0..<200 {
            var ledger = AckLedger(timeoutNanos: 30 * second, now: 0)
            // A tree of 1 root edge and 6 children of it, acked in random order.
            let root = random.nonzero()
            let children = (0..<6).map { _ in random.nonzero() }
            var acks = [root ^ children.reduce(0, ^)] + children
            acks.shuffle(using: &random)
            _ = ledger.begin(key: 1, value: root, messageID: 1, now: 0)
            var outcome: AckLedger.Outcome?
            for (index, ack) in acks.enumerated() {
                outcome = ledger.ack(key: 1, value: ack, now: 10)
                if index < acks.count - 1 { #expect(outcome == nil) }
            }
            #expect(outcome == .completed(messageID: 1, latencyNanos: 10))
        }
    }

    @Test func noReceiversCompletesAtOnce() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        #expect(ledger.begin(key: 1, value: 0, messageID: "x", now: 5) == .completed(messageID: "x", latencyNanos: 0))
        #expect(ledger.pendingCount == 0)
    }

    @Test func failFailsTheWholeTreeOnce() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        _ = ledger.begin(key: 1, value: 0xAB, messageID: "x", now: 0)
        #expect(ledger.fail(key: 1) == .failed(messageID: "x", reason: .failed))
        #expect(ledger.fail(key: 1) == nil)
        #expect(ledger.ack(key: 1, value: 0xAB, now: 1) == nil)
        #expect(ledger.pendingCount == 0)
    }

    @Test func timeoutFailsAfterOneToOneAndAHalfTimeouts() {
        // 3 buckets: rotation every timeout / 2.
        var ledger = AckLedger(timeoutNanos: 10 * second, now: 0)
        _ = ledger.begin(key: 1, value: 1, messageID: "early", now: 0)
        _ = ledger.begin(key: 2, value: 1, messageID: "late", now: 4 * second)
        #expect(ledger.expire(now: 9 * second).isEmpty)
        _ = ledger.begin(key: 3, value: 1, messageID: "later", now: 9 * second)
        #expect(ledger.expire(now: 10 * second).isEmpty, "no tree is failed before its timeout")
        #expect(ledger.expire(now: 14 * second).isEmpty)
        // Both began before the rotation at 5 s: failed at 15 s (1.5 and 1.1 timeouts).
        #expect(ledger.expire(now: 15 * second) == [.failed(messageID: "early", reason: .timedOut), .failed(messageID: "late", reason: .timedOut)])
        #expect(ledger.pendingCount == 1)
        #expect(ledger.expire(now: 19 * second).isEmpty)
        #expect(ledger.expire(now: 20 * second) == [.failed(messageID: "later", reason: .timedOut)])
        #expect(ledger.pendingCount == 0)
    }

    @Test func longPauseExpiresEverythingWithoutSpinning() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        for key in 1...10 { _ = ledger.begin(key: UInt64(key), value: 1, messageID: .int(Int64(key)), now: UInt64(key)) }
        let outcomes = ledger.expire(now: 1_000_000 * second)
        #expect(outcomes.count == 10)
        #expect(ledger.pendingCount == 0)
        _ = ledger.begin(key: 11, value: 1, messageID: 11, now: 1_000_000 * second)
        #expect(ledger.expire(now: 1_000_000 * second + second / 4).isEmpty)
    }
}

/// The ack paths' hash table against `Dictionary`, under seeded random operations.
@Suite struct UInt64TableTests {
    @Test func matchesDictionaryUnderRandomOperations() {
        for seed in 1...20 {
            var random = TopologyRandom(seed: UInt64(seed))
            var table = UInt64Table<Int>()
            var reference: [UInt64: Int] = [:]
            // Small key space: many collisions, reinserts and deletions inside runs.
            let keys = (0..<64).map { _ in random.nonzero() % (seed % 2 == 0 ? 1_000 : UInt64.max) + 1 }
            for step in 0..<5_000 {
                let key = keys[Int(random.next() % UInt64(keys.count))]
                switch random.next() % 3 {
                case 0, 1:
                    table[key] = step
                    reference[key] = step
                default:
                    #expect(table.removeValue(forKey: key) == reference.removeValue(forKey: key))
                }
                #expect(table.count == reference.count)
            }
            for key in keys { #expect(table[key] == reference[key], "seed \(seed)") }
            #expect(table.allValues.sorted() == reference.values.sorted())
        }
    }
}
