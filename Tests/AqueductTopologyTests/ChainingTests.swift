@testable import AqueductTopology
import Foundation
import Synchronization
import Testing

/// `TopologyConfig.chaining`: which bolts run on their upstream task's thread, and that
/// chained topologies keep every guarantee of threaded ones.
@Suite(.serialized) struct ChainingTests {
    struct Pass: Bolt {
        var fields = ["n"]
        var collector: BoltCollector?
        func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(fields) }
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
        mutating func execute(_ tuple: Tuple) {
            collector?.emit(tuple.values, anchor: tuple)
            collector?.ack(tuple)
        }
    }

    func chainedBuilder() -> TopologyBuilder {
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 10, log: SpoutLog()), parallelism: 2)  // tasks 0, 1
        builder.setBolt("local", Pass(), parallelism: 2).localOrShuffleGrouping("numbers")  // 2, 3: chained on 0, 1
        builder.setBolt("keyed", Pass(), parallelism: 2).fieldsGrouping("local", ["n"])  // 4, 5: a repartition
        builder.setBolt("none", Pass(), parallelism: 2).noneGrouping("keyed")  // 6, 7: chained on 4, 5
        builder.setBolt("wider", Pass(), parallelism: 3).localOrShuffleGrouping("none")  // 8-10: other parallelism
        builder.setBolt("ticking", Pass(), parallelism: 3).localOrShuffleGrouping("wider").tickFrequency(seconds: 1)  // 11-13: ticks
        builder.setBolt("two-inputs", Pass(), parallelism: 2).localOrShuffleGrouping("none").localOrShuffleGrouping("local")  // 14, 15
        builder.setBolt("shuffled", Pass(), parallelism: 2).shuffleGrouping("none")  // 16, 17: shuffle spreads over containers
        return builder
    }

    @Test func planChainsOnlyForwardableBolts() throws {
        var config = TopologyConfig()
        config.chaining = true
        config.containers = 2
        let plan = PhysicalPlan(topology: try chainedBuilder().build(name: "chains", config: config))
        let chainedTo = plan.tasks.map(\.chainedTo)
        #expect(chainedTo == [nil, nil, 0, 1, nil, nil, 4, 5, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil])
        for task in plan.tasks {
            if let host = task.chainedTo { #expect(task.container == plan.tasks[host].container, "task \(task.id) runs beside its host") }
        }
        #expect(plan.threadTasks(in: nil).count == 14)
        // Threads alternate over the two containers.
        #expect(Set(plan.threadTasks(in: 0)).isDisjoint(with: plan.threadTasks(in: 1)))
        #expect(abs(plan.threadTasks(in: 0).count - plan.threadTasks(in: 1).count) <= 1)

        config.chaining = false
        let threaded = PhysicalPlan(topology: try chainedBuilder().build(name: "threads", config: config))
        #expect(threaded.tasks.allSatisfy { $0.chainedTo == nil && $0.container == $0.id % 2 })
    }

    @Test func chainedRouterForwardsToTheSameIndex() throws {
        var config = TopologyConfig()
        config.chaining = true
        let topology = try chainedBuilder().build(name: "forward", config: config)
        let plan = PhysicalPlan(topology: topology)
        for source in [0, 1] {
            var router = OutputRouter(component: "numbers", sourceTask: source, topology: topology, plan: plan, random: TopologyRandom(seed: 7))
            var found: Set<Int> = []
            for n in 0..<50 {
                var targets: [Int] = []
                router.targets(stream: Streams.default, values: [.int(Int64(n))], sourceTask: source, into: &targets)
                found.formUnion(targets)
            }
            #expect(found == [source + 2])
        }
    }

    /// spout → (chained) fail-first bolt → (chained) sink, acking on: failures replay,
    /// every tree completes, metrics count the chained tasks.
    @Test func chainedBoltsAckFailAndReplay() throws {
        struct FailFirst: Bolt {
            var seen: Set<Int64> = []
            var collector: BoltCollector?
            func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["n"]) }
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
            mutating func execute(_ tuple: Tuple) {
                if seen.insert(tuple.int("n")!).inserted {
                    collector?.fail(tuple)
                } else {
                    collector?.emit(tuple.values, anchor: tuple)
                    collector?.ack(tuple)
                }
            }
        }
        let log = SpoutLog()
        let sink = Collected()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 500, log: log, replayFailed: true))
        builder.setBolt("flaky", FailFirst()).localOrShuffleGrouping("numbers")
        builder.setBolt("sink", CollectingSink(into: sink)).localOrShuffleGrouping("flaky")
        var config = TopologyConfig()
        config.chaining = true
        let running = LocalCluster().submit(try builder.build(name: "chained-replay", config: config))
        defer { running.kill() }
        #expect(running.plan.tasks.map(\.chainedTo) == [nil, 0, 1])
        #expect(running.waitUntil(timeoutSeconds: 20) { $0.component("numbers")?.acked == 500 })
        #expect(Set(log.acked) == Set((0..<500).map { TupleValue.int(Int64($0)) }))
        #expect(log.failed.count == 500)
        #expect(Set(sink.all.map { $0["n"] }).count == 500)
        #expect(running.waitUntil(timeoutSeconds: 5) { $0.component("flaky")?.executed == 1_000 && $0.component("sink")?.executed == 500 })
        #expect(running.metrics().component("sink")?.acked == 500)
    }

    /// A chained bolt behind a threaded one (after a fields grouping), over two containers:
    /// exact per-key counts.
    @Test func chainsAcrossContainers() throws {
        final class Counts: Sendable {
            let byKey = Mutex<[Int64: Int]>([:])
        }
        struct Count: Bolt {
            let counts: Counts
            var collector: BoltCollector?
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
            mutating func execute(_ tuple: Tuple) {
                counts.byKey.withLock { $0[tuple.int("n")! % 10, default: 0] += 1 }
                collector?.ack(tuple)
            }
        }
        let counts = Counts()
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 2_000, log: SpoutLog()))
        builder.setBolt("keyed", Pass(), parallelism: 2).fieldsGrouping("numbers", ["n"])
        builder.setBolt("count", Count(counts: counts), parallelism: 2).localOrShuffleGrouping("keyed")
        var config = TopologyConfig()
        config.chaining = true
        config.containers = 2
        let group = try ContainerGroup(topology: try builder.build(name: "chained-containers", config: config))
        defer { group.kill() }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && group.metrics().component("numbers")?.acked != 2_000 { Thread.sleep(forTimeInterval: 0.01) }
        #expect(group.metrics().component("numbers")?.acked == 2_000)
        #expect(counts.byKey.withLock { $0 } == Dictionary(uniqueKeysWithValues: (0..<10).map { (Int64($0), 200) }))
        #expect(group.received > 0, "tuples crossed containers")
    }

    @Test func failingPrepareOfAChainedBoltStopsTheTopology() throws {
        struct Broken: Bolt {
            struct Refused: Error {}
            mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { throw Refused() }
            mutating func execute(_ tuple: Tuple) {}
        }
        let builder = TopologyBuilder()
        builder.setSpout("numbers", CountingSpout(limit: 10, log: SpoutLog()))
        builder.setBolt("broken", Broken()).localOrShuffleGrouping("numbers")
        var config = TopologyConfig()
        config.chaining = true
        let running = LocalCluster().submit(try builder.build(name: "broken-chain", config: config))
        defer { running.kill() }
        #expect(running.waitUntil(timeoutSeconds: 5) { _ in !running.isRunning })
        #expect(running.errors.first?.contains("bolt broken task 1: prepare failed") == true)
    }
}
