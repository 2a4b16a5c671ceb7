import Foundation

/// The fields of every streamlet stream.
let streamletFields = ["key", "value"]

/// Components of a streamlet topology: the operation plus the streams it declares.
enum StreamletComponent {
    struct WrappedSpout: Spout {
        var inner: any Spout
        let streams: [String]
        func declareOutputFields(_ declarer: inout OutputDeclarer) {
            for stream in streams { declarer.declareStream(stream, fields: streamletFields) }
        }
        mutating func open(context: TopologyContext, collector: SpoutCollector) throws { try inner.open(context: context, collector: collector) }
        mutating func nextTuple() { inner.nextTuple() }
        mutating func ack(_ messageID: TupleValue) { inner.ack(messageID) }
        mutating func fail(_ messageID: TupleValue) { inner.fail(messageID) }
        mutating func activate() { inner.activate() }
        mutating func deactivate() { inner.deactivate() }
        mutating func close() { inner.close() }
    }

    struct WrappedBolt: Bolt {
        var inner: any Bolt
        let streams: [String]
        func declareOutputFields(_ declarer: inout OutputDeclarer) {
            for stream in streams { declarer.declareStream(stream, fields: streamletFields) }
        }
        var tickFrequencySeconds: Double? { inner.tickFrequencySeconds }
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { try inner.prepare(context: context, collector: collector) }
        mutating func execute(_ tuple: Tuple) { inner.execute(tuple) }
        mutating func cleanup() { inner.cleanup() }
    }

    static func spout(_ make: @escaping @Sendable () -> any Spout, streams: [String]) -> WrappedSpout {
        WrappedSpout(inner: make(), streams: streams)
    }

    static func bolt(_ make: @escaping @Sendable () -> any Bolt, streams: [String]) -> WrappedBolt {
        WrappedBolt(inner: make(), streams: streams)
    }
}

struct SupplierSpout<T: StreamletElement>: Spout {
    let supplier: @Sendable () -> T?
    var collector: SpoutCollector?
    func declareOutputFields(_ declarer: inout OutputDeclarer) {}
    mutating func open(context: TopologyContext, collector: SpoutCollector) throws { self.collector = collector }
    mutating func nextTuple() {
        if let element = supplier() { collector?.emit([.null, element.tupleValue]) }
    }
}

struct SourceSpout<S: StreamletSource>: Spout {
    var source: S
    var collector: SpoutCollector?
    func declareOutputFields(_ declarer: inout OutputDeclarer) {}
    mutating func open(context: TopologyContext, collector: SpoutCollector) throws {
        self.collector = collector
        try source.setup(context: context)
    }
    mutating func nextTuple() {
        for element in source.get() { collector?.emit([.null, element.tupleValue]) }
    }
    mutating func close() { source.cleanup() }
}

/// One element in, any number out (anchored to the input), then the input is acked.
/// An input that does not decode as `T` is failed.
struct ElementBolt<T: StreamletElement>: Bolt {
    let body: @Sendable (T, (TupleValue, TupleValue) -> Void) -> Void
    var collector: BoltCollector?

    init(_ body: @escaping @Sendable (T, (TupleValue, TupleValue) -> Void) -> Void) { self.body = body }

    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        guard let element = tuple.streamletElement(T.self) else {
            collector.fail(tuple)
            return
        }
        body(element) { key, value in collector.emit([key, value], anchor: tuple) }
        collector.ack(tuple)
    }
}

struct PassBolt: Bolt {
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        collector?.emit(tuple.values, anchor: tuple)
        collector?.ack(tuple)
    }
}

struct SplitBolt<T: StreamletElement>: Bolt {
    let names: [String]
    let predicates: [@Sendable (T) -> Bool]
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        guard let element = tuple.streamletElement(T.self) else {
            collector.fail(tuple)
            return
        }
        for (index, predicate) in predicates.enumerated() where predicate(element) {
            collector.emit(tuple.values, stream: names[index], anchor: tuple)
        }
        collector.ack(tuple)
    }
}

struct ReduceBolt<K: StreamletElement & Hashable, V: StreamletElement>: Bolt {
    let reduce: @Sendable (V, V) -> V
    var state: [K: V] = [:]
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        guard let pair = tuple.streamletElement(KeyValue<K, V>.self) else {
            collector.fail(tuple)
            return
        }
        let reduced = state[pair.key].map { reduce($0, pair.value) } ?? pair.value
        state[pair.key] = reduced
        collector.emit([tuple.values[0], KeyValue(pair.key, reduced).tupleValue], anchor: tuple)
        collector.ack(tuple)
    }
}

/// Milliseconds since 1970 (window boundaries are wall-clock processing time).
func wallMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

/// Windowed reduction per key. Inputs are acked when added to their windows: a window's
/// result is emitted once, unanchored (a failure downstream does not replay the inputs).
struct WindowBolt<K: StreamletElement & Hashable, V: StreamletElement>: Bolt {
    var windows: WindowedReduce<K, V>
    var collector: BoltCollector?

    init(config: WindowConfig, reduce: @escaping @Sendable (V, V) -> V) {
        windows = WindowedReduce(config: config, reduce: reduce)
    }

    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        if tuple.isTick {
            emit(windows.close(nowMilliseconds: wallMilliseconds()))
            return
        }
        guard let pair = tuple.streamletElement(KeyValue<K, V>.self) else {
            collector.fail(tuple)
            return
        }
        emit(windows.add(key: pair.key, value: pair.value, nowMilliseconds: wallMilliseconds()))
        collector.ack(tuple)
    }

    private func emit(_ closed: [WindowedReduce<K, V>.Closed]) {
        for window in closed {
            let keyed = KeyedWindow(key: window.key, start: window.start, end: window.end, count: window.count)
            collector?.emit([keyed.tupleValue, KeyValue(keyed, window.value).tupleValue])
        }
    }
}

struct JoinBolt<K: StreamletElement & Hashable, L: StreamletElement, R: StreamletElement, Out: StreamletElement>: Bolt {
    let leftComponent: String
    var join: WindowedJoin<K, L, R>
    let combine: @Sendable (L?, R?) -> Out
    var collector: BoltCollector?

    init(leftComponent: String, config: WindowConfig, type: JoinType, combine: @escaping @Sendable (L?, R?) -> Out) {
        self.leftComponent = leftComponent
        join = WindowedJoin(config: config, type: type)
        self.combine = combine
    }

    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        if tuple.isTick {
            emit(join.close(nowMilliseconds: wallMilliseconds()))
            return
        }
        let now = wallMilliseconds()
        if tuple.sourceComponent == leftComponent {
            guard let pair = tuple.streamletElement(KeyValue<K, L>.self) else { collector.fail(tuple); return }
            emit(join.add(key: pair.key, left: pair.value, right: nil, nowMilliseconds: now))
        } else {
            guard let pair = tuple.streamletElement(KeyValue<K, R>.self) else { collector.fail(tuple); return }
            emit(join.add(key: pair.key, left: nil, right: pair.value, nowMilliseconds: now))
        }
        collector.ack(tuple)
    }

    private func emit(_ joined: [WindowedJoin<K, L, R>.Joined]) {
        for pair in joined {
            let keyed = KeyedWindow(key: pair.key, start: pair.start, end: pair.end, count: 1)
            collector?.emit([keyed.tupleValue, KeyValue(keyed, combine(pair.left, pair.right)).tupleValue])
        }
    }
}

struct SinkBolt<S: StreamletSink>: Bolt {
    var sink: S
    var collector: BoltCollector?
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws {
        self.collector = collector
        try sink.setup(context: context)
    }
    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        guard let element = tuple.streamletElement(S.Element.self) else {
            collector.fail(tuple)
            return
        }
        sink.put(element)
        collector.ack(tuple)
    }
    mutating func cleanup() { sink.cleanup() }
}

extension Tuple {
    /// The element of a streamlet tuple ([key, element]) decoded as `type`; nil when
    /// the tuple is not one (the bolts fail it).
    func streamletElement<Element: StreamletElement>(_ type: Element.Type) -> Element? {
        values.count == 2 ? Element(tupleValue: values[1]) : nil
    }
}
