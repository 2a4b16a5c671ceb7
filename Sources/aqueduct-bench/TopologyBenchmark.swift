import AqueductTopology
import AqueductTopologyExamples
import ArgumentParser
import Foundation
import Synchronization

/// The stream-processing jobs of ../shared/bench/peer-flink.sh, as topologies: rows
/// (k: random 0...999, w: random 8 letters) from a generator spout, then
///   filter: keep even k → discard;   count: count per k (fields grouping) → discard;
/// plus WordCount. Acking off and on. Reports tuples/s over the job (submit to last
/// tuple processed, or acked) and complete latency with acking on. Flink's figures come
/// from `scripts/bench-topology.sh`, which runs both in one go.
struct TopologyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "topology", abstract: "Topology jobs (filter, count, word count), acking off and on.")

    @Option(help: "Rows per job.") var rows = 5_000_000
    @Option(help: "Jobs: filter, count, wordcount (comma separated).") var jobs = "filter,count,wordcount"
    @Option(help: "Acking: off, on or both.") var acking = "both"
    @Option(help: "Parallelism of each bolt.") var parallelism = 1
    @Option(help: "Spout tasks (each generates its share of the rows).") var spouts = 1
    @Flag(help: "Chain bolts onto their upstream task's thread where the plan allows (TopologyConfig.chaining).") var chaining = false
    @Option(help: "maxSpoutPending with acking on (per spout task).") var maxSpoutPending = 20_000

    func run() throws {
        let modes: [TopologyConfig.Reliability] = acking == "off" ? [.atMostOnce] : acking == "on" ? [.atLeastOnce] : [.atMostOnce, .atLeastOnce]
        say("topology jobs: \(rows) rows each, \(spouts) spout task(s), bolt parallelism \(parallelism), chaining \(chaining ? "on" : "off"), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        for job in jobs.split(separator: ",").map(String.init) {
            for mode in modes {
                let result = try TopologyJob(name: job, rows: rows, parallelism: parallelism, spouts: spouts, chaining: chaining,
                                             reliability: mode, maxSpoutPending: maxSpoutPending).run()
                say(result)
            }
        }
    }
}

/// Counts what reached the end of a job.
final class Tally: Sendable {
    let count = Atomic<Int>(0)
}

struct TopologyJob {
    let name: String
    let rows: Int
    let parallelism: Int
    let spouts: Int
    let chaining: Bool
    let reliability: TopologyConfig.Reliability
    let maxSpoutPending: Int

    /// Rows like Flink's datagen: k random in 0...999, w random 8 lowercase letters.
    /// Each task generates its share of `rows`.
    struct RowSpout: Spout {
        var rows: Int
        let tracked: Bool
        var emitted = 0
        var random = SystemRandomNumberGenerator()
        var state: UInt64 = 0x1234_5678
        var collector: SpoutCollector?

        func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["k", "w"]) }
        mutating func open(context: TopologyContext, collector: SpoutCollector) throws {
            self.collector = collector
            let tasks = context.componentTasks.count
            rows = rows / tasks + (context.taskIndex < rows % tasks ? 1 : 0)
            state = random.next()
        }
        mutating func nextTuple() {
            guard emitted < rows, let collector else { return }
            for _ in 0..<64 where emitted < rows {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                let k = Int64(z % 1_000)
                var letters = (z >> 10)
                let w = String(unsafeUninitializedCapacity: 8) { buffer in
                    for index in 0..<8 {
                        buffer[index] = UInt8(ascii: "a") + UInt8(letters % 26)
                        letters /= 26
                    }
                    return 8
                }
                collector.emit([.int(k), .string(w)], messageID: tracked ? .int(Int64(emitted)) : nil)
                emitted += 1
            }
        }
    }

    struct EvenFilter: Bolt {
        var collector: BoltCollector?
        func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["k", "w"]) }
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
        mutating func execute(_ tuple: Tuple) {
            if let k = tuple[0].intValue, k % 2 == 0 { collector?.emit(tuple.values, anchor: tuple) }
            collector?.ack(tuple)
        }
    }

    struct CountPerKey: Bolt {
        var counts = [Int64](repeating: 0, count: 1_000)
        var collector: BoltCollector?
        func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["k", "count"]) }
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
        mutating func execute(_ tuple: Tuple) {
            if let k = tuple[0].intValue, k >= 0 && k < 1_000 {
                counts[Int(k)] += 1
                collector?.emit([.int(k), .int(counts[Int(k)])], anchor: tuple)
            }
            collector?.ack(tuple)
        }
    }

    /// The blackhole: acks, and counts what arrived (published now and then and at
    /// the end: a shared counter per tuple would cost more than the job).
    struct Discard: Bolt {
        let tally: Tally
        var collector: BoltCollector?
        var local = 0
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
        mutating func execute(_ tuple: Tuple) {
            collector?.ack(tuple)
            local += 1
            if local == 4_096 {
                tally.count.add(local, ordering: .relaxed)
                local = 0
            }
        }
        mutating func cleanup() { tally.count.add(local, ordering: .relaxed) }
    }

    func run() throws -> String {
        let tally = Tally()
        var config = TopologyConfig()
        config.reliability = reliability
        config.maxSpoutPending = reliability == .atLeastOnce ? maxSpoutPending : nil
        config.chaining = chaining
        let tracked = reliability == .atLeastOnce
        let builder = TopologyBuilder()
        let topology: Topology
        let rows = self.rows
        switch name {
        case "filter":
            builder.setSpout("rows", RowSpout(rows: rows, tracked: tracked), parallelism: spouts)
            builder.setBolt("filter", EvenFilter(), parallelism: parallelism).localOrShuffleGrouping("rows")
            builder.setBolt("discard", Discard(tally: tally), parallelism: parallelism).localOrShuffleGrouping("filter")
            topology = try builder.build(name: "filter", config: config)
        case "count":
            builder.setSpout("rows", RowSpout(rows: rows, tracked: tracked), parallelism: spouts)
            builder.setBolt("count", CountPerKey(), parallelism: parallelism).fieldsGrouping("rows", ["k"])
            builder.setBolt("discard", Discard(tally: tally), parallelism: parallelism).localOrShuffleGrouping("count")
            topology = try builder.build(name: "count", config: config)
        case "wordcount":
            topology = try WordCountTopology.build(sentenceLimit: rows / 6, sink: Discard(tally: tally), config: config)
        default:
            throw ValidationError("unknown job \(name): use filter, count or wordcount")
        }
        let started = Date()
        let running = LocalCluster().submit(topology)
        let spout = topology.componentIDs[0]
        let input = name == "wordcount" ? rows / 6 : rows
        // Every tuple of these jobs goes to exactly one task: the job is over when the
        // spout emitted all its rows, every emitted tuple was executed and (acking on)
        // every tree is finished. The tasks' counters are read one after the other, not
        // at one instant, so the totals must also stand still between two polls; the
        // end is the first of those two polls.
        var previous: (emitted: Int, executed: Int)?
        var firstQuiet: Date?
        let done: (TopologyMetrics) -> Bool = { metrics in
            guard let source = metrics.component(spout), source.emitted >= input else { return false }
            let emitted = metrics.tasks.reduce(0) { $0 + $1.emitted }
            let executed = metrics.tasks.reduce(0) { $0 + $1.executed }
            guard executed >= emitted && (!tracked || source.acked + source.failed >= input) else {
                previous = nil
                return false
            }
            defer { previous = (emitted, executed) }
            if let previous, previous == (emitted, executed) { return true }
            firstQuiet = Date()
            return false
        }
        _ = running.waitUntil(timeoutSeconds: 600, pollMilliseconds: 2, done)
        let seconds = (firstQuiet ?? Date()).timeIntervalSince(started)
        let metrics = running.metrics()
        running.kill()
        let spoutMetrics = metrics.component(spout)
        var line = String(format: "  %-9@ acking %-3@: %d tuples from the spout in %.2f s = %@ tuples/s",
                          name as NSString, (reliability == .atLeastOnce ? "on" : "off") as NSString, input, seconds, grouped(Double(input) / seconds) as NSString)
        line += String(format: " | %d reached the end", tally.count.load(ordering: .relaxed))
        if reliability == .atLeastOnce, let spoutMetrics {
            line += String(format: " | complete latency p50 %.2f ms, p99 %.2f ms, failed %d", spoutMetrics.completeLatencyP50Micros / 1_000,
                           spoutMetrics.completeLatencyP99Micros / 1_000, spoutMetrics.failed)
        }
        line += String(format: " | backpressure %.0f ms", metrics.backpressureMillis)
        return line
    }

}

func grouped(_ value: Double) -> String {
    let formatter = NumberFormatter()
    formatter.numberStyle = .decimal
    formatter.maximumFractionDigits = 0
    return formatter.string(from: NSNumber(value: value)) ?? "\(Int(value))"
}
