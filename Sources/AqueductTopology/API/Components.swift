/// The streams a component emits, declared once when the topology is built.
public struct OutputDeclarer: Sendable {
    struct Stream: Sendable {
        var id: String
        var fields: Fields
        var direct: Bool
    }
    private(set) var streams: [Stream] = []
    private(set) var problems: [String] = []

    init() {}

    /// Declares the fields of the default stream.
    public mutating func declare(_ fields: [String], direct: Bool = false) {
        declareStream(Streams.default, fields: fields, direct: direct)
    }

    /// Declares a named stream. A `direct` stream is emitted with `emitDirect` only and
    /// subscribed to with direct grouping.
    public mutating func declareStream(_ id: String, fields: [String], direct: Bool = false) {
        if id.isEmpty || id.hasPrefix("__") {
            problems.append("stream id \"\(id)\" is empty or reserved (\"__\" prefix)")
        } else if streams.contains(where: { $0.id == id }) {
            problems.append("stream \"\(id)\" declared twice")
        }
        if Set(fields).count != fields.count {
            problems.append("stream \"\(id)\" declares a field twice: \(fields)")
        }
        streams.append(Stream(id: id, fields: Fields(fields), direct: direct))
    }
}

/// What an instance knows about its place in the running topology.
public struct TopologyContext: Sendable {
    public let topologyName: String
    public let componentID: String
    /// This instance's task id, unique in the topology.
    public let taskID: Int
    /// 0..<parallelism: the position of this task among its component's tasks.
    public let taskIndex: Int
    /// The task ids of this component, in order.
    public let componentTasks: [Int]
    /// Per-component settings from the builder, then topology-wide ones.
    public let configuration: [String: TupleValue]
    let tasksByComponent: [String: [Int]]

    /// The task ids of any component of the topology.
    public func tasks(of component: String) -> [Int] { tasksByComponent[component] ?? [] }
}

/// A source of tuples (Storm's ISpout). The runtime calls every method from the
/// instance's own thread, never concurrently. `nextTuple` must not block: emit what is
/// ready (or nothing) and return; the runtime waits briefly when nothing was emitted.
public protocol Spout {
    func declareOutputFields(_ declarer: inout OutputDeclarer)
    mutating func open(context: TopologyContext, collector: SpoutCollector) throws
    mutating func nextTuple()
    /// The tuple tree of `messageID` was fully processed.
    mutating func ack(_ messageID: TupleValue)
    /// The tuple tree of `messageID` failed or timed out: replay it if it must not be lost.
    mutating func fail(_ messageID: TupleValue)
    mutating func activate()
    mutating func deactivate()
    mutating func close()
}

extension Spout {
    public mutating func open(context: TopologyContext, collector: SpoutCollector) throws {}
    public mutating func ack(_ messageID: TupleValue) {}
    public mutating func fail(_ messageID: TupleValue) {}
    public mutating func activate() {}
    public mutating func deactivate() {}
    public mutating func close() {}
}

/// A processing step (Storm's IRichBolt): `execute` is called for each input tuple and
/// each tick, from the instance's own thread. With at-least-once processing, every
/// input must be acked or failed, now or later.
public protocol Bolt {
    func declareOutputFields(_ declarer: inout OutputDeclarer)
    /// Seconds between tick tuples this bolt needs (Storm's component configuration);
    /// the builder's `tickFrequency` overrides it. Default nil: none.
    var tickFrequencySeconds: Double? { get }
    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws
    mutating func execute(_ tuple: Tuple)
    mutating func cleanup()
}

extension Bolt {
    public var tickFrequencySeconds: Double? { nil }
    public func declareOutputFields(_ declarer: inout OutputDeclarer) {}
    public mutating func prepare(context: TopologyContext, collector: BoltCollector) throws {}
    public mutating func cleanup() {}
}

/// A bolt whose emits are anchored to the input and whose input is acked when
/// `execute` returns (Storm's IBasicBolt); throwing fails the input instead.
public protocol BasicBolt {
    func declareOutputFields(_ declarer: inout OutputDeclarer)
    mutating func prepare(context: TopologyContext) throws
    mutating func execute(_ tuple: Tuple, collector: BasicCollector) throws
    mutating func cleanup()
}

extension BasicBolt {
    public func declareOutputFields(_ declarer: inout OutputDeclarer) {}
    public mutating func prepare(context: TopologyContext) throws {}
    public mutating func cleanup() {}
}

/// Adapts a `BasicBolt` to `Bolt`: anchoring and acking done for it.
struct BasicBoltRunner<Wrapped: BasicBolt>: Bolt {
    var wrapped: Wrapped
    var collector: BoltCollector?

    func declareOutputFields(_ declarer: inout OutputDeclarer) { wrapped.declareOutputFields(&declarer) }

    mutating func prepare(context: TopologyContext, collector: BoltCollector) throws {
        self.collector = collector
        try wrapped.prepare(context: context)
    }

    mutating func execute(_ tuple: Tuple) {
        guard let collector else { return }
        let basic = BasicCollector(collector: collector, input: tuple)
        do {
            try wrapped.execute(tuple, collector: basic)
            collector.ack(tuple)
        } catch {
            collector.fail(tuple)
        }
    }

    mutating func cleanup() { wrapped.cleanup() }
}

/// How tuples of a stream are spread over the tasks of a subscribing component.
public enum Grouping: Sendable {
    /// Randomly, evenly.
    case shuffle
    /// By the hash of the named fields: equal values reach the same task.
    case fields([String])
    /// Every task gets a copy.
    case all
    /// All to one task (the lowest id).
    case global
    /// No preference (as shuffle).
    case none
    /// The emitter names the task (`emitDirect`); the stream must be declared direct.
    case direct
    /// Tasks in the emitter's container first, otherwise shuffle.
    case localOrShuffle
    /// By key, to the less loaded of two candidate tasks (Nasir et al., "The power of
    /// both choices"): hot keys spread over two tasks.
    case partialKey([String])
    /// User code picks the tasks; one grouping instance per emitting task.
    case custom(@Sendable () -> any CustomGrouping)
}

/// A user-defined grouping (Storm's CustomStreamGrouping).
public protocol CustomGrouping {
    mutating func prepare(targetTasks: [Int])
    /// Task ids (from `targetTasks`) that receive a tuple with `values`.
    mutating func chooseTasks(sourceTask: Int, values: [TupleValue]) -> [Int]
}
