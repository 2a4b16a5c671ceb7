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
        // Generations start at a random value, so acks meant for an earlier run of this
        // task (a restarted container) do not match this run's trees.
        let generationSeed = UInt32(truncatingIfNeeded: emitter.random.pointee.next())
        threadState = ThreadState(State(ledger: AckLedger(timeoutNanos: timeout, now: now, generationSeed: generationSeed)))
    }

    /// Emits a tuple on `stream`. With a `messageID` and at-least-once processing, the
    /// tuple's tree is tracked and the spout's `ack` or `fail` is called with the id.
    @inlinable @inline(__always)
    public func emit(_ values: [TupleValue], stream: String = Streams.default, messageID: TupleValue? = nil) {
        emit(TupleValues(inlining: values), stream: stream, messageID: messageID)
    }

    /// The same with values already in a tuple's form (no array).
    public func emit(_ values: consuming TupleValues, stream: String = Streams.default, messageID: TupleValue? = nil) {
        emit(values, stream: stream, messageID: messageID, directTask: nil)
    }

    /// Emits to one task of a component subscribed to `stream` with direct grouping.
    public func emitDirect(task: Int, _ values: [TupleValue], stream: String = Streams.default, messageID: TupleValue? = nil) {
        guard emitter.router.pointee.acceptsDirect(stream: stream, task: task) else {
            emitter.metrics.droppedEmits.add(1, ordering: .relaxed)
            return
        }
        emit(TupleValues(values), stream: stream, messageID: messageID, directTask: task)
    }

    private func emit(_ values: consuming TupleValues, stream: String, messageID: TupleValue?, directTask: Int?) {
        let emitter = self.emitter
        guard let streamIndex = emitter.streamIndex(of: stream, valueCount: values.count) else { return }
        let origin = emitter.source(ofStream: streamIndex)
        let tracked = messageID != nil && emitter.reliable
        let root = tracked ? TupleRoot(task: emitter.task, key: state.pointee.ledger.reserve()) : nil
        var treeValue: UInt64 = 0
        if let target = directTask ?? emitter.router.pointee.fixedTarget(streamIndex: streamIndex) {
            treeValue = send(values, origin, root: root, to: target)
        } else {
            let targets = emitter.targets
            targets.pointee.removeAll(keepingCapacity: true)
            emitter.router.pointee.targets(streamIndex: streamIndex, values: values, sourceTask: emitter.task, into: &targets.pointee)
            // Copies for all destinations but the last, which gets the values themselves.
            let count = targets.pointee.count
            var position = 0
            while position + 1 < count {
                treeValue ^= send(copy values, origin, root: root, to: targets.pointee[position])
                position += 1
            }
            if count > 0 { treeValue ^= send(values, origin, root: root, to: targets.pointee[count - 1]) }
        }
        guard let messageID else { return }
        guard let root else {
            state.pointee.outcomes.append(.completed(messageID: messageID, latencyNanos: 0))
            return
        }
        if let outcome = state.pointee.ledger.begin(key: root.key, value: treeValue, messageID: messageID, now: state.pointee.now) {
            state.pointee.outcomes.append(outcome)
        }
    }

    /// Sends one copy of a spout tuple; returns its edge id in the tree (0 untracked).
    @inline(__always)
    private func send(_ values: consuming TupleValues, _ origin: Unmanaged<TupleSource>, root: TupleRoot?, to target: Int) -> UInt64 {
        guard let root else {
            emitter.enqueue(Tuple(source: origin, values: values, anchors: .none), to: target)
            return 0
        }
        let edge = emitter.random.pointee.nonzero()
        emitter.enqueue(Tuple(source: origin, values: values, anchors: .one(root, edge: edge)), to: target)
        return edge
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
    @inlinable @inline(__always)
    public func emit(_ values: [TupleValue], stream: String = Streams.default, anchors: [Tuple] = []) {
        emit(TupleValues(inlining: values), stream: stream, anchors: anchors)
    }

    /// The same with values already in a tuple's form (no array).
    public func emit(_ values: TupleValues, stream: String = Streams.default, anchors: [Tuple] = []) {
        emit(values, stream: stream, anchors: anchors, directTask: nil)
    }

    /// Emits a tuple anchored to one input.
    @inlinable @inline(__always)
    public func emit(_ values: [TupleValue], stream: String = Streams.default, anchor: Tuple) {
        emit(TupleValues(inlining: values), stream: stream, anchor: anchor)
    }

    /// Emits a tuple anchored to one input, with values already in a tuple's form
    /// (`collector.emit(input.values, anchor: input)` passes them on without an array).
    public func emit(_ values: consuming TupleValues, stream: String = Streams.default, anchor: Tuple) {
        let emitter = self.emitter
        // The common case of a bolt (one anchor, one destination) without the general
        // path's target list and anchor collection.
        guard let streamIndex = emitter.streamIndex(of: stream, valueCount: values.count) else { return }
        guard let target = emitter.router.pointee.fixedTarget(streamIndex: streamIndex) else {
            emit(values, stream: stream, anchors: CollectionOfOne(anchor), directTask: nil, streamIndex: streamIndex)
            return
        }
        let origin = emitter.source(ofStream: streamIndex)
        guard emitter.reliable, !anchor.anchors.isEmpty else {
            emitter.enqueue(Tuple(source: origin, values: values, anchors: .none), to: target)
            return
        }
        let edge = emitter.random.pointee.nonzero()
        let ackValues = self.ackValues
        ackValues.pointee[anchor.deliveryID] = (ackValues.pointee[anchor.deliveryID] ?? 0) ^ edge
        var out = TupleAnchors.none
        anchor.anchors.forEach { root, _ in out.xor(root, edge) }
        emitter.enqueue(Tuple(source: origin, values: values, anchors: out), to: target)
    }

    /// Emits to one task of a component subscribed to `stream` with direct grouping.
    public func emitDirect(task: Int, _ values: [TupleValue], stream: String = Streams.default, anchors: [Tuple] = []) {
        guard emitter.router.pointee.acceptsDirect(stream: stream, task: task) else {
            emitter.metrics.droppedEmits.add(1, ordering: .relaxed)
            return
        }
        emit(TupleValues(values), stream: stream, anchors: anchors, directTask: task)
    }

    private func emit(_ values: TupleValues, stream: String, anchors: some Collection<Tuple>, directTask: Int?, streamIndex known: Int? = nil) {
        let emitter = self.emitter
        guard let streamIndex = known ?? emitter.streamIndex(of: stream, valueCount: values.count) else { return }
        let origin = emitter.source(ofStream: streamIndex)
        let source = emitter.task
        let targets = emitter.targets
        targets.pointee.removeAll(keepingCapacity: true)
        if let directTask { targets.pointee.append(directTask) } else {
            emitter.router.pointee.targets(streamIndex: streamIndex, values: values, sourceTask: source, into: &targets.pointee)
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
        emitter.countAck()
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
    @usableFromInline let collector: BoltCollector
    @usableFromInline let input: Tuple

    @inlinable @inline(__always)
    public func emit(_ values: [TupleValue], stream: String = Streams.default) {
        collector.emit(TupleValues(inlining: values), stream: stream, anchor: input)
    }

    public func emit(_ values: TupleValues, stream: String = Streams.default) {
        collector.emit(values, stream: stream, anchor: input)
    }
}
