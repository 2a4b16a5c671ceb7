/// Tasks of a topology and where they run: task ids are dense, 0..<taskCount, in the
/// order components were declared; threads are spread round-robin over containers.
///
/// With `TopologyConfig.chaining`, a bolt whose only input is a local-or-shuffle (or
/// none) subscription to a component of the same parallelism runs chained: its task i
/// executes on the thread of the upstream task i, called directly from that task's
/// emit (Flink's operator chaining: no queue, no hand-over between threads). Bolts
/// with tick tuples are never chained.
public struct PhysicalPlan: Sendable, Equatable {
    public struct Task: Sendable, Equatable {
        public let id: Int
        public let component: String
        public let index: Int
        public let container: Int
        public let isSpout: Bool
        /// The task on whose thread this one runs (nil: a thread of its own).
        public let chainedTo: Int?
    }

    public let topologyName: String
    public let containers: Int
    public let tasks: [Task]
    public let tasksByComponent: [String: [Int]]

    init(topology: Topology) {
        topologyName = topology.name
        containers = topology.config.containers
        var byComponent: [String: [Int]] = [:]
        var firstTask: [String: Int] = [:]
        var taskCount = 0
        for component in topology.components {
            firstTask[component.id] = taskCount
            byComponent[component.id] = Array(taskCount..<taskCount + component.parallelism)
            taskCount += component.parallelism
        }
        var chainedTo = [Int?](repeating: nil, count: taskCount)
        for component in topology.components {
            guard let host = Self.chainHost(of: component, in: topology), let hostFirst = firstTask[host], let first = firstTask[component.id] else { continue }
            for index in 0..<component.parallelism { chainedTo[first + index] = hostFirst + index }
        }
        // Threads (tasks not chained) round-robin over containers; a chained task goes
        // where the head of its chain runs.
        var threadContainer = [Int](repeating: 0, count: taskCount)
        var threads = 0
        for task in 0..<taskCount where chainedTo[task] == nil {
            threadContainer[task] = threads % containers
            threads += 1
        }
        func head(_ task: Int) -> Int {
            var current = task
            while let host = chainedTo[current] { current = host }
            return current
        }
        var tasks: [Task] = []
        for component in topology.components {
            for index in 0..<component.parallelism {
                let id = tasks.count
                tasks.append(Task(id: id, component: component.id, index: index, container: threadContainer[head(id)],
                                  isSpout: component.isSpout, chainedTo: chainedTo[id]))
            }
        }
        self.tasks = tasks
        self.tasksByComponent = byComponent
    }

    /// The component whose tasks run `component`'s tasks chained, if chaining applies.
    static func chainHost(of component: ComponentSpec, in topology: Topology) -> String? {
        guard topology.config.chaining, !component.isSpout, component.config.tickFrequencySeconds == nil,
              component.inputs.count == 1, let input = component.inputs.first,
              let upstream = topology.component(input.component), upstream.parallelism == component.parallelism
        else { return nil }
        switch input.grouping {
        case .localOrShuffle, .none: return upstream.id
        default: return nil
        }
    }

    public func tasks(in container: Int) -> [Task] { tasks.filter { $0.container == container } }

    /// Tasks that run on their own thread in `container` (nil: all containers).
    func threadTasks(in container: Int?) -> [Int] {
        tasks.filter { $0.chainedTo == nil && (container == nil || $0.container == container) }.map(\.id)
    }

    /// Tasks chained onto `task` (directly).
    func chained(onto task: Int) -> [Int] { tasks.filter { $0.chainedTo == task }.map(\.id) }
}

/// Where one emitting task sends each tuple of each of its streams: the groupings of
/// every subscriber, with their per-task state (shuffle order, partial-key loads,
/// custom groupings). Pure apart from the seeded generator it is given.
struct OutputRouter {
    /// A subscription's grouping with the position of its state in the router's
    /// tables. Payloads are plain integers: routing a tuple copies no reference-counted
    /// value (boxes and arrays in the enum cost a retain and release each per emit).
    enum Choice {
        case shuffle(state: Int)
        case fields(pool: Int)
        case all(pool: Int)
        case global(target: Int)
        case partialKey(pool: Int)
        case custom(box: Int)
        case direct(pool: Int)
    }

    /// Target tasks of a subscription, the field positions it hashes, and (partial key)
    /// how many tuples each target got.
    struct Pool {
        var targets: [Int]
        var indexes: [Int] = []
        var loads: [Int] = []
    }

    struct ShuffleState {
        var order: [Int]
        var next = 0
    }

    final class CustomBox {
        var grouping: any CustomGrouping
        let allowed: Set<Int>
        init(_ grouping: any CustomGrouping, allowed: Set<Int>) { self.grouping = grouping; self.allowed = allowed }
    }

    /// The emitting component's declared streams, in declaration order (the emitter's
    /// stream index).
    private(set) var streamIDs: [String] = []
    /// Every subscription's choice, grouped by stream: stream i's are
    /// `choices[choiceRanges[i]]`.
    private var choices: [Choice] = []
    private var choiceRanges: [Range<Int>] = []
    private var shuffles: [ShuffleState] = []
    private var pools: [Pool] = []
    private var customs: [CustomBox] = []
    /// Per stream, the one task every tuple goes to when the subscriptions leave no
    /// choice (a single subscriber task, global, chained), else -1: the emit path's
    /// shortcut past the target list.
    private var fixedTargets: [Int] = []
    private var random: TopologyRandom

    init(component: String, sourceTask: Int, topology: Topology, plan: PhysicalPlan, random: TopologyRandom) {
        self.random = random
        guard let spec = topology.component(component) else { return }
        streamIDs = spec.streams.map(\.id)
        let sourceContainer = plan.tasks[sourceTask].container
        for stream in spec.streams {
            let first = choices.count
            var fixed = -1
            for consumer in topology.components {
                for input in consumer.inputs where input.component == component && input.stream == stream.id {
                    let targets = plan.tasksByComponent[consumer.id] ?? []
                    let choice = makeChoice(input.grouping, targets: targets, fields: stream.fields, sourceTask: sourceTask,
                                            sourceContainer: sourceContainer, plan: plan)
                    choices.append(choice)
                    fixed = single(choice) ?? -1
                }
            }
            choiceRanges.append(first..<choices.count)
            fixedTargets.append(choices.count - first == 1 ? fixed : -1)
        }
    }

    private mutating func makeChoice(_ grouping: Grouping, targets: [Int], fields: Fields, sourceTask: Int, sourceContainer: Int,
                                     plan: PhysicalPlan) -> Choice {
        if let chained = targets.first(where: { plan.tasks[$0].chainedTo == sourceTask }) {
            // Chained: the task of the same index, on this thread.
            return .global(target: chained)
        }
        func pool(_ targets: [Int], _ names: [String] = []) -> Int {
            pools.append(Pool(targets: targets, indexes: names.compactMap { fields.index(of: $0) }, loads: Array(repeating: 0, count: targets.count)))
            return pools.count - 1
        }
        switch grouping {
        case .shuffle, .none:
            shuffles.append(ShuffleState(order: targets.shuffled(using: &random)))
            return .shuffle(state: shuffles.count - 1)
        case .localOrShuffle:
            let local = targets.filter { plan.tasks[$0].container == sourceContainer }
            shuffles.append(ShuffleState(order: (local.isEmpty ? targets : local).shuffled(using: &random)))
            return .shuffle(state: shuffles.count - 1)
        case .fields(let names):
            return .fields(pool: pool(targets, names))
        case .partialKey(let names):
            return .partialKey(pool: pool(targets, names))
        case .all:
            return .all(pool: pool(targets))
        case .global:
            return .global(target: targets.min() ?? 0)
        case .direct:
            return .direct(pool: pool(targets))
        case .custom(let make):
            var custom = make()
            custom.prepare(targetTasks: targets)
            customs.append(CustomBox(custom, allowed: Set(targets)))
            return .custom(box: customs.count - 1)
        }
    }

    /// The task a choice always picks, if it has no other.
    private func single(_ choice: Choice) -> Int? {
        switch choice {
        case .global(let task): return task
        case .shuffle(let state): return shuffles[state].order.count == 1 ? shuffles[state].order[0] : nil
        case .fields(let pool), .partialKey(let pool), .all(let pool): return pools[pool].targets.count == 1 ? pools[pool].targets[0] : nil
        case .custom, .direct: return nil
        }
    }

    /// The only task that tuples on the stream go to, when there is no choice.
    @inline(__always)
    func fixedTarget(streamIndex: Int) -> Int? {
        let task = fixedTargets[streamIndex]
        return task >= 0 ? task : nil
    }

    /// The tasks that get a tuple of `values` on `stream`, appended to `deliver`
    /// (direct subscribers excluded: they get only `emitDirect`).
    mutating func targets(stream: String, values: TupleValues, sourceTask: Int, into deliver: inout [Int]) {
        guard let streamIndex = streamIDs.firstIndex(of: stream) else { return }
        targets(streamIndex: streamIndex, values: values, sourceTask: sourceTask, into: &deliver)
    }

    /// The same, by the stream's position among the component's declared streams.
    mutating func targets(streamIndex: Int, values: TupleValues, sourceTask: Int, into deliver: inout [Int]) {
        var position = choiceRanges[streamIndex].lowerBound
        let end = choiceRanges[streamIndex].upperBound
        while position < end {
            switch choices[position] {
            case .shuffle(let state):
                if shuffles[state].next == shuffles[state].order.count {
                    shuffles[state].order.shuffle(using: &random)
                    shuffles[state].next = 0
                }
                deliver.append(shuffles[state].order[shuffles[state].next])
                shuffles[state].next += 1
            case .fields(let pool):
                let hash = Self.hash(values, pools[pool].indexes, seed: 0)
                deliver.append(pools[pool].targets[Int(hash % UInt64(pools[pool].targets.count))])
            case .partialKey(let pool):
                let count = UInt64(pools[pool].targets.count)
                let first = Int(Self.hash(values, pools[pool].indexes, seed: 0) % count)
                let second = Int(Self.hash(values, pools[pool].indexes, seed: 0x9E37_79B9_7F4A_7C15) % count)
                let chosen = pools[pool].loads[second] < pools[pool].loads[first] ? second : first
                pools[pool].loads[chosen] += 1
                deliver.append(pools[pool].targets[chosen])
            case .all(let pool):
                deliver.append(contentsOf: pools[pool].targets)
            case .global(let task):
                deliver.append(task)
            case .custom(let index):
                let box = customs[index]
                for task in box.grouping.chooseTasks(sourceTask: sourceTask, values: values.array) where box.allowed.contains(task) { deliver.append(task) }
            case .direct:
                break
            }
            position += 1
        }
    }

    /// Whether `task` subscribes to `stream` with direct grouping.
    func acceptsDirect(stream: String, task: Int) -> Bool {
        guard let streamIndex = streamIDs.firstIndex(of: stream) else { return false }
        for choice in choices[choiceRanges[streamIndex]] {
            if case .direct(let pool) = choice, pools[pool].targets.contains(task) { return true }
        }
        return false
    }

    @inline(__always)
    static func hash(_ values: TupleValues, _ indexes: [Int], seed: UInt64) -> UInt64 {
        var hasher = StableHash(seed: 0xCBF2_9CE4_8422_2325 ^ seed)
        for index in indexes where index < values.count { hasher.add(values[index]) }
        return hasher.finalized
    }
}

/// A small seeded generator (SplitMix64) so that a run's choices replay from its seed.
struct TopologyRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A nonzero 64-bit id (zero would make XOR tracking blind).
    mutating func nonzero() -> UInt64 {
        while true {
            let value = next()
            if value != 0 { return value }
        }
    }
}
