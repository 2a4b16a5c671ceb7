import Foundation
import Synchronization

/// Runs topologies inside this process, every task on its own thread (Storm's
/// LocalCluster, Heron's simulator): for tests, examples and development.
public final class LocalCluster: Sendable {
    private let clock: any TopologyClock

    public init(clock: any TopologyClock = MonotonicClock()) {
        self.clock = clock
    }

    /// Starts every task of `topology` and returns a handle to it.
    public func submit(_ topology: Topology) -> RunningTopology {
        RunningTopology(topology: topology, clock: clock)
    }
}

/// A topology running in this process.
public final class RunningTopology: Sendable {
    public let topology: Topology
    public var plan: PhysicalPlan { fabric.plan }
    let fabric: Fabric
    private let finished = Mutex<[DispatchSemaphore]?>(nil)
    private let killed = Mutex(false)

    init(topology: Topology, clock: any TopologyClock, container: Int? = nil, deferStart: Bool = false) {
        self.topology = topology
        fabric = Fabric(topology: topology, clock: clock, container: container)
        if !deferStart { startTasks() }
    }

    /// Starts a thread per task of this container (once).
    func startTasks() {
        let fabric = self.fabric
        let topology = self.topology
        let started = finished.withLock { finished -> Bool in
            guard finished == nil else { return false }
            finished = []
            return true
        }
        guard started else { return }
        for task in fabric.plan.threadTasks(in: fabric.container) {
            let info = fabric.plan.tasks[task]
            guard let spec = topology.component(info.component) else { continue }
            let done = DispatchSemaphore(value: 0)
            finished.withLock { $0?.append(done) }
            let thread = Thread {
                switch spec.kind {
                case .spout(let make): SpoutInstance(fabric: fabric, task: task, spout: make()).run()
                case .bolt(let make): BoltInstance(fabric: fabric, task: task, bolt: make()).run()
                }
                done.signal()
            }
            thread.name = "\(info.component)#\(task)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Spouts start (or resume) calling `nextTuple`.
    public func activate() { fabric.setActive(true) }

    /// Spouts stop calling `nextTuple`; tuples in flight are still processed and acked.
    public func deactivate() { fabric.setActive(false) }

    /// Stops every task (spouts are deactivated and closed, bolts cleaned up) and waits
    /// for their threads. Tuples still queued are dropped: at-least-once sources replay
    /// what was not acked.
    public func kill() {
        let first = killed.withLock { killed in
            defer { killed = true }
            return !killed
        }
        guard first else { return }
        fabric.stop()
        for done in finished.withLock({ $0 ?? [] }) { done.wait() }
    }

    /// Failures of user code (open or prepare threw); the topology stopped at the first.
    public var errors: [String] { fabric.errors }
    public var isRunning: Bool { fabric.isRunning }

    public func metrics() -> TopologyMetrics {
        let backpressure = fabric.gate.totals()
        let local = Set(fabric.localTasks)
        let tasks = fabric.plan.tasks.filter { local.contains($0.id) }.map { task -> TaskMetrics in
            let metrics = fabric.metrics[task.id]
            let executed = metrics.executed.load(ordering: .relaxed)
            let latency = metrics.completeLatencyPercentiles()
            let queue = fabric.inputQueues[task.id]
            return TaskMetrics(
                task: task.id, component: task.component, container: task.container,
                emitted: metrics.emitted.load(ordering: .relaxed), executed: executed,
                acked: metrics.acked.load(ordering: .relaxed), failed: metrics.failed.load(ordering: .relaxed),
                timedOut: metrics.timedOut.load(ordering: .relaxed), droppedEmits: metrics.droppedEmits.load(ordering: .relaxed),
                errors: metrics.errors.load(ordering: .relaxed),
                executeLatencyMicros: executed == 0 ? 0 : Double(metrics.executeNanos.load(ordering: .relaxed)) / Double(executed) / 1_000,
                completeLatencyP50Micros: Double(latency.p50) / 1_000, completeLatencyP99Micros: Double(latency.p99) / 1_000,
                queueDepth: queue?.depth ?? 0, backpressureMillis: Double(queue?.backpressureNanos ?? 0) / 1e6)
        }
        return TopologyMetrics(topology: topology.name, tasks: tasks, backpressureMillis: Double(backpressure.nanos) / 1e6,
                               backpressureEpisodes: backpressure.episodes)
    }

    /// Polls the metrics until `condition` holds or `timeoutSeconds` pass (tests).
    public func waitUntil(timeoutSeconds: Double, pollMilliseconds: Int = 10, _ condition: (TopologyMetrics) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if condition(metrics()) { return true }
            if !fabric.isRunning { return condition(metrics()) }
            Thread.sleep(forTimeInterval: Double(pollMilliseconds) / 1_000)
        }
        return condition(metrics())
    }

    deinit {
        fabric.stop()
    }
}
