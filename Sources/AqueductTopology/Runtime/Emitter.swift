import Synchronization

/// Where tuples and acks for tasks of other containers go: the stream manager.
protocol RemoteLink: Sendable {
    func send(tuples: [Tuple], to task: Int)
    func send(control: [ControlQueue.Message], toSpout task: Int)
    /// This container's queues started or stopped holding the spouts back.
    func localBackpressure(engaged: Bool)
}

/// State shared by the tasks of one running topology in this process (one container):
/// the queues that connect them, the backpressure gate, the switches, the metrics, and
/// the link to the other containers.
final class Fabric: Sendable {
    let topology: Topology
    let plan: PhysicalPlan
    let clock: any TopologyClock
    let gate: BackpressureGate
    /// This container's index, or nil when every task runs here (local mode).
    let container: Int?
    /// Input queue per bolt task of this container (index = task id); nil otherwise.
    let inputQueues: [TupleQueue?]
    /// Ack/fail queue per spout task of this container; nil otherwise.
    let controlQueues: [ControlQueue?]
    let metrics: [InstanceMetrics]
    /// The source of each (task, declared stream), shared by emitters and by tuples
    /// arriving from other containers.
    let sources: [[Unmanaged<TupleSource>]]
    let seed: UInt64
    private let switches = Mutex<(running: Bool, active: Bool, errors: [String])>((true, true, []))
    private let remoteLink = Mutex<(any RemoteLink)?>(nil)

    init(topology: Topology, clock: any TopologyClock, container: Int? = nil) {
        self.topology = topology
        let plan = PhysicalPlan(topology: topology)
        self.plan = plan
        self.clock = clock
        self.container = container
        let gate = BackpressureGate(clock: clock)
        self.gate = gate
        let config = topology.config
        let isLocal = plan.tasks.map { container == nil || $0.container == container }
        inputQueues = plan.tasks.map { task in
            task.isSpout || !isLocal[task.id] || task.chainedTo != nil ? nil : TupleQueue(highWatermark: config.queueHighWatermarkTuples, lowWatermark: config.queueLowWatermarkTuples,
                                            capacity: config.queueCapacityTuples, gate: gate, clock: clock)
        }
        controlQueues = plan.tasks.map { $0.isSpout && isLocal[$0.id] ? ControlQueue() : nil }
        metrics = plan.tasks.map { _ in InstanceMetrics() }
        sources = plan.tasks.map { task in
            let streams = topology.component(task.component)?.streams ?? []
            return streams.enumerated().map { index, stream in
                Unmanaged.passUnretained(TupleSource.immortal(component: task.component, task: task.id, stream: stream.id, streamIndex: index, fields: stream.fields))
            }
        }
        seed = config.seed ?? UInt64.random(in: 1...UInt64.max)
        gate.onLocalChange { [weak self] engaged in self?.remote?.localBackpressure(engaged: engaged) }
    }

    func connect(_ link: any RemoteLink) { remoteLink.withLock { $0 = link } }
    var remote: (any RemoteLink)? { remoteLink.withLock { $0 } }

    /// Tasks that run in this container.
    var localTasks: [Int] { plan.tasks.filter { container == nil || $0.container == container }.map(\.id) }

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

/// Memory for one thread's hot-path state. Stored `var`s of a class pay a dynamic
/// exclusivity check on every access (swift_beginAccess: ~10 % of a tuple's cost);
/// state behind a pointer owned by the single thread that uses it does not.
final class ThreadState<Value> {
    let pointer: UnsafeMutablePointer<Value>

    init(_ value: Value) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: value)
    }

    deinit {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }
}

/// The output side of one task: routes each emitted tuple with the groupings, buffers
/// tuples per destination task and acks per spout task, and hands each buffer over in
/// one queue operation (no per-tuple lock or wake-up). Used by its task's thread only.
final class Emitter {
    struct Buffers {
        var outgoing: [[Tuple]]
        var dirtyTasks: [Int] = []
        var control: [[ControlQueue.Message]]
        var dirtyControl: [Int] = []
        /// Tuples emitted and inputs acked since the last `flushAll` (added to the
        /// metrics there: one atomic add per batch, not per tuple).
        var emittedSinceFlush = 0
        var ackedSinceFlush = 0
    }

    let fabric: Fabric
    let task: Int
    let component: String
    let reliable: Bool
    let metrics: InstanceMetrics
    private let routerState: ThreadState<OutputRouter>
    private let randomState: ThreadState<TopologyRandom>
    private let bufferState: ThreadState<Buffers>
    private let targetState = ThreadState<[Int]>([])
    /// Scratch list of an emit's destination tasks.
    var targets: UnsafeMutablePointer<[Int]> { targetState.pointer }
    var router: UnsafeMutablePointer<OutputRouter> { routerState.pointer }
    /// Tuple and edge ids.
    var random: UnsafeMutablePointer<TopologyRandom> { randomState.pointer }
    private var buffers: UnsafeMutablePointer<Buffers> { bufferState.pointer }
    private let streamIDs: [String]
    private let streamSources: [Unmanaged<TupleSource>]
    private let streamFieldCounts: [Int]
    private let batchTuples: Int
    /// Bolt tasks chained onto this task's thread, by task id (nil: not chained here),
    /// as pointers to their state (`chained` owns it): an emit retains nothing.
    private let chainedByTask: [ChainedBolt.Entry?]
    let chained: [ChainedBolt]

    init(fabric: Fabric, task: Int) {
        self.fabric = fabric
        self.task = task
        let info = fabric.plan.tasks[task]
        component = info.component
        reliable = fabric.topology.config.reliability == .atLeastOnce
        metrics = fabric.metrics[task]
        var random = TopologyRandom(seed: fabric.seed ^ (UInt64(task + 1) &* 0xD6E8_FEB8_6659_FD93))
        routerState = ThreadState(OutputRouter(component: info.component, sourceTask: task, topology: fabric.topology, plan: fabric.plan,
                                               random: TopologyRandom(seed: random.next())))
        randomState = ThreadState(random)
        let streams = fabric.topology.component(info.component)?.streams ?? []
        streamIDs = streams.map(\.id)
        streamSources = fabric.sources[task]
        streamFieldCounts = streams.map(\.fields.count)
        bufferState = ThreadState(Buffers(outgoing: Array(repeating: [], count: fabric.plan.tasks.count),
                                          control: Array(repeating: [], count: fabric.plan.tasks.count)))
        batchTuples = fabric.topology.config.emitBatchTuples
        var chainedByTask = [ChainedBolt.Entry?](repeating: nil, count: fabric.plan.tasks.count)
        var chained: [ChainedBolt] = []
        for chainedTask in fabric.plan.chained(onto: task) {
            guard case .bolt(let make)? = fabric.topology.component(fabric.plan.tasks[chainedTask].component)?.kind else { continue }
            let bolt = ChainedBolt(fabric: fabric, task: chainedTask, bolt: make())
            chainedByTask[chainedTask] = bolt.entry
            chained.append(bolt)
        }
        self.chainedByTask = chainedByTask
        self.chained = chained
    }

    /// Prepares the bolts chained onto this task (and theirs), before the task starts;
    /// on a failure stops the topology with its message and returns false.
    func prepareChain() -> Bool {
        do {
            for bolt in chained { try bolt.prepare() }
            return true
        } catch {
            fabric.fail("\(error)")
            return false
        }
    }

    /// Cleans up the chained bolts after the task stopped.
    func cleanupChain() {
        for bolt in chained { bolt.cleanup() }
    }

    var emittedSinceFlush: Int { buffers.pointee.emittedSinceFlush }

    /// A bolt input was acked (counted at the next flush).
    func countAck() { buffers.pointee.ackedSinceFlush += 1 }

    /// The position of a declared stream whose fields match `valueCount` among the
    /// component's streams, or nil (the emit is dropped and counted).
    func streamIndex(of stream: String, valueCount: Int) -> Int? {
        var index = 0
        while index < streamIDs.count && streamIDs[index] != stream { index += 1 }
        guard index < streamIDs.count, streamFieldCounts[index] == valueCount else {
            metrics.droppedEmits.add(1, ordering: .relaxed)
            return nil
        }
        return index
    }

    func source(ofStream index: Int) -> Unmanaged<TupleSource> { streamSources[index] }

    func enqueue(_ tuple: consuming Tuple, to target: Int) {
        if let chainedBolt = chainedByTask[target] {
            buffers.pointee.emittedSinceFlush += 1
            chainedBolt.execute(&tuple)
            return
        }
        tuple.storeValuesInline()
        let buffers = self.buffers
        if buffers.pointee.outgoing[target].isEmpty {
            buffers.pointee.dirtyTasks.append(target)
            buffers.pointee.outgoing[target].reserveCapacity(batchTuples)
        }
        buffers.pointee.outgoing[target].append(consume tuple)
        buffers.pointee.emittedSinceFlush += 1
        if buffers.pointee.outgoing[target].count >= batchTuples { flush(target) }
    }

    func sendControl(_ message: ControlQueue.Message, to spoutTask: Int) {
        let buffers = self.buffers
        if buffers.pointee.control[spoutTask].isEmpty { buffers.pointee.dirtyControl.append(spoutTask) }
        buffers.pointee.control[spoutTask].append(message)
    }

    /// Hands the buffer itself to the queue (no per-tuple copy); the next emit to this
    /// target starts a new one.
    private func flush(_ target: Int) {
        guard !buffers.pointee.outgoing[target].isEmpty else { return }
        let batch = buffers.pointee.outgoing[target]
        buffers.pointee.outgoing[target] = []
        if let queue = fabric.inputQueues[target] {
            queue.push(batch)
        } else {
            fabric.remote?.send(tuples: batch, to: target)
        }
    }

    /// Hands every buffered tuple and ack to its destination.
    /// Metrics go out in an order that never shows work done before it exists: this
    /// task's emitted count first, then the chained bolts (their output, then what
    /// they executed), then the buffers.
    func flushAll() {
        let buffers = self.buffers
        if buffers.pointee.emittedSinceFlush > 0 {
            metrics.emitted.add(buffers.pointee.emittedSinceFlush, ordering: .relaxed)
            buffers.pointee.emittedSinceFlush = 0
        }
        if buffers.pointee.ackedSinceFlush > 0 {
            metrics.acked.add(buffers.pointee.ackedSinceFlush, ordering: .relaxed)
            buffers.pointee.ackedSinceFlush = 0
        }
        for bolt in chained { bolt.flush() }
        for target in buffers.pointee.dirtyTasks { flush(target) }
        buffers.pointee.dirtyTasks.removeAll(keepingCapacity: true)
        for spoutTask in buffers.pointee.dirtyControl where !buffers.pointee.control[spoutTask].isEmpty {
            let messages = buffers.pointee.control[spoutTask]
            buffers.pointee.control[spoutTask].removeAll(keepingCapacity: true)
            if let queue = fabric.controlQueues[spoutTask] {
                queue.push(messages)
            } else {
                fabric.remote?.send(control: messages, toSpout: spoutTask)
            }
        }
        buffers.pointee.dirtyControl.removeAll(keepingCapacity: true)
    }
}
