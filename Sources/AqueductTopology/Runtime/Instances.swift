import Foundation
import Synchronization

/// Limits of the instance loops.
enum InstanceLimits {
    /// Input tuples a bolt takes from its queue per turn.
    static let drainTuplesMax = 1_024
    /// `nextTuple` calls per spout turn before buffers are handed over and acks read.
    static let nextTupleCallsPerTurn = 1_024
    /// How long an idle instance sleeps before it looks again (Storm's spout wait).
    static let idleWaitNanos: UInt64 = 1_000_000
    /// How long a bolt with an empty queue sleeps at most (ticks, shutdown).
    static let boltWaitNanos: UInt64 = 100_000_000
}

/// Runs one spout task on its own thread: reads acks, expires trees, and calls
/// `nextTuple` while the topology is active, the pending limit allows and no
/// backpressure holds the spouts back.
final class SpoutInstance {
    private let fabric: Fabric
    private let task: Int
    private var spout: any Spout
    private let collector: SpoutCollector
    private let metrics: InstanceMetrics

    init(fabric: Fabric, task: Int, spout: any Spout) {
        self.fabric = fabric
        self.task = task
        self.spout = spout
        metrics = fabric.metrics[task]
        collector = SpoutCollector(emitter: Emitter(fabric: fabric, task: task), now: fabric.clock.nanoseconds())
    }

    func run() {
        let context = fabric.context(for: task)
        do {
            try spout.open(context: context, collector: collector)
        } catch {
            metrics.errors.add(1, ordering: .relaxed)
            fabric.fail("spout \(context.componentID) task \(task): open failed: \(error)")
            return
        }
        let control = fabric.controlQueues[task]!
        let maxPending = fabric.topology.config.maxSpoutPending ?? Int.max
        var messages: [ControlQueue.Message] = []
        var active = false
        var waitNanos: UInt64 = 0
        while fabric.isRunning {
            control.drain(into: &messages, timeoutNanos: waitNanos)
            let now = fabric.clock.nanoseconds()
            for message in messages {
                switch message {
                case .ack(let key, let value):
                    if let outcome = collector.ledger.ack(key: key, value: value, now: now) { collector.outcomes.append(outcome) }
                case .fail(let key):
                    if let outcome = collector.ledger.fail(key: key) { collector.outcomes.append(outcome) }
                }
            }
            collector.outcomes += collector.ledger.expire(now: now)
            deliverOutcomes()

            let shouldBeActive = fabric.isActive
            if shouldBeActive != active {
                active = shouldBeActive
                if active { spout.activate() } else { spout.deactivate() }
            }
            waitNanos = InstanceLimits.idleWaitNanos
            guard active, !fabric.gate.isEngaged else { continue }
            var calls = 0
            while calls < InstanceLimits.nextTupleCallsPerTurn && collector.ledger.pendingCount < maxPending && !fabric.gate.isEngaged {
                let before = metrics.emitted.load(ordering: .relaxed)
                let outcomesBefore = collector.outcomes.count
                spout.nextTuple()
                calls += 1
                if metrics.emitted.load(ordering: .relaxed) == before && collector.outcomes.count == outcomesBefore { break }
                waitNanos = 0
                if !collector.outcomes.isEmpty { deliverOutcomes() }
            }
            collector.emitter.flushAll()
        }
        if active { spout.deactivate() }
        spout.close()
    }

    private func deliverOutcomes() {
        guard !collector.outcomes.isEmpty else { return }
        let outcomes = collector.outcomes
        collector.outcomes.removeAll(keepingCapacity: true)
        for outcome in outcomes {
            switch outcome {
            case .completed(let messageID, let latency):
                metrics.acked.add(1, ordering: .relaxed)
                if latency > 0 { metrics.recordComplete(latencyNanos: latency) }
                spout.ack(messageID)
            case .failed(let messageID, let reason):
                metrics.failed.add(1, ordering: .relaxed)
                if reason == .timedOut { metrics.timedOut.add(1, ordering: .relaxed) }
                spout.fail(messageID)
            }
        }
    }
}

/// Runs one bolt task on its own thread: takes batches from its input queue, calls
/// `execute` for each tuple (and for ticks when due), hands its output over per batch.
final class BoltInstance {
    private let fabric: Fabric
    private let task: Int
    private var bolt: any Bolt
    private let collector: BoltCollector
    private let metrics: InstanceMetrics

    init(fabric: Fabric, task: Int, bolt: any Bolt) {
        self.fabric = fabric
        self.task = task
        self.bolt = bolt
        metrics = fabric.metrics[task]
        collector = BoltCollector(emitter: Emitter(fabric: fabric, task: task))
    }

    func run() {
        let context = fabric.context(for: task)
        do {
            try bolt.prepare(context: context, collector: collector)
        } catch {
            metrics.errors.add(1, ordering: .relaxed)
            fabric.fail("bolt \(context.componentID) task \(task): prepare failed: \(error)")
            return
        }
        let queue = fabric.inputQueues[task]!
        let clock = fabric.clock
        let tickNanos = fabric.topology.component(context.componentID)?.config.tickFrequencySeconds.map { UInt64($0 * 1e9) }
        var nextTick = tickNanos.map { clock.nanoseconds() + $0 }
        let tickFields = Fields([])
        var batch: [Tuple] = []
        batch.reserveCapacity(InstanceLimits.drainTuplesMax)
        var deliveryID: UInt64 = 0
        while fabric.isRunning {
            var waitNanos = InstanceLimits.boltWaitNanos
            if let due = nextTick {
                let now = clock.nanoseconds()
                waitNanos = due > now ? min(waitNanos, due - now) : 0
            }
            guard queue.drain(into: &batch, maxTuples: InstanceLimits.drainTuplesMax, timeoutNanos: waitNanos) else { break }
            if !batch.isEmpty {
                let started = clock.nanoseconds()
                for index in batch.indices {
                    deliveryID &+= 1
                    batch[index].deliveryID = deliveryID
                    bolt.execute(batch[index])
                }
                metrics.executeNanos.add(clock.nanoseconds() &- started, ordering: .relaxed)
                metrics.executed.add(batch.count, ordering: .relaxed)
            }
            if let due = nextTick, let tickNanos, clock.nanoseconds() >= due {
                bolt.execute(Tuple(sourceComponent: Streams.systemComponent, sourceTask: -1, stream: Streams.tick, fields: tickFields, values: [], anchors: .none))
                nextTick = due + tickNanos
                if nextTick! < clock.nanoseconds() { nextTick = clock.nanoseconds() + tickNanos }
            }
            collector.emitter.flushAll()
        }
        bolt.cleanup()
    }
}
