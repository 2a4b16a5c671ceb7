import Foundation
import Synchronization

/// Limits of the instance loops.
enum InstanceLimits {
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
        // The component lives in a local for the loop: calls on a class's stored
        // property would pay a dynamic exclusivity check each.
        var spout = self.spout
        guard collector.emitter.prepareChain() else { return }
        defer { collector.emitter.cleanupChain() }
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
                    if let outcome = collector.state.pointee.ledger.ack(key: key, value: value, now: now) { collector.state.pointee.outcomes.append(outcome) }
                case .fail(let key):
                    if let outcome = collector.state.pointee.ledger.fail(key: key) { collector.state.pointee.outcomes.append(outcome) }
                }
            }
            collector.state.pointee.outcomes += collector.state.pointee.ledger.expire(now: now)
            deliverOutcomes(to: &spout)

            let shouldBeActive = fabric.isActive
            if shouldBeActive != active {
                active = shouldBeActive
                if active { spout.activate() } else { spout.deactivate() }
            }
            waitNanos = InstanceLimits.idleWaitNanos
            guard active, !fabric.gate.isEngaged else { continue }
            var calls = 0
            while calls < InstanceLimits.nextTupleCallsPerTurn && collector.state.pointee.ledger.pendingCount < maxPending && !fabric.gate.isEngaged {
                let before = collector.emitter.emittedSinceFlush
                let outcomesBefore = collector.state.pointee.outcomes.count
                collector.state.pointee.now = fabric.clock.nanoseconds()
                spout.nextTuple()
                calls += 1
                if collector.emitter.emittedSinceFlush == before && collector.state.pointee.outcomes.count == outcomesBefore { break }
                waitNanos = 0
                if !collector.state.pointee.outcomes.isEmpty { deliverOutcomes(to: &spout) }
            }
            collector.emitter.flushAll()
        }
        if active { spout.deactivate() }
        spout.close()
    }

    /// Hands finished trees to the spout's ack and fail; metrics are updated once per
    /// call (one atomic add and one histogram lock, not one per tree).
    private func deliverOutcomes(to spout: inout any Spout) {
        guard !collector.state.pointee.outcomes.isEmpty else { return }
        let outcomes = collector.state.pointee.outcomes
        collector.state.pointee.outcomes.removeAll(keepingCapacity: true)
        var latencies: [UInt64] = []
        var acked = 0
        var failed = 0
        var timedOut = 0
        for outcome in outcomes {
            switch outcome {
            case .completed(let messageID, let latency):
                acked += 1
                if latency > 0 { latencies.append(latency) }
                spout.ack(messageID)
            case .failed(let messageID, let reason):
                failed += 1
                if reason == .timedOut { timedOut += 1 }
                spout.fail(messageID)
            }
        }
        if acked > 0 { metrics.acked.add(acked, ordering: .relaxed) }
        if failed > 0 { metrics.failed.add(failed, ordering: .relaxed) }
        if timedOut > 0 { metrics.timedOut.add(timedOut, ordering: .relaxed) }
        metrics.recordComplete(latenciesNanos: latencies)
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
        var bolt = self.bolt
        guard collector.emitter.prepareChain() else { return }
        defer { collector.emitter.cleanupChain() }
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
        let tickSource = Unmanaged.passUnretained(TupleSource.immortal(component: Streams.systemComponent, task: -1, stream: Streams.tick, fields: Fields([])))
        var deliveryID: UInt64 = 0
        while fabric.isRunning {
            var waitNanos = InstanceLimits.boltWaitNanos
            if let due = nextTick {
                let now = clock.nanoseconds()
                waitNanos = due > now ? min(waitNanos, due - now) : 0
            }
            guard var batch = queue.take(timeoutNanos: waitNanos) else { break }
            if !batch.isEmpty {
                let started = clock.nanoseconds()
                // Through the buffer: each tuple is lent to execute, not copied (and
                // retained, released) out of the array.
                batch.withUnsafeMutableBufferPointer { tuples in
                    for index in tuples.indices {
                        deliveryID &+= 1
                        tuples[index].deliveryID = deliveryID
                        bolt.execute(tuples[index])
                    }
                }
                metrics.executeNanos.add(clock.nanoseconds() &- started, ordering: .relaxed)
            }
            if let due = nextTick, let tickNanos, clock.nanoseconds() >= due {
                bolt.execute(Tuple(source: tickSource, values: [], anchors: .none))
                nextTick = due + tickNanos
                if nextTick! < clock.nanoseconds() { nextTick = clock.nanoseconds() + tickNanos }
            }
            collector.emitter.flushAll()
            // After the batch's emits were counted: whoever sees every emitted tuple
            // executed (tests, benchmarks waiting for a job to drain) never sees this
            // batch done before its output exists.
            if !batch.isEmpty { metrics.executed.add(batch.count, ordering: .relaxed) }
        }
        bolt.cleanup()
    }
}

/// A bolt task chained onto another task's thread (`TopologyConfig.chaining`): its
/// host's emit calls `execute` directly; its own output is flushed with the host's.
final class ChainedBolt {
    struct Counters {
        var deliveryID: UInt64 = 0
        var executedSinceFlush = 0
    }

    private let fabric: Fabric
    private let task: Int
    private let boltState: ThreadState<any Bolt>
    private let counterState = ThreadState(Counters())
    let collector: BoltCollector
    private let metrics: InstanceMetrics

    init(fabric: Fabric, task: Int, bolt: any Bolt) {
        self.fabric = fabric
        self.task = task
        boltState = ThreadState(bolt)
        metrics = fabric.metrics[task]
        collector = BoltCollector(emitter: Emitter(fabric: fabric, task: task))
    }

    struct PrepareFailed: Error, CustomStringConvertible {
        let description: String
    }

    /// Prepares the bolts chained onto this one, then this one.
    func prepare() throws {
        for bolt in collector.emitter.chained { try bolt.prepare() }
        let context = fabric.context(for: task)
        do {
            try boltState.pointer.pointee.prepare(context: context, collector: collector)
        } catch {
            metrics.errors.add(1, ordering: .relaxed)
            throw PrepareFailed(description: "bolt \(context.componentID) task \(task): prepare failed: \(error)")
        }
    }

    /// The state an emit needs to run this bolt, as plain pointers (valid while this
    /// object lives).
    struct Entry {
        let bolt: UnsafeMutablePointer<any Bolt>
        let counters: UnsafeMutablePointer<Counters>

        /// In place: the tuple is not copied again on its way into `execute`.
        @inline(__always)
        func execute(_ tuple: inout Tuple) {
            counters.pointee.deliveryID &+= 1
            tuple.deliveryID = counters.pointee.deliveryID
            bolt.pointee.execute(tuple)
            counters.pointee.executedSinceFlush += 1
        }
    }

    var entry: Entry { Entry(bolt: boltState.pointer, counters: counterState.pointer) }

    /// Hands this bolt's output over, then counts what it executed (output first: see
    /// `BoltInstance.run`).
    func flush() {
        collector.emitter.flushAll()
        let counters = counterState.pointer
        if counters.pointee.executedSinceFlush > 0 {
            metrics.executed.add(counters.pointee.executedSinceFlush, ordering: .relaxed)
            counters.pointee.executedSinceFlush = 0
        }
    }

    func cleanup() {
        boltState.pointer.pointee.cleanup()
        collector.emitter.cleanupChain()
    }
}
