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
    /// Mutable per-subscription state lives in these boxes, so routing mutates in
    /// place instead of copying arrays out of an enum and back.
    final class ShuffleOrder {
        var order: [Int]
        var next = 0
        init(_ order: [Int]) { self.order = order }
    }
    final class Loads {
        var counts: [Int]
        init(_ count: Int) { counts = Array(repeating: 0, count: count) }
    }
    final class CustomBox {
        var grouping: any CustomGrouping
        let allowed: Set<Int>
        init(_ grouping: any CustomGrouping, allowed: Set<Int>) { self.grouping = grouping; self.allowed = allowed }
    }

    enum Choice {
        case shuffle(ShuffleOrder)
        case fields(targets: [Int], indexes: [Int])
        case all(targets: [Int])
        case global(target: Int)
        case partialKey(targets: [Int], indexes: [Int], loads: Loads)
        case custom(CustomBox)
        case direct(targets: Set<Int>)
    }

    struct Target {
        var component: String
        var choice: Choice
    }

    /// The emitting component's declared streams, in declaration order (the emitter's
    /// stream index), and each one's subscribers.
    private(set) var streamIDs: [String] = []
    private(set) var targetLists: [[Target]] = []
    /// Per stream, the one task every tuple goes to when the subscriptions leave no
    /// choice (a single subscriber task, global, chained), else -1: the emit path's
    /// shortcut past the target list.
    private var fixedTargets: [Int] = []
    private var random: TopologyRandom

    init(component: String, sourceTask: Int, topology: Topology, plan: PhysicalPlan, random: TopologyRandom) {
        self.random = random
        guard let spec = topology.component(component) else { return }
        streamIDs = spec.streams.map(\.id)
        targetLists = Array(repeating: [], count: streamIDs.count)
        let sourceContainer = plan.tasks[sourceTask].container
        for consumer in topology.components {
            for input in consumer.inputs where input.component == component {
                guard let stream = spec.stream(input.stream) else { continue }
                let targets = plan.tasksByComponent[consumer.id] ?? []
                let choice: Choice
                if let chained = targets.first(where: { plan.tasks[$0].chainedTo == sourceTask }) {
                    // Chained: the task of the same index, on this thread.
                    choice = .global(target: chained)
                } else {
                    switch input.grouping {
                    case .shuffle, .none:
                        choice = .shuffle(ShuffleOrder(targets.shuffled(using: &self.random)))
                    case .localOrShuffle:
                        let local = targets.filter { plan.tasks[$0].container == sourceContainer }
                        let pool = local.isEmpty ? targets : local
                        choice = .shuffle(ShuffleOrder(pool.shuffled(using: &self.random)))
                    case .fields(let names):
                        choice = .fields(targets: targets, indexes: names.compactMap { stream.fields.index(of: $0) })
                    case .partialKey(let names):
                        choice = .partialKey(targets: targets, indexes: names.compactMap { stream.fields.index(of: $0) }, loads: Loads(targets.count))
                    case .all:
                        choice = .all(targets: targets)
                    case .global:
                        choice = .global(target: targets.min() ?? 0)
                    case .direct:
                        choice = .direct(targets: Set(targets))
                    case .custom(let make):
                        var grouping = make()
                        grouping.prepare(targetTasks: targets)
                        choice = .custom(CustomBox(grouping, allowed: Set(targets)))
                    }
                }
                if let position = streamIDs.firstIndex(of: input.stream) {
                    targetLists[position].append(Target(component: consumer.id, choice: choice))
                }
            }
        }
        fixedTargets = targetLists.map { targets in
            guard targets.count == 1 else { return -1 }
            switch targets[0].choice {
            case .global(let task): return task
            case .shuffle(let state) where state.order.count == 1: return state.order[0]
            case .fields(let pool, _) where pool.count == 1: return pool[0]
            case .partialKey(let pool, _, _) where pool.count == 1: return pool[0]
            case .all(let pool) where pool.count == 1: return pool[0]
            default: return -1
            }
        }
    }

    /// The only task that tuples on the stream go to, when there is no choice.
    @inline(__always)
    func fixedTarget(streamIndex: Int) -> Int? {
        let task = fixedTargets[streamIndex]
        return task >= 0 ? task : nil
    }

    /// Calls `deliver` with each task that gets a tuple of `values` on `stream`
    /// (direct subscribers excluded: they get only `emitDirect`).
    mutating func route(stream: String, values: [TupleValue], sourceTask: Int, _ deliver: (Int) -> Void) {
        var found: [Int] = []
        targets(stream: stream, values: values, sourceTask: sourceTask, into: &found)
        for task in found { deliver(task) }
    }

    /// The tasks that get a tuple of `values` on `stream`, appended to `deliver` (the
    /// emit path uses this with a reused buffer: no closure context per emit).
    mutating func targets(stream: String, values: [TupleValue], sourceTask: Int, into deliver: inout [Int]) {
        guard let streamIndex = streamIDs.firstIndex(of: stream) else { return }
        targets(streamIndex: streamIndex, values: values, sourceTask: sourceTask, into: &deliver)
    }

    /// The same, by the stream's position among the component's declared streams.
    mutating func targets(streamIndex: Int, values: [TupleValue], sourceTask: Int, into deliver: inout [Int]) {
        for target in targetLists[streamIndex] {
            switch target.choice {
            case .shuffle(let state):
                if state.next == state.order.count {
                    state.order.shuffle(using: &random)
                    state.next = 0
                }
                deliver.append(state.order[state.next])
                state.next += 1
            case .fields(let pool, let indexes):
                deliver.append(pool[Int(Self.hash(values, indexes, seed: 0) % UInt64(pool.count))])
            case .partialKey(let pool, let indexes, let loads):
                let first = Int(Self.hash(values, indexes, seed: 0) % UInt64(pool.count))
                let second = Int(Self.hash(values, indexes, seed: 0x9E37_79B9_7F4A_7C15) % UInt64(pool.count))
                let chosen = loads.counts[second] < loads.counts[first] ? second : first
                loads.counts[chosen] += 1
                deliver.append(pool[chosen])
            case .all(let pool):
                for task in pool { deliver.append(task) }
            case .global(let task):
                deliver.append(task)
            case .custom(let box):
                for task in box.grouping.chooseTasks(sourceTask: sourceTask, values: values) where box.allowed.contains(task) { deliver.append(task) }
            case .direct:
                break
            }
        }
    }

    /// Whether `task` subscribes to `stream` with direct grouping.
    func acceptsDirect(stream: String, task: Int) -> Bool {
        guard let position = streamIDs.firstIndex(of: stream) else { return false }
        for target in targetLists[position] {
            if case .direct(let tasks) = target.choice, tasks.contains(task) { return true }
        }
        return false
    }

    static func hash(_ values: [TupleValue], _ indexes: [Int], seed: UInt64) -> UInt64 {
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
