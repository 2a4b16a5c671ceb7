@testable import AqueductTopology
import AqueductTopologyExamples
import Foundation
import Synchronization
import Testing

/// Whole topologies in local mode: real threads, queues and acking.
@Suite(.serialized) struct LocalClusterTests {
    @Test func exclamationTopology() throws {
        let sink = Collected()
        let topology = try ExclamationTopology.build(wordLimit: 1_000, sink: CollectingSink(into: sink))
        let running = LocalCluster().submit(topology)
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 20) { $0.component("word")?.acked == 1_000 })
        let words = sink.all.compactMap { $0.string("word") }
        #expect(words.count == 1_000)
        #expect(Set(words) == Set(ExclamationTopology.WordSpout.words.map { $0 + "!!!!!!" }))
        let metrics = running.metrics()
        #expect(metrics.component("exclaim1")?.executed == 1_000)
        #expect(metrics.component("exclaim2")?.emitted == 1_000)
        #expect(metrics.component("word")?.failed == 0)
        #expect((metrics.component("word")?.completeLatencyP99Micros ?? 0) > 0)
    }

    /// Every sentence is counted, and the final counts are exact when nothing fails.
    @Test func wordCountCountsEveryWord() throws {
        let latest = Latest()
        let sentences = 2_000
        let topology = try WordCountTopology.build(sentenceLimit: sentences, sink: LatestCount(latest: latest))
        let running = LocalCluster().submit(topology)
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 30) { $0.component("sentences")?.acked == sentences })
        var expected: [String: Int64] = [:]
        for index in 0..<sentences {
            for word in WordCountTopology.sentences[index % WordCountTopology.sentences.count].split(separator: " ") {
                expected[String(word), default: 0] += 1
            }
        }
        #expect(latest.counts.withLock { $0 } == expected)
        // Fields grouping: each word was counted by exactly one of the 4 count tasks.
        #expect(running.metrics().tasks.filter { $0.component == "count" && $0.executed > 0 }.count > 1)
    }

    /// A bolt fails each tuple the first time it sees it: the spout replays, and every
    /// tuple is eventually acked (at-least-once).
    @Test func failedTreesAreReplayed() throws {
        struct FailFirst: Bolt {
            var seen: Set<Int64> = []
            var collector: BoltCollector?
            func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["n"]) }
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
            mutating func execute(_ tuple: Tuple) {
                let n = tuple.int("n")!
                if seen.insert(n).inserted {
                    collector?.fail(tuple)
                } else {
                    collector?.emit([tuple["n"]], anchor: tuple)
                    collector?.ack(tuple)
                }
            }
        }
        let log = SpoutLog()
        let sink = Collected()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 500, log: log, replayFailed: true))
        builder.setBolt("flaky", FailFirst(), parallelism: 2).fieldsGrouping("numbers", ["n"])
        builder.setBolt("sink", CollectingSink(into: sink)).shuffleGrouping("flaky")
        let running = LocalCluster().submit(try builder.build(name: "replay"))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 20) { $0.component("numbers")?.acked == 500 })
        #expect(Set(log.acked) == Set((0..<500).map { TupleValue.int(Int64($0)) }))
        #expect(log.failed.count == 500)
        #expect(Set(sink.all.map { $0["n"] }).count == 500)
    }

    /// A bolt that never acks: the spout's trees time out and `fail` is called.
    @Test func unackedTreesTimeOut() throws {
        struct BlackHole: Bolt { mutating func execute(_ tuple: Tuple) {} }
        let log = SpoutLog()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 20, log: log))
        builder.setBolt("hole", BlackHole()).shuffleGrouping("numbers")
        var config = TopologyConfig()
        config.messageTimeoutMilliseconds = 200
        let running = LocalCluster().submit(try builder.build(name: "timeouts", config: config))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 10) { $0.component("numbers")?.timedOut == 20 })
        #expect(log.failed.count == 20)
        #expect(log.acked.isEmpty)
    }

    /// Acking off: spout tuples are acked when emitted, nothing is tracked.
    @Test func atMostOnceAcksAtEmit() throws {
        struct BlackHole: Bolt { mutating func execute(_ tuple: Tuple) {} }
        let log = SpoutLog()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 100, log: log))
        builder.setBolt("hole", BlackHole()).shuffleGrouping("numbers")
        var config = TopologyConfig()
        config.reliability = .atMostOnce
        let running = LocalCluster().submit(try builder.build(name: "at-most-once", config: config))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 10) { $0.component("hole")?.executed == 100 })
        #expect(log.acked.count == 100)
    }

    /// maxSpoutPending holds the spout at that many open trees.
    @Test func maxSpoutPendingLimitsOpenTrees() throws {
        final class Gate: Sendable { let open = Mutex(false) }
        struct Held: Bolt {
            let gate: Gate
            var held: [Tuple] = []
            var collector: BoltCollector?
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
            mutating func execute(_ tuple: Tuple) {
                held.append(tuple)
                if gate.open.withLock({ $0 }) {
                    for tuple in held { collector?.ack(tuple) }
                    held.removeAll()
                }
            }
        }
        let gate = Gate()
        let log = SpoutLog()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 100, log: log))
        builder.setBolt("held", Held(gate: gate)).shuffleGrouping("numbers").tickFrequency(seconds: 0.05)
        var config = TopologyConfig()
        config.maxSpoutPending = 10
        let running = LocalCluster().submit(try builder.build(name: "pending", config: config))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 10) { $0.component("numbers")?.emitted == 10 })
        Thread.sleep(forTimeInterval: 0.2)
        #expect(running.metrics().component("numbers")?.emitted == 10)
        gate.open.withLock { $0 = true }
        #expect(running.waitUntil(timeoutSeconds: 10) { $0.component("numbers")?.acked == 100 })
    }

    /// Tick tuples arrive at the configured frequency.
    @Test func tickTuples() throws {
        final class Ticks: Sendable { let count = Mutex(0) }
        struct TickCounter: Bolt {
            let ticks: Ticks
            mutating func execute(_ tuple: Tuple) { if tuple.isTick { ticks.count.withLock { $0 += 1 } } }
        }
        let ticks = Ticks()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 0, log: SpoutLog()))
        builder.setBolt("ticks", TickCounter(ticks: ticks)).shuffleGrouping("numbers").tickFrequency(seconds: 0.05)
        let began = Date()
        let running = LocalCluster().submit(try builder.build(name: "ticks"))
        #expect(running.waitUntil(timeoutSeconds: 60) { _ in ticks.count.withLock { $0 } >= 5 })
        running.kill()
        // Never more often than configured (a tick every 50 ms), however long that took.
        let count = ticks.count.withLock { $0 }
        let allowed = Int(Date().timeIntervalSince(began) / 0.05) + 2
        #expect(count >= 5 && count <= allowed, "\(count) ticks in \(Date().timeIntervalSince(began)) s at one per 50 ms")
    }

    /// A slow bolt: its queue crosses the high watermark, spouts stop, the queue never
    /// exceeds its capacity, and the time in backpressure is counted.
    @Test func backpressureBoundsQueues() throws {
        var config = TopologyConfig()
        config.queueHighWatermarkTuples = 1_000
        config.queueLowWatermarkTuples = 500
        config.queueCapacityTuples = 2_000
        config.emitBatchTuples = 100
        let builder = TopologyBuilder()
        builder.setSpout("endless", EndlessSpout())
        builder.setBolt("slow", SlowBolt()).shuffleGrouping("endless")
        let running = LocalCluster().submit(try builder.build(name: "backpressure", config: config))
        defer { running.kill() }
        var deepest = 0
        // Until backpressure held the spout a while (a generous deadline: a slow machine
        // takes longer to get there, never a different answer).
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            deepest = max(deepest, running.metrics().component("slow")?.queueDepth ?? 0)
            let metrics = running.metrics()
            if metrics.backpressureEpisodes >= 1 && metrics.backpressureMillis > 100 && deepest >= 900 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        let metrics = running.metrics()
        #expect(deepest <= 2_000 + 100, "queue depth \(deepest) beyond capacity + one batch")
        #expect(deepest >= 900)
        #expect(metrics.backpressureEpisodes >= 1)
        #expect(metrics.backpressureMillis > 100)
        #expect((metrics.component("slow")?.backpressureMillis ?? 0) > 100)
        let emitted = metrics.component("endless")?.emitted ?? 0
        let executed = metrics.component("slow")?.executed ?? 0
        #expect(emitted - executed <= 2_100, "spout ran ahead by \(emitted - executed)")
    }

    @Test func failingPrepareStopsTheTopologyWithItsError() throws {
        struct Broken: Bolt {
            struct Refused: Error {}
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { throw Refused() }
            mutating func execute(_ tuple: Tuple) {}
        }
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 10, log: SpoutLog()))
        builder.setBolt("broken", Broken()).shuffleGrouping("numbers")
        let running = LocalCluster().submit(try builder.build(name: "broken"))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 5) { _ in !running.isRunning })
        #expect(running.errors.first?.contains("bolt broken task 1: prepare failed") == true)
    }

    @Test func emitDirectReachesTheNamedTaskOnly() throws {
        struct Director: Spout {
            var sent = false
            var collector: SpoutCollector?
            var targets: [Int] = []
            func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["n"], direct: true) }
            mutating func open(context: TopologyContext, collector: SpoutCollector) throws {
                self.collector = collector
                targets = context.tasks(of: "sink")
            }
            mutating func nextTuple() {
                guard !sent else { return }
                sent = true
                for n in 0..<30 { collector?.emitDirect(task: targets[2], [.int(Int64(n))]) }
                collector?.emitDirect(task: 0, [.int(99)])  // itself: not a subscriber, dropped
            }
        }
        let sink = Collected()
        let builder = TopologyBuilder()
        builder.setSpout("director", Director())
        builder.setBolt("sink", CollectingSink(into: sink), parallelism: 3).directGrouping("director")
        let running = LocalCluster().submit(try builder.build(name: "direct"))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 5) { $0.component("sink")?.executed == 30 })
        let metrics = running.metrics()
        #expect(metrics.tasks.filter { $0.component == "sink" }.map(\.executed) == [0, 0, 30])
        #expect(metrics.component("director")?.droppedEmits == 1)
    }
}
