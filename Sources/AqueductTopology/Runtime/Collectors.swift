import Synchronization

/// What a spout emits with. Used from the spout's own thread only.
public final class SpoutCollector {
    struct State {
        var ledger: AckLedger
        /// Outcomes to hand to the spout's ack/fail once the current call returns (a
        /// spout is never re-entered from inside its own emit).
        var outcomes: [AckLedger.Outcome] = []
        /// The time of the current `nextTuple` call (read once per call, not per emit).
        var now: UInt64 = 0
    }

    let emitter: Emitter
    private let threadState: ThreadState<State>
    var state: UnsafeMutablePointer<State> { threadState.pointer }

    init(emitter: Emitter, now: UInt64) {
        self.emitter = emitter
        let timeout = UInt64(emitter.fabric.topology.config.messageTimeoutMilliseconds) * 1_000_000
        threadState = ThreadState(State(ledger: AckLedger(timeoutNanos: timeout, now: now)))
    }

    /// Emits a tuple on `stream`. With a `messageID` and at-least-once processing, the
    /// tuple's tree is tracked and the spout's `ack` or `fail` is called with the id.
    public func emit(_ values: [TupleValue], stream: String = Streams.default, messageID: TupleValue? = nil) {
        emit(values, stream: stream, messageID: messageID, directTask: nil)
    }

    /// Emits to one task of a component subscribed to `stream` with direct grouping.
    public func emitDirect(task: Int, _ values: [TupleValue], stream: String = Streams.default, messageID: TupleValue? = nil) {
        guard emitter.router.pointee.acceptsDirect(stream: stream, task: task) else {
            emitter.metrics.droppedEmits.add(1, ordering: .relaxed)
            return
        }
        emit(values, stream: stream, messageID: messageID, directTask: task)
    }

    private func emit(_ values: [TupleValue], stream: String, messageID: TupleValue?, directTask: Int?) {
        guard let origin = emitter.source(of: stream, valueCount: values.count) else { return }
        let emitter = self.emitter
        let source = emitter.task
        let targets = emitter.targets
        targets.pointee.removeAll(keepingCapacity: true)
        if let directTask { targets.pointee.append(directTask) } else {
            emitter.router.pointee.targets(stream: stream, values: values, sourceTask: source, into: &targets.pointee)
        }
        guard let messageID, emitter.reliable else {
            for target in targets.pointee { emitter.enqueue(Tuple(source: origin, values: values, anchors: .none), to: target) }
            if let messageID { state.pointee.outcomes.append(.completed(messageID: messageID, latencyNanos: 0)) }
            return
        }
        let root = TupleRoot(task: source, key: emitter.random.pointee.nonzero())
        var treeValue: UInt64 = 0
        for target in targets.pointee {
            let edge = emitter.random.pointee.nonzero()
            treeValue ^= edge
            emitter.enqueue(Tuple(source: origin, values: values, anchors: .one(root, edge: edge)), to: target)
        }
        if let outcome = state.pointee.ledger.begin(key: root.key, value: treeValue, messageID: messageID, now: state.pointee.now) {
            state.pointee.outcomes.append(outcome)
        }
    }

    /// Tuple trees of this task not yet complete.
    public var pendingCount: Int { state.pointee.ledger.pendingCount }
}

/// What a bolt emits, acks and fails with. Used from the bolt's own thread only.
public final class BoltCollector {
    let emitter: Emitter
    /// XOR of the edge ids emitted anchored to each input not yet acked, by delivery id.
    private let ackValueState = ThreadState(UInt64Table<UInt64>())
    private var ackValues: UnsafeMutablePointer<UInt64Table<UInt64>> { ackValueState.pointer }

    init(emitter: Emitter) { self.emitter = emitter }

    /// Emits a tuple on `stream`, anchored to `anchors` (its inputs): the tuple joins
    /// their trees, and a failure downstream replays them from the spout.
    public func emit(_ values: [TupleValue], stream: String = Streams.default, anchors: [Tuple] = []) {
        emit(values, stream: stream, anchors: anchors, directTask: nil)
    }

    /// Emits a tuple anchored to one input.
    public func emit(_ values: [TupleValue], stream: String = Streams.default, anchor: Tuple) {
        emit(values, stream: stream, anchors: CollectionOfOne(anchor), directTask: nil)
    }

    /// Emits to one task of a component subscribed to `stream` with direct grouping.
    public func emitDirect(task: Int, _ values: [TupleValue], stream: String = Streams.default, anchors: [Tuple] = []) {
        guard emitter.router.pointee.acceptsDirect(stream: stream, task: task) else {
            emitter.metrics.droppedEmits.add(1, ordering: .relaxed)
            return
        }
        emit(values, stream: stream, anchors: anchors, directTask: task)
    }

    private func emit(_ values: [TupleValue], stream: String, anchors: some Collection<Tuple>, directTask: Int?) {
        guard let origin = emitter.source(of: stream, valueCount: values.count) else { return }
        let emitter = self.emitter
        let source = emitter.task
        let targets = emitter.targets
        targets.pointee.removeAll(keepingCapacity: true)
        if let directTask { targets.pointee.append(directTask) } else {
            emitter.router.pointee.targets(stream: stream, values: values, sourceTask: source, into: &targets.pointee)
        }
        let anchored = emitter.reliable && anchors.contains { !$0.anchors.isEmpty }
        if !anchored {
            for target in targets.pointee { emitter.enqueue(Tuple(source: origin, values: values, anchors: .none), to: target) }
            return
        }
        let ackValues = self.ackValues
        for target in targets.pointee {
            var out = TupleAnchors.none
            for anchor in anchors where !anchor.anchors.isEmpty {
                let edge = emitter.random.pointee.nonzero()
                ackValues.pointee[anchor.deliveryID] = (ackValues.pointee[anchor.deliveryID] ?? 0) ^ edge
                anchor.anchors.forEach { root, _ in out.xor(root, edge) }
            }
            emitter.enqueue(Tuple(source: origin, values: values, anchors: out), to: target)
        }
    }

    /// The input is done with: its part of each tree it belongs to is complete.
    public func ack(_ input: Tuple) {
        emitter.metrics.acked.add(1, ordering: .relaxed)
        guard !input.anchors.isEmpty else { return }
        let value = ackValues.pointee.removeValue(forKey: input.deliveryID) ?? 0
        input.anchors.forEach { root, edge in emitter.sendControl(.ack(key: root.key, value: edge ^ value), to: root.task) }
    }

    /// The input could not be processed: every tree it belongs to fails at once, and
    /// the spouts replay them.
    public func fail(_ input: Tuple) {
        emitter.metrics.failed.add(1, ordering: .relaxed)
        guard !input.anchors.isEmpty else { return }
        ackValues.pointee.removeValue(forKey: input.deliveryID)
        input.anchors.forEach { root, _ in emitter.sendControl(.fail(key: root.key), to: root.task) }
    }

    /// Inputs with anchored emits that are not acked yet (a bolt that never acks
    /// shows here, and its spouts see timeouts).
    public var unackedAnchoredInputs: Int { ackValues.pointee.count }
}

/// A `BasicBolt`'s collector: emits are anchored to the current input.
public struct BasicCollector {
    let collector: BoltCollector
    let input: Tuple

    public func emit(_ values: [TupleValue], stream: String = Streams.default) {
        collector.emit(values, stream: stream, anchor: input)
    }
}
