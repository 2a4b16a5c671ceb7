@testable import AqueductTopology
import AqueductTopologyExamples
import Foundation
import Synchronization
import Testing

/// Streamlet programs compiled to topologies and run in local mode.
@Suite(.serialized) struct StreamletTests {
    /// Hands out 0..<limit once, then nothing.
    final class Counter: Sendable {
        let next = Mutex(0)
        let limit: Int
        init(limit: Int) { self.limit = limit }
        func take() -> Int? {
            next.withLock { next in
                guard next < limit else { return nil }
                defer { next += 1 }
                return next
            }
        }
    }

    final class Results<T: Sendable>: Sendable {
        let items = Mutex<[T]>([])
        func add(_ item: T) { items.withLock { $0.append(item) } }
        var all: [T] { items.withLock { $0 } }
    }

    func run(_ builder: StreamletBuilder, until: @escaping () -> Bool, seconds: Double = 10) throws {
        let running = LocalCluster().submit(try builder.build(name: "streamlets"))
        defer { running.kill() }
        _ = running.waitUntil(timeoutSeconds: seconds) { _ in until() }
        #expect(running.errors.isEmpty)
    }

    @Test func mapFilterFlatMapUnionCloneSplit() throws {
        let counter = Counter(limit: 100)
        let evens = Results<String>()
        let odds = Results<Int>()
        let unioned = Results<Int>()
        let builder = StreamletBuilder()
        let numbers = builder.source { counter.take() }
        let copies = numbers.clone(2)
        // Branch 1: x → [x, x] → keep < 10 → ×10 → union with branch 2's small numbers.
        let tens = copies[0].flatMap { [$0, $0] }.filter { $0 < 10 }.map { $0 * 10 }.setNumPartitions(2)
        let small = copies[1].filter { $0 < 3 }
        tens.union(small).consume { unioned.add($0) }
        // Branch 2: split by parity.
        let split = copies[1].split(["even": { $0 % 2 == 0 }, "odd": { $0 % 2 == 1 }])
        split.withStream("even").map { "even \($0)" }.consume { evens.add($0) }
        split.withStream("odd").consume { odds.add($0) }
        try run(builder) { evens.all.count == 50 && odds.all.count == 50 && unioned.all.count == 23 }
        #expect(Set(evens.all) == Set((0..<50).map { "even \($0 * 2)" }))
        #expect(Set(odds.all) == Set((0..<50).map { $0 * 2 + 1 }))
        #expect(unioned.all.sorted() == ((0..<10).flatMap { [$0 * 10, $0 * 10] } + [0, 1, 2]).sorted())
    }

    @Test func keyByAndReduceByKey() throws {
        let counter = Counter(limit: 300)
        let latest = Results<KeyValue<String, Int>>()
        let builder = StreamletBuilder()
        builder.source { counter.take() }
            .keyBy(key: { "k\($0 % 3)" }, value: { $0 })
            .reduceByKey(+).setNumPartitions(3)
            .consume { latest.add($0) }
        try run(builder) { latest.all.count == 300 }
        var final: [String: Int] = [:]
        for pair in latest.all { final[pair.key] = max(final[pair.key] ?? 0, pair.value) }
        #expect(final == ["k0": (0..<300).filter { $0 % 3 == 0 }.reduce(0, +), "k1": (0..<300).filter { $0 % 3 == 1 }.reduce(0, +),
                          "k2": (0..<300).filter { $0 % 3 == 2 }.reduce(0, +)])
    }

    /// Counts per key in sliding time windows: every element is counted in each of the
    /// (length / slide) windows covering it.
    @Test func countByKeyAndSlidingTimeWindow() throws {
        let counter = Counter(limit: 600)
        let windows = Results<KeyValue<KeyedWindow<String>, Int64>>()
        let builder = StreamletBuilder()
        builder.source { counter.take() }
            .countByKeyAndWindow(key: { $0 % 2 == 0 ? "even" : "odd" }, window: .slidingTime(milliseconds: 200, slideMilliseconds: 100))
            .consume { windows.add($0) }
        try run(builder, until: { windows.all.reduce(0) { $0 + $1.value } == 1_200 }, seconds: 15)
        let all = windows.all
        #expect(all.reduce(0) { $0 + $1.value } == 1_200, "600 elements × 2 windows each")
        #expect(all.allSatisfy { $0.key.end - $0.key.start == 200 && $0.key.start % 100 == 0 && $0.value == $0.key.count })
        #expect(all.filter { $0.key.key == "even" }.reduce(0) { $0 + $1.value } == 600)
    }

    @Test func tumblingTimeJoin() throws {
        let left = Counter(limit: 20)
        let right = Counter(limit: 10)
        let joined = Results<String>()
        let builder = StreamletBuilder()
        let orders = builder.source { left.take() }
        let customers = builder.source { right.take() }
        orders.join(customers, key: { $0 % 10 }, otherKey: { $0 }, window: .tumblingTime(milliseconds: 300), type: .inner) { order, customer in
            "order \(order ?? -1) customer \(customer ?? -1)"
        }.consume { joined.add($0.value) }
        try run(builder, until: { joined.all.count >= 20 }, seconds: 15)
        // Each of the 20 orders meets its customer (order % 10) when they fall in the
        // same window; elements arrive within a few ms, so normally all 20 do.
        #expect(joined.all.count <= 20)
        #expect(joined.all.allSatisfy { line in
            let parts = line.split(separator: " ")
            return Int(parts[1])! % 10 == Int(parts[3])!
        })
    }

    struct Reading: Codable, StreamletElement, Equatable {
        var sensor: String
        var celsius: Double
    }

    struct CollectingSink: StreamletSink {
        let into: Results<Reading>
        mutating func put(_ element: Reading) { into.add(element) }
    }

    @Test func codableElementsAndSinks() throws {
        let counter = Counter(limit: 10)
        let sunk = Results<Reading>()
        let builder = StreamletBuilder()
        builder.source { counter.take() }
            .map { Reading(sensor: "s\($0)", celsius: Double($0) / 2) }
            .toSink(CollectingSink(into: sunk)).setName("readings-sink")
        try run(builder) { sunk.all.count == 10 }
        #expect(Set(sunk.all.map(\.sensor)) == Set((0..<10).map { "s\($0)" }))
    }

    @Test func mistakesAreReportedAtBuild() {
        let builder = StreamletBuilder()
        let source = builder.source { Optional<Int>.none }
        _ = source.countByKeyAndWindow(key: { $0 }, window: .slidingCount(size: 1, slide: 5))
        _ = source.split(["a": { _ in true }]).withStream("b")
        source.map { $0 }.setName("same").consume { _ in }.setName("same")
        do {
            _ = try builder.build(name: "bad")
            Issue.record("expected an error")
        } catch {
            #expect(error.problems.contains { $0.contains("sliding count window needs 1 <= slide <= size") })
            #expect(error.problems.contains { $0.contains("split has no stream \"b\" (streams: a)") })
        }
    }
}

/// The example Streamlet program with a sliding time window, with short windows.
@Suite struct WindowedExampleTests {
    final class Output: Sendable {
        let results = Mutex<[KeyValue<KeyedWindow<String>, Int64>]>([])
    }

    @Test func windowedWordCountsCountEveryWordInEachWindowCoveringIt() throws {
        let output = Output()
        let words = 2_000
        let topology = try WindowedWordCounts.build(windowMilliseconds: 300, slideMilliseconds: 100, wordLimit: words) { result in
            output.results.withLock { $0.append(result) }
        }
        let running = LocalCluster().submit(topology)
        defer { running.kill() }
        // Each word is in 3 windows (300 ms long, one every 100 ms).
        _ = running.waitUntil(timeoutSeconds: 15) { _ in output.results.withLock { $0.reduce(0) { $0 + $1.value } } >= Int64(3 * words) }
        let results = output.results.withLock { $0 }
        #expect(results.reduce(0) { $0 + $1.value } == Int64(3 * words))
        #expect(results.allSatisfy { $0.key.end - $0.key.start == 300 })
        #expect(Set(results.map(\.key.key)).count == 27, "every distinct word of the sentences")
    }
}
