@testable import AqueductTopology
import Testing

/// Where each grouping sends tuples, decided by the pure router of one emitting task.
@Suite struct GroupingTests {
    struct Source: Spout {
        func declareOutputFields(_ declarer: inout OutputDeclarer) {
            declarer.declare(["key", "value"])
            declarer.declareStream("direct", fields: ["key"], direct: true)
        }
        mutating func nextTuple() {}
    }
    struct Sink: Bolt { mutating func execute(_ tuple: Tuple) {} }

    struct EvenOdd: CustomGrouping {
        var targets: [Int] = []
        mutating func prepare(targetTasks: [Int]) { targets = targetTasks }
        mutating func chooseTasks(sourceTask: Int, values: [TupleValue]) -> [Int] {
            [targets[Int(values[0].intValue! % 2)], 999]  // 999 is not a target: ignored
        }
    }

    /// One source task, one subscriber with `grouping` and `parallelism` tasks.
    func router(_ grouping: Grouping, parallelism: Int = 4, containers: Int = 1, stream: String = Streams.default) throws -> (OutputRouter, [Int]) {
        let builder = TopologyBuilder()
        builder.setSpout("source", Source())
        builder.setBolt("sink", Sink(), parallelism: parallelism).grouping("source", stream: stream, grouping)
        var config = TopologyConfig()
        config.containers = containers
        let topology = try builder.build(name: "t", config: config)
        let plan = PhysicalPlan(topology: topology)
        return (OutputRouter(component: "source", sourceTask: 0, topology: topology, plan: plan, random: TopologyRandom(seed: 7)),
                plan.tasksByComponent["sink"]!)
    }

    func route(_ router: inout OutputRouter, _ values: [TupleValue], stream: String = Streams.default) -> [Int] {
        var targets: [Int] = []
        router.targets(stream: stream, values: TupleValues(values), sourceTask: 0, into: &targets)
        return targets
    }

    @Test func shuffleVisitsEveryTaskOncePerRound() throws {
        var (router, tasks) = try router(.shuffle)
        for _ in 0..<10 {
            var round: [Int] = []
            for _ in tasks { round += route(&router, ["k", 1]) }
            #expect(round.sorted() == tasks)
        }
    }

    @Test func fieldsSendsEqualKeysToOneTaskAndSpreadsKeys() throws {
        var (router, tasks) = try router(.fields(["key"]))
        var taskOfKey: [String: Int] = [:]
        var perTask: [Int: Int] = [:]
        for round in 0..<3 {
            for index in 0..<4_000 {
                let key = "key-\(index)"
                let targets = route(&router, [.string(key), .int(Int64(round))])
                #expect(targets.count == 1)
                if let known = taskOfKey[key] { #expect(known == targets[0]) } else { taskOfKey[key] = targets[0] }
                if round == 0 { perTask[targets[0], default: 0] += 1 }
            }
        }
        #expect(Set(perTask.keys) == Set(tasks))
        for count in perTask.values { #expect(count > 800 && count < 1_200, "4,000 keys over 4 tasks: \(perTask)") }
    }

    @Test func stableHashIsFNV1aOfATaggedEncoding() {
        // Fixed arithmetic, no per-process seed: a key goes to the same task in every
        // container and every version. "a" is tag 4, the byte 0x61, terminator 0xFF.
        let prime: UInt64 = 0x100_0000_01B3
        var expected: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte: UInt64 in [4, 0x61, 0xFF] { expected = (expected ^ byte) &* prime }
        var hasher = StableHash()
        hasher.add("a")
        #expect(hasher.value == expected)
        #expect(OutputRouter.hash(["word", 42], [0, 1], seed: 0) == OutputRouter.hash(["word", 42], [0, 1], seed: 0))
        #expect(OutputRouter.hash(["word", 42], [0], seed: 0) == OutputRouter.hash(["word", 7], [0], seed: 0))
        #expect(OutputRouter.hash([1], [0], seed: 0) != OutputRouter.hash(["1"], [0], seed: 0))
    }

    @Test func allGlobalAndNone() throws {
        var (all, tasks) = try router(.all)
        #expect(route(&all, ["k", 1]) == tasks)
        var (global, globalTasks) = try router(.global)
        for _ in 0..<5 { #expect(route(&global, ["k", 1]) == [globalTasks.min()!]) }
        var (none, _) = try router(.none)
        #expect(route(&none, ["k", 1]).count == 1)
    }

    @Test func partialKeySpreadsAHotKeyOverTwoTasks() throws {
        var (router, _) = try router(.partialKey(["key"]), parallelism: 8)
        var used: [Int: Int] = [:]
        for _ in 0..<1_000 { used[route(&router, ["hot", 1])[0], default: 0] += 1 }
        #expect(used.count <= 2)
        if used.count == 2 { #expect(used.values.allSatisfy { $0 == 500 }) }
    }

    @Test func localOrShufflePrefersTheEmittersContainer() throws {
        var (router, _) = try router(.localOrShuffle, parallelism: 4, containers: 2)
        // Task 0 (the source) is in container 0; sink tasks 1...4 alternate containers 1, 0, 1, 0.
        var seen: Set<Int> = []
        for _ in 0..<20 { seen.formUnion(route(&router, ["k", 1])) }
        #expect(seen == [2, 4])
    }

    @Test func directIsOnlyForEmitDirect() throws {
        let (router, tasks) = try router(.direct, stream: "direct")
        var copy = router
        #expect(route(&copy, ["k"], stream: "direct").isEmpty)
        #expect(router.acceptsDirect(stream: "direct", task: tasks[2]))
        #expect(!router.acceptsDirect(stream: "direct", task: 0))
        #expect(!router.acceptsDirect(stream: Streams.default, task: tasks[2]))
    }

    @Test func customGroupingChoosesAmongTargets() throws {
        var (router, tasks) = try router(.custom({ EvenOdd() }))
        #expect(route(&router, [3, 0]) == [tasks[1]])
        #expect(route(&router, [4, 0]) == [tasks[0]])
    }
}
