@testable import AqueductTopology
import Testing

/// XOR tuple-tree tracking as scripts of events.
@Suite struct AckLedgerTests {
    let second: UInt64 = 1_000_000_000

    @Test func treeCompletesWhenEveryEdgeIsAcked() {
        // spout → A (edge e1); A emits to B (e2) and C (e3) anchored, acks its input.
        var ledger = AckLedger(timeoutNanos: 30 * second, now: 0)
        let (e1, e2, e3): (UInt64, UInt64, UInt64) = (0x1111, 0x2222_0000, 0x4444_0000_0000)
        let key = ledger.reserve()
        #expect(ledger.begin(key: key, value: e1, messageID: "m", now: 100) == nil)
        #expect(ledger.ack(key: key, value: e1 ^ e2 ^ e3, now: 200) == nil)  // A
        #expect(ledger.ack(key: key, value: e3, now: 300) == nil)  // C
        #expect(ledger.pendingCount == 1)
        #expect(ledger.ack(key: key, value: e2, now: 400) == .completed(messageID: "m", latencyNanos: 300))  // B
        #expect(ledger.pendingCount == 0)
        #expect(ledger.ack(key: key, value: e2, now: 500) == nil, "late acks of a finished tree are ignored")
        // The slot is reused by the next tree, under another generation: the old key
        // does not reach it.
        let next = ledger.reserve()
        #expect(next != key && next & 0xFFFF_FFFF == key & 0xFFFF_FFFF)
        _ = ledger.begin(key: next, value: 7, messageID: "n", now: 600)
        #expect(ledger.ack(key: key, value: 7, now: 700) == nil)
        #expect(ledger.ack(key: next, value: 7, now: 700) == .completed(messageID: "n", latencyNanos: 100))
    }

    @Test func acksInAnyOrderComplete() {
        var random = TopologyRandom(seed: 42)
        var ledger = AckLedger(timeoutNanos: 30 * second, now: 0)
        // Many trees open at once (each: 1 root edge and 6 children of it), acked
        // interleaved in random order.
        var acks: [(key: UInt64, value: UInt64, tree: Int)] = []
        for tree in 0..<200 {
            let key = ledger.reserve()
            let root = random.nonzero()
            let children = (0..<6).map { _ in random.nonzero() }
            #expect(ledger.begin(key: key, value: root, messageID: .int(Int64(tree)), now: 0) == nil)
            acks += ([root ^ children.reduce(0, ^)] + children).map { (key, $0, tree) }
        }
        acks.shuffle(using: &random)
        var remaining = Dictionary(grouping: acks, by: \.tree).mapValues(\.count)
        var completed: Set<Int> = []
        for ack in acks {
            let outcome = ledger.ack(key: ack.key, value: ack.value, now: 10)
            remaining[ack.tree]! -= 1
            if remaining[ack.tree] == 0 {
                #expect(outcome == .completed(messageID: .int(Int64(ack.tree)), latencyNanos: 10))
                completed.insert(ack.tree)
            } else {
                #expect(outcome == nil)
            }
        }
        #expect(completed.count == 200)
        #expect(ledger.pendingCount == 0)
    }

    @Test func noReceiversCompletesAtOnce() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        #expect(ledger.begin(key: ledger.reserve(), value: 0, messageID: "x", now: 5) == .completed(messageID: "x", latencyNanos: 0))
        #expect(ledger.pendingCount == 0)
    }

    @Test func unreservedKeysFailAndStaleKeysAreIgnored() {
        var ledger = AckLedger(timeoutNanos: second, now: 0, generationSeed: 77)
        #expect(ledger.begin(key: 12345, value: 1, messageID: "x", now: 0) == .failed(messageID: "x", reason: .failed))
        let key = ledger.reserve()
        _ = ledger.begin(key: key, value: 5, messageID: "y", now: 0)
        // Another run of the spout (another generation seed) used the same slot.
        var earlier = AckLedger(timeoutNanos: second, now: 0, generationSeed: 3)
        let stale = earlier.reserve()
        #expect(stale & 0xFFFF_FFFF == key & 0xFFFF_FFFF)
        #expect(ledger.ack(key: stale, value: 5, now: 1) == nil)
        #expect(ledger.fail(key: stale) == nil)
        #expect(ledger.pendingCount == 1)
    }

    @Test func failFailsTheWholeTreeOnce() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        let key = ledger.reserve()
        _ = ledger.begin(key: key, value: 0xAB, messageID: "x", now: 0)
        #expect(ledger.fail(key: key) == .failed(messageID: "x", reason: .failed))
        #expect(ledger.fail(key: key) == nil)
        #expect(ledger.ack(key: key, value: 0xAB, now: 1) == nil)
        #expect(ledger.pendingCount == 0)
    }

    @Test func timeoutFailsExactlyAfterTheTimeout() {
        var ledger = AckLedger(timeoutNanos: 10 * second, now: 0)
        let early = ledger.reserve()
        _ = ledger.begin(key: early, value: 1, messageID: "early", now: 0)
        let middle = ledger.reserve()
        _ = ledger.begin(key: middle, value: 1, messageID: "middle", now: 2 * second)
        let late = ledger.reserve()
        _ = ledger.begin(key: late, value: 1, messageID: "late", now: 4 * second)
        #expect(ledger.expire(now: 10 * second - 1).isEmpty, "no tree is failed before its timeout")
        #expect(ledger.expire(now: 10 * second) == [.failed(messageID: "early", reason: .timedOut)])
        // A tree finished out of order leaves the time list.
        #expect(ledger.ack(key: middle, value: 1, now: 11 * second) == .completed(messageID: "middle", latencyNanos: 9 * second))
        #expect(ledger.expire(now: 13 * second).isEmpty)
        #expect(ledger.expire(now: 14 * second) == [.failed(messageID: "late", reason: .timedOut)])
        #expect(ledger.pendingCount == 0)
        #expect(ledger.ack(key: late, value: 1, now: 15 * second) == nil, "a timed-out tree's late ack is ignored")
    }

    @Test func longPauseExpiresEverythingOldestFirst() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        for key in 1...10 { _ = ledger.begin(key: ledger.reserve(), value: 1, messageID: .int(Int64(key)), now: UInt64(key)) }
        let outcomes = ledger.expire(now: 1_000_000 * second)
        #expect(outcomes == (1...10).map { .failed(messageID: .int(Int64($0)), reason: .timedOut) })
        #expect(ledger.pendingCount == 0)
        _ = ledger.begin(key: ledger.reserve(), value: 1, messageID: 11, now: 1_000_000 * second)
        #expect(ledger.expire(now: 1_000_000 * second + second / 4).isEmpty)
    }

    /// Memory follows the trees pending, not the trees ever begun.
    @Test func slotsAreReused() {
        var ledger = AckLedger(timeoutNanos: second, now: 0)
        var random = TopologyRandom(seed: 5)
        var open: [(UInt64, UInt64)] = []
        for step in 0..<100_000 {
            let key = ledger.reserve()
            let value = random.nonzero()
            _ = ledger.begin(key: key, value: value, messageID: .int(Int64(step)), now: UInt64(step))
            open.append((key, value))
            if open.count > 100 {
                let (doneKey, doneValue) = open.remove(at: Int(random.next() % UInt64(open.count)))
                #expect(ledger.ack(key: doneKey, value: doneValue, now: UInt64(step)) != nil)
            }
            #expect(key & 0xFFFF_FFFF < 128)
        }
        #expect(ledger.pendingCount == open.count)
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
