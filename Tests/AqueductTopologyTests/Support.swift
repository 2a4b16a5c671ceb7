@testable import AqueductTopology
import Foundation
import Synchronization

/// Tuples that reached a sink, shared by the sink's tasks and the test.
final class Collected: Sendable {
    private let tuples = Mutex<[Tuple]>([])
    func add(_ tuple: Tuple) { tuples.withLock { $0.append(tuple) } }
    var all: [Tuple] { tuples.withLock { $0 } }
    var count: Int { tuples.withLock { $0.count } }
}

/// Records and acks every input.
struct CollectingSink: Bolt {
    let into: Collected
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        into.add(tuple)
        collector?.ack(tuple)
    }
}

/// The highest count seen per word (WordCount's count stream), shared with the test.
final class Latest: Sendable {
    let counts = Mutex<[String: Int64]>([:])
}

/// Records each word's latest count and acks.
struct LatestCount: Bolt {
    let latest: Latest
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        latest.counts.withLock { $0[tuple.string("word")!] = max($0[tuple.string("word")!] ?? 0, tuple.int("count")!) }
        collector?.ack(tuple)
    }
}

/// A clock a test moves by hand.
final class ManualClock: TopologyClock {
    private let now = Mutex<UInt64>(1_000_000_000)
    func nanoseconds() -> UInt64 { now.withLock { $0 } }
    func advance(milliseconds: UInt64) { now.withLock { $0 += milliseconds * 1_000_000 } }
}

/// What a spout saw come back, shared with the test.
final class SpoutLog: Sendable {
    private let state = Mutex<(acked: [TupleValue], failed: [TupleValue])>(([], []))
    func ack(_ id: TupleValue) { state.withLock { $0.acked.append(id) } }
    func fail(_ id: TupleValue) { state.withLock { $0.failed.append(id) } }
    var acked: [TupleValue] { state.withLock { $0.acked } }
    var failed: [TupleValue] { state.withLock { $0.failed } }
}

/// Emits ints 0..<limit with message ids; logs acks and fails; replays fails when asked.
struct CountingSpout: Spout {
    let limit: Int
    let log: SpoutLog
    var replayFailed = false
    var next = 0
    var replay: [TupleValue] = []
    var collector: SpoutCollector?

    func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["n"]) }
    mutating func open(context: TopologyContext, collector: SpoutCollector) throws { self.collector = collector }
    mutating func nextTuple() {
        if let again = replay.popLast() {
            collector?.emit([again], messageID: again)
            return
        }
        guard next < limit else { return }
        collector?.emit([.int(Int64(next))], messageID: .int(Int64(next)))
        next += 1
    }
    mutating func ack(_ messageID: TupleValue) { log.ack(messageID) }
    mutating func fail(_ messageID: TupleValue) {
        log.fail(messageID)
        if replayFailed { replay.append(messageID) }
    }
}

/// Emits increasing ints as fast as it is asked, untracked (backpressure tests).
struct EndlessSpout: Spout {
    var next: Int64 = 0
    var collector: SpoutCollector?
    func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["n"]) }
    mutating func open(context: TopologyContext, collector: SpoutCollector) throws { self.collector = collector }
    mutating func nextTuple() {
        collector?.emit([.int(next)])
        next += 1
    }
}

/// Takes 50 µs per tuple: slower than any spout.
struct SlowBolt: Bolt {
    mutating func execute(_ tuple: Tuple) { Thread.sleep(forTimeInterval: 0.000_05) }
}
