@testable import AqueductTopology
import Testing

/// Builder validation: every mistake is refused at build time with a message that says
/// what to change.
@Suite struct BuilderTests {
    struct Words: Spout {
        func declareOutputFields(_ declarer: inout OutputDeclarer) {
            declarer.declare(["word"])
            declarer.declareStream("direct-out", fields: ["word"], direct: true)
        }
        mutating func nextTuple() {}
    }
    struct Pass: Bolt {
        func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["word", "count"]) }
        mutating func execute(_ tuple: Tuple) {}
    }

    func problems(_ build: (TopologyBuilder) -> Void, config: TopologyConfig = TopologyConfig(), name: String = "t") -> [String] {
        let builder = TopologyBuilder()
        build(builder)
        do {
            _ = try builder.build(name: name, config: config)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func validTopologyBuilds() throws {
        let builder = TopologyBuilder()
        builder.setSpout("words", Words(), parallelism: 2)
        builder.setBolt("count", Pass(), parallelism: 4).fieldsGrouping("words", ["word"]).directGrouping("words", stream: "direct-out")
        builder.setBolt("report", Pass()).globalGrouping("count").partialKeyGrouping("count", ["word", "count"])
        let topology = try builder.build(name: "word-count")
        #expect(topology.componentIDs == ["words", "count", "report"])
        let plan = PhysicalPlan(topology: topology)
        #expect(plan.tasks.count == 7)
        #expect(plan.tasksByComponent["count"] == [2, 3, 4, 5])
    }

    @Test func unknownComponentStreamAndField() {
        let found = problems { builder in
            builder.setSpout("words", Words())
            builder.setBolt("a", Pass()).shuffleGrouping("wrods")
            builder.setBolt("b", Pass()).shuffleGrouping("words", stream: "nope")
            builder.setBolt("c", Pass()).fieldsGrouping("words", ["wrd"])
        }
        #expect(found.count == 3)
        #expect(found.contains { $0.contains("bolt \"a\" subscribes to unknown component \"wrods\" (known: words, a, b, c)") })
        #expect(found.contains { $0.contains("stream \"nope\" of \"words\", which declares only default, direct-out") })
        #expect(found.contains { $0.contains("groups on field \"wrd\"") && $0.contains("(fields: [word])") })
    }

    @Test func cyclesAreRefused() {
        let found = problems { builder in
            builder.setSpout("words", Words())
            builder.setBolt("a", Pass()).shuffleGrouping("words").shuffleGrouping("c")
            builder.setBolt("b", Pass()).shuffleGrouping("a")
            builder.setBolt("c", Pass()).shuffleGrouping("b")
        }
        #expect(found == ["cycle: a -> b -> c -> a (tuple trees must end; subscriptions may not loop)"])
    }

    @Test func parallelismIdsAndShape() {
        let found = problems { builder in
            builder.setSpout("words", Words(), parallelism: 0)
            builder.setBolt("words", Pass(), parallelism: 5_000).shuffleGrouping("words")
            builder.setBolt("__acker", Pass()).shuffleGrouping("words")
            builder.setBolt("lonely", Pass())
        }
        #expect(found.contains { $0.contains("\"words\": parallelism 0 is outside 1...1024") })
        #expect(found.contains { $0.contains("parallelism 5000 is outside") })
        #expect(found.contains { $0.contains("component id \"words\" used twice") })
        #expect(found.contains { $0.contains("\"__acker\" is empty or reserved") })
        #expect(found.contains { $0.contains("bolt \"lonely\" subscribes to nothing") })
        #expect(problems { _ in } == ["no components: add a spout with setSpout"])
        #expect(problems({ $0.setSpout("w", Words()) }, name: "bad name!").first?.contains("topology name") == true)
    }

    @Test func directStreamsNeedDirectGrouping() {
        let found = problems { builder in
            builder.setSpout("words", Words())
            builder.setBolt("a", Pass()).directGrouping("words")
            builder.setBolt("b", Pass()).shuffleGrouping("words", stream: "direct-out")
        }
        #expect(found.contains { $0.contains("uses direct grouping on stream \"default\" of \"words\", which is not declared direct") })
        #expect(found.contains { $0.contains("stream \"direct-out\" of \"words\" is direct and needs directGrouping") })
    }

    @Test func badDeclarationsAndConfig() {
        struct Twice: Spout {
            func declareOutputFields(_ declarer: inout OutputDeclarer) {
                declarer.declare(["a", "a"])
                declarer.declareStream(Streams.default, fields: ["b"])
            }
            mutating func nextTuple() {}
        }
        var config = TopologyConfig()
        config.queueLowWatermarkTuples = 10_000
        config.maxSpoutPending = 0
        let found = problems({ $0.setSpout("s", Twice()) }, config: config)
        #expect(found.contains { $0.contains("declares a field twice") })
        #expect(found.contains { $0.contains("stream \"default\" declared twice") })
        let configProblems = problems({ $0.setSpout("s", Words()) }, config: config)
        #expect(configProblems.contains { $0.contains("queueLowWatermarkTuples (10000) must be at least 0 and below queueHighWatermarkTuples (8192)") })
        #expect(configProblems.contains { $0.contains("maxSpoutPending must be at least 1") })
    }

    @Test func updateParallelismRevalidates() throws {
        let builder = TopologyBuilder()
        builder.setSpout("words", Words())
        builder.setBolt("count", Pass(), parallelism: 2).shuffleGrouping("words")
        let topology = try builder.build(name: "t")
        #expect(try topology.withParallelism(["count": 6]).parallelism(of: "count") == 6)
        #expect(throws: TopologyError.self) { try topology.withParallelism(["count": 0]) }
        #expect(throws: TopologyError.self) { try topology.withParallelism(["cnt": 3]) }
    }
}
