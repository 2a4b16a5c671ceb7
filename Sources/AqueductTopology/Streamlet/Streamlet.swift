/// Heron's Streamlet API: typed, functional stream processing compiled into a topology.
/// Every operation becomes a bolt (sources become spouts), so a streamlet program runs
/// wherever topologies run: in-process with `LocalCluster`, or in the service.
///
///     let builder = StreamletBuilder()
///     builder.source { sentences.randomElement() }
///         .flatMap { $0.split(separator: " ").map(String.init) }
///         .countByKeyAndWindow(key: { $0 }, window: .slidingTime(milliseconds: 10_000, slideMilliseconds: 2_000))
///         .consume { print($0.key.key, $0.value) }
///     let topology = try builder.build(name: "windowed-counts")
///
/// Tuples of streamlet streams have two fields: "key" (the grouping key of keyed
/// streams, null otherwise) and "value" (the element, as a `TupleValue`).
public final class StreamletBuilder {
    final class Node {
        enum Kind {
            case spout(@Sendable () -> any Spout)
            case bolt(@Sendable () -> any Bolt, inputs: [(node: Node, stream: String, grouping: Grouping)])
        }
        var id: String
        var parallelism = 1
        var kind: Kind
        var streams: [String] = [Streams.default]
        var tickSeconds: Double?

        init(id: String, kind: Kind) {
            self.id = id
            self.kind = kind
        }
    }

    private(set) var nodes: [Node] = []
    private var problems: [String] = []
    private var counter = 0

    public init() {}

    func add(_ operation: String, _ kind: Node.Kind) -> Node {
        counter += 1
        let node = Node(id: "\(operation)\(counter)", kind: kind)
        nodes.append(node)
        return node
    }

    func problem(_ text: String) { problems.append(text) }

    /// A source that calls `supplier` for each element; nil means none right now.
    /// Elements are not replayed on failure (use a topic source for that).
    public func source<T: StreamletElement>(_ supplier: @escaping @Sendable () -> T?) -> Streamlet<T> {
        Streamlet(builder: self, node: add("source", .spout({ SupplierSpout(supplier: supplier) })), stream: Streams.default)
    }

    /// A source object that hands out batches of elements (Heron's Source).
    public func source<S: StreamletSource & SendableMetatype>(_ make: @autoclosure @escaping @Sendable () -> S) -> Streamlet<S.Element> {
        Streamlet(builder: self, node: add("source", .spout({ SourceSpout(source: make()) })), stream: Streams.default)
    }

    /// Compiles the streamlets into a validated topology.
    public func build(name: String, config: TopologyConfig = TopologyConfig()) throws(TopologyError) -> Topology {
        if !problems.isEmpty { throw TopologyError(problems: problems) }
        var seen: [String: Int] = [:]
        for node in nodes { seen[node.id, default: 0] += 1 }
        let duplicates = seen.filter { $0.value > 1 }.map(\.key).sorted()
        if !duplicates.isEmpty { throw TopologyError(problems: ["streamlet names used twice: \(duplicates.joined(separator: ", "))"]) }
        let topology = TopologyBuilder()
        for node in nodes {
            switch node.kind {
            case .spout(let make):
                let streams = node.streams
                topology.setSpout(node.id, StreamletComponent.spout(make, streams: streams), parallelism: node.parallelism)
            case .bolt(let make, let inputs):
                let streams = node.streams
                let declarer = topology.setBolt(node.id, StreamletComponent.bolt(make, streams: streams), parallelism: node.parallelism)
                for input in inputs { declarer.grouping(input.node.id, stream: input.stream, input.grouping) }
                if let tick = node.tickSeconds { declarer.tickFrequency(seconds: tick) }
            }
        }
        return try topology.build(name: name, config: config)
    }
}

/// A typed stream of elements (Heron's Streamlet<R>).
public struct Streamlet<T: StreamletElement> {
    let builder: StreamletBuilder
    let node: StreamletBuilder.Node
    let stream: String

    /// Names the component this streamlet's operation runs as (unique in the topology).
    @discardableResult
    public func setName(_ name: String) -> Streamlet<T> {
        node.id = name
        return self
    }

    /// Tasks running this streamlet's operation.
    @discardableResult
    public func setNumPartitions(_ count: Int) -> Streamlet<T> {
        node.parallelism = count
        return self
    }

    private func then<U: StreamletElement>(_ operation: String, grouping: Grouping = .shuffle,
                                           _ make: @escaping @Sendable () -> any Bolt) -> Streamlet<U> {
        let next = builder.add(operation, .bolt(make, inputs: [(node, stream, grouping)]))
        return Streamlet<U>(builder: builder, node: next, stream: Streams.default)
    }

    public func map<U: StreamletElement>(_ transform: @escaping @Sendable (T) -> U) -> Streamlet<U> {
        then("map") { ElementBolt<T> { element, emit in emit(.null, transform(element).tupleValue) } }
    }

    public func flatMap<U: StreamletElement>(_ transform: @escaping @Sendable (T) -> [U]) -> Streamlet<U> {
        then("flatMap") { ElementBolt<T> { element, emit in for output in transform(element) { emit(.null, output.tupleValue) } } }
    }

    public func filter(_ isIncluded: @escaping @Sendable (T) -> Bool) -> Streamlet<T> {
        then("filter") { ElementBolt<T> { element, emit in if isIncluded(element) { emit(.null, element.tupleValue) } } }
    }

    /// The elements of this streamlet and `other`.
    public func union(_ other: Streamlet<T>) -> Streamlet<T> {
        let next = builder.add("union", .bolt({ PassBolt() }, inputs: [(node, stream, .shuffle), (other.node, other.stream, .shuffle)]))
        return Streamlet<T>(builder: builder, node: next, stream: Streams.default)
    }

    /// `count` streamlets that each see every element.
    public func clone(_ count: Int) -> [Streamlet<T>] {
        if count < 1 { builder.problem("clone needs a count of at least 1 (is \(count))") }
        return Array(repeating: self, count: max(count, 1))
    }

    /// Routes each element to every named stream whose predicate holds.
    public func split(_ predicates: [String: @Sendable (T) -> Bool]) -> SplitStreamlet<T> {
        let names = predicates.keys.sorted()
        let ordered = names.map { predicates[$0]! }
        let next = builder.add("split", .bolt({ SplitBolt<T>(names: names, predicates: ordered) }, inputs: [(node, stream, .shuffle)]))
        next.streams = names
        if names.isEmpty { builder.problem("split needs at least one named predicate") }
        for name in names where name.isEmpty || name.hasPrefix("__") { builder.problem("split stream name \"\(name)\" is empty or reserved") }
        return SplitStreamlet(builder: builder, node: next)
    }

    /// Keys each element: the result is grouped by key downstream.
    public func keyBy<K: StreamletElement & Hashable, V: StreamletElement>(
        key: @escaping @Sendable (T) -> K, value: @escaping @Sendable (T) -> V
    ) -> Streamlet<KeyValue<K, V>> {
        then("keyBy") {
            ElementBolt<T> { element, emit in
                let k = key(element)
                emit(k.tupleValue, KeyValue(k, value(element)).tupleValue)
            }
        }
    }

    /// Per key and window, the reduction of the values (Heron's reduceByKeyAndWindow).
    public func reduceByKeyAndWindow<K: StreamletElement & Hashable, V: StreamletElement>(
        key: @escaping @Sendable (T) -> K, value: @escaping @Sendable (T) -> V, window: WindowConfig,
        reduce: @escaping @Sendable (V, V) -> V
    ) -> Streamlet<KeyValue<KeyedWindow<K>, V>> {
        if let problem = window.problem { builder.problem(problem) }
        let keyed = keyBy(key: key, value: value)
        let next: Streamlet<KeyValue<KeyedWindow<K>, V>> = keyed.then("window", grouping: .fields(["key"])) {
            WindowBolt<K, V>(config: window, reduce: reduce)
        }
        if window.isTime { next.node.tickSeconds = Double(window.tickMilliseconds) / 1_000 }
        return next
    }

    /// Per key and window, how many elements (Heron's countByKeyAndWindow).
    public func countByKeyAndWindow<K: StreamletElement & Hashable>(
        key: @escaping @Sendable (T) -> K, window: WindowConfig
    ) -> Streamlet<KeyValue<KeyedWindow<K>, Int64>> {
        reduceByKeyAndWindow(key: key, value: { _ in Int64(1) }, window: window, reduce: +)
    }

    /// Pairs elements of this streamlet and `other` with equal keys in the same window.
    /// Outer joins call `combine` with nil for the side that had no match.
    public func join<U: StreamletElement, K: StreamletElement & Hashable, R: StreamletElement>(
        _ other: Streamlet<U>, key: @escaping @Sendable (T) -> K, otherKey: @escaping @Sendable (U) -> K,
        window: WindowConfig, type: JoinType = .inner, combine: @escaping @Sendable (T?, U?) -> R
    ) -> Streamlet<KeyValue<KeyedWindow<K>, R>> {
        if let problem = window.problem { builder.problem(problem) }
        let left = keyBy(key: key, value: { $0 })
        let right = other.keyBy(key: otherKey, value: { $0 })
        let leftName = left.node.id  // an internal node: never renamed
        let next = builder.add("join", .bolt({ JoinBolt<K, T, U, R>(leftComponent: leftName, config: window, type: type, combine: combine) },
                                              inputs: [(left.node, Streams.default, .fields(["key"])), (right.node, Streams.default, .fields(["key"]))]))
        if window.isTime { next.tickSeconds = Double(window.tickMilliseconds) / 1_000 }
        return Streamlet<KeyValue<KeyedWindow<K>, R>>(builder: builder, node: next, stream: Streams.default)
    }

    /// Prints each element (standard output, one line each).
    @discardableResult
    public func log() -> StreamletSinkHandle {
        consume { print("\($0)") }
    }

    /// Calls `body` with each element.
    @discardableResult
    public func consume(_ body: @escaping @Sendable (T) -> Void) -> StreamletSinkHandle {
        let next = builder.add("consume", .bolt({ ElementBolt<T> { element, _ in body(element) } }, inputs: [(node, stream, .shuffle)]))
        next.streams = []
        return StreamletSinkHandle(node: next)
    }

    /// Hands each element to a sink object (one per task).
    @discardableResult
    public func toSink<S: StreamletSink & SendableMetatype>(_ make: @autoclosure @escaping @Sendable () -> S) -> StreamletSinkHandle where S.Element == T {
        let next = builder.add("sink", .bolt({ SinkBolt(sink: make()) }, inputs: [(node, stream, .shuffle)]))
        next.streams = []
        return StreamletSinkHandle(node: next)
    }
}

extension Streamlet {
    /// Running reduction per key (emitted on each element).
    public func reduceByKey<K: StreamletElement & Hashable, V: StreamletElement>(_ reduce: @escaping @Sendable (V, V) -> V) -> Streamlet<KeyValue<K, V>>
    where T == KeyValue<K, V> {
        then("reduce", grouping: .fields(["key"])) { ReduceBolt<K, V>(reduce: reduce) }
    }
}

/// The named streams of a `split`.
public struct SplitStreamlet<T: StreamletElement> {
    let builder: StreamletBuilder
    let node: StreamletBuilder.Node

    public func withStream(_ name: String) -> Streamlet<T> {
        if !node.streams.contains(name) { builder.problem("split has no stream \"\(name)\" (streams: \(node.streams.joined(separator: ", ")))") }
        return Streamlet(builder: builder, node: node, stream: name)
    }
}

/// The end of a streamlet chain; can be named and partitioned like the others.
public struct StreamletSinkHandle {
    let node: StreamletBuilder.Node

    @discardableResult
    public func setName(_ name: String) -> StreamletSinkHandle {
        node.id = name
        return self
    }

    @discardableResult
    public func setNumPartitions(_ count: Int) -> StreamletSinkHandle {
        node.parallelism = count
        return self
    }
}

/// A source of elements with a lifecycle (Heron's Source).
public protocol StreamletSource {
    associatedtype Element: StreamletElement
    mutating func setup(context: TopologyContext) throws
    /// Elements ready now (empty when none).
    mutating func get() -> [Element]
    mutating func cleanup()
}

extension StreamletSource {
    public mutating func setup(context: TopologyContext) throws {}
    public mutating func cleanup() {}
}

/// A destination of elements with a lifecycle (Heron's Sink).
public protocol StreamletSink {
    associatedtype Element: StreamletElement
    mutating func setup(context: TopologyContext) throws
    mutating func put(_ element: Element)
    mutating func cleanup()
}

extension StreamletSink {
    public mutating func setup(context: TopologyContext) throws {}
    public mutating func cleanup() {}
}
