import Synchronization

/// State shared by the tasks of one running topology in this process: the queues that
/// connect them, the backpressure gate, the switches, the metrics.
final class Fabric: Sendable {
    let topology: Topology
    let plan: PhysicalPlan
    let clock: any TopologyClock
    let gate: BackpressureGate
    /// Input queue per bolt task (index = task id); nil for spouts.
    let inputQueues: [TupleQueue?]
    /// Ack/fail queue per spout task; nil for bolts.
    let controlQueues: [ControlQueue?]
    let metrics: [InstanceMetrics]
    let seed: UInt64
    private let switches = Mutex<(running: Bool, active: Bool, errors: [String])>((true, true, []))

    init(topology: Topology, clock: any TopologyClock) {
        self.topology = topology
        self.plan = PhysicalPlan(topology: topology)
        self.clock = clock
        let gate = BackpressureGate(clock: clock)
        self.gate = gate
        let config = topology.config
        inputQueues = plan.tasks.map { task in
            task.isSpout ? nil : TupleQueue(highWatermark: config.queueHighWatermarkTuples, lowWatermark: config.queueLowWatermarkTuples,
                                            capacity: config.queueCapacityTuples, gate: gate, clock: clock)
        }
        controlQueues = plan.tasks.map { $0.isSpout ? ControlQueue() : nil }
        metrics = plan.tasks.map { _ in InstanceMetrics() }
        seed = config.seed ?? UInt64.random(in: 1...UInt64.max)
    }

    var isRunning: Bool { switches.withLock { $0.running } }
    var isActive: Bool { switches.withLock { $0.active } }

    func setActive(_ active: Bool) {
        switches.withLock { $0.active = active }
        for queue in controlQueues { queue?.wake() }
    }

    func stop() {
        switches.withLock { $0.running = false }
        for queue in inputQueues { queue?.close() }
        for queue in controlQueues { queue?.close() }
    }

    /// Records a failure of user code and stops the topology (as a Storm worker dies).
    func fail(_ message: String) {
        switches.withLock { $0.errors.append(message) }
        stop()
    }

    var errors: [String] { switches.withLock { $0.errors } }

    func context(for task: Int) -> TopologyContext {
        let info = plan.tasks[task]
        var settings = topology.config.settings
        if let spec = topology.component(info.component) {
            settings.merge(spec.config.settings) { _, component in component }
        }
        return TopologyContext(topologyName: topology.name, componentID: info.component, taskID: task, taskIndex: info.index,
                               componentTasks: plan.tasksByComponent[info.component] ?? [], configuration: settings,
                               tasksByComponent: plan.tasksByComponent)
    }
}

/// The output side of one task: routes each emitted tuple with the groupings, buffers
/// tuples per destination task and acks per spout task, and hands each buffer over in
/// one queue operation (no per-tuple lock or wake-up).
final class Emitter {
    let fabric: Fabric
    let task: Int
    let component: String
    let reliable: Bool
    let metrics: InstanceMetrics
    var router: OutputRouter
    var random: TopologyRandom
    private let streamIDs: [String]
    private let streamFields: [Fields]
    private var outgoing: [[Tuple]]
    private var dirtyTasks: [Int] = []
    private var control: [[ControlQueue.Message]]
    private var dirtyControl: [Int] = []
    private let batchTuples: Int

    init(fabric: Fabric, task: Int) {
        self.fabric = fabric
        self.task = task
        let info = fabric.plan.tasks[task]
        component = info.component
        reliable = fabric.topology.config.reliability == .atLeastOnce
        metrics = fabric.metrics[task]
        var random = TopologyRandom(seed: fabric.seed ^ (UInt64(task + 1) &* 0xD6E8_FEB8_6659_FD93))
        router = OutputRouter(component: info.component, sourceTask: task, topology: fabric.topology, plan: fabric.plan,
                              random: TopologyRandom(seed: random.next()))
        self.random = random
        let streams = fabric.topology.component(info.component)?.streams ?? []
        streamIDs = streams.map(\.id)
        streamFields = streams.map(\.fields)
        outgoing = Array(repeating: [], count: fabric.plan.tasks.count)
        control = Array(repeating: [], count: fabric.plan.tasks.count)
        batchTuples = fabric.topology.config.emitBatchTuples
    }

    /// The fields of a declared stream, or nil (the emit is dropped and counted).
    func fields(of stream: String, valueCount: Int) -> Fields? {
        guard let index = streamIDs.firstIndex(of: stream), streamFields[index].count == valueCount else {
            metrics.droppedEmits.add(1, ordering: .relaxed)
            return nil
        }
        return streamFields[index]
    }

    func enqueue(_ tuple: Tuple, to target: Int) {
        if outgoing[target].isEmpty { dirtyTasks.append(target) }
        outgoing[target].append(tuple)
        metrics.emitted.add(1, ordering: .relaxed)
        if outgoing[target].count >= batchTuples { flush(target) }
    }

    func sendControl(_ message: ControlQueue.Message, to spoutTask: Int) {
        if control[spoutTask].isEmpty { dirtyControl.append(spoutTask) }
        control[spoutTask].append(message)
    }

    private func flush(_ target: Int) {
        guard !outgoing[target].isEmpty else { return }
        if let queue = fabric.inputQueues[target] {
            queue.push(outgoing[target])
        }
        outgoing[target].removeAll(keepingCapacity: true)
    }

    /// Hands every buffered tuple and ack to its destination.
    func flushAll() {
        for target in dirtyTasks { flush(target) }
        dirtyTasks.removeAll(keepingCapacity: true)
        for spoutTask in dirtyControl where !control[spoutTask].isEmpty {
            fabric.controlQueues[spoutTask]?.push(control[spoutTask])
            control[spoutTask].removeAll(keepingCapacity: true)
        }
        dirtyControl.removeAll(keepingCapacity: true)
    }

    var hasBuffered: Bool { !dirtyTasks.isEmpty || !dirtyControl.isEmpty }
}
