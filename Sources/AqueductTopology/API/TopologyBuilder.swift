/// Why a topology was refused when it was built; `description` says what to change.
public struct TopologyError: Error, Sendable, CustomStringConvertible {
    public let problems: [String]
    public var description: String {
        "invalid topology: " + problems.joined(separator: "; ")
    }
}

/// A subscription of a bolt to one stream of another component.
struct Subscription: Sendable {
    var component: String
    var stream: String
    var grouping: Grouping
}

/// A component as the builder declared it and validation accepted it.
struct ComponentSpec: Sendable {
    enum Kind: Sendable {
        case spout(@Sendable () -> any Spout)
        case bolt(@Sendable () -> any Bolt)
    }
    var id: String
    var kind: Kind
    var parallelism: Int
    var streams: [OutputDeclarer.Stream]
    var inputs: [Subscription]
    var config: ComponentConfig

    var isSpout: Bool { if case .spout = kind { true } else { false } }

    func stream(_ id: String) -> OutputDeclarer.Stream? { streams.first { $0.id == id } }
}

/// A validated topology: components, their streams and subscriptions. Build one with
/// `TopologyBuilder`, run it in-process with `LocalCluster`.
public struct Topology: Sendable {
    public let name: String
    public let config: TopologyConfig
    let components: [ComponentSpec]

    public var componentIDs: [String] { components.map(\.id) }
    public func parallelism(of component: String) -> Int? { components.first { $0.id == component }?.parallelism }

    func component(_ id: String) -> ComponentSpec? { components.first { $0.id == id } }

    /// The same topology with other parallelisms (`update --parallelism`), validated again.
    public func withParallelism(_ parallelism: [String: Int]) throws(TopologyError) -> Topology {
        var problems: [String] = []
        var changed = components
        for (id, count) in parallelism {
            guard let index = changed.firstIndex(where: { $0.id == id }) else {
                problems.append("no component \"\(id)\" (components: \(componentIDs.joined(separator: ", ")))")
                continue
            }
            changed[index].parallelism = count
        }
        if !problems.isEmpty { throw TopologyError(problems: problems) }
        return try Topology.validated(name: name, config: config, components: changed)
    }
}

/// Declares spouts and bolts and how they subscribe to each other (Storm's
/// TopologyBuilder). Everything is checked by `build`, which names every problem.
///
///     let builder = TopologyBuilder()
///     builder.setSpout("sentences", SentenceSpout())
///     builder.setBolt("split", SplitBolt(), parallelism: 2).shuffleGrouping("sentences")
///     builder.setBolt("count", CountBolt(), parallelism: 4).fieldsGrouping("split", ["word"])
///     let topology = try builder.build(name: "word-count")
///
/// The component expression is evaluated once per task, so each task has its own
/// instance.
public final class TopologyBuilder {
    private var components: [ComponentSpec] = []
    private var problems: [String] = []

    public init() {}

    @discardableResult
    public func setSpout<S: Spout & SendableMetatype>(_ id: String, _ spout: @autoclosure @escaping @Sendable () -> S, parallelism: Int = 1) -> ComponentDeclarer {
        add(id, kind: .spout({ spout() }), parallelism: parallelism, streams: { declarer in spout().declareOutputFields(&declarer) })
    }

    @discardableResult
    public func setBolt<B: Bolt & SendableMetatype>(_ id: String, _ bolt: @autoclosure @escaping @Sendable () -> B, parallelism: Int = 1) -> ComponentDeclarer {
        let prototype = bolt()
        let declarer = add(id, kind: .bolt({ bolt() }), parallelism: parallelism, streams: { declarer in prototype.declareOutputFields(&declarer) })
        if let tick = prototype.tickFrequencySeconds { declarer.tickFrequency(seconds: tick) }
        return declarer
    }

    @discardableResult
    public func setBolt<B: BasicBolt & SendableMetatype>(_ id: String, _ bolt: @autoclosure @escaping @Sendable () -> B, parallelism: Int = 1) -> ComponentDeclarer {
        add(id, kind: .bolt({ BasicBoltRunner(wrapped: bolt()) }), parallelism: parallelism,
            streams: { declarer in bolt().declareOutputFields(&declarer) })
    }

    private func add(_ id: String, kind: ComponentSpec.Kind, parallelism: Int, streams: (inout OutputDeclarer) -> Void) -> ComponentDeclarer {
        var declarer = OutputDeclarer()
        streams(&declarer)
        problems += declarer.problems.map { "component \"\(id)\": \($0)" }
        components.append(ComponentSpec(id: id, kind: kind, parallelism: parallelism, streams: declarer.streams, inputs: [], config: ComponentConfig()))
        return ComponentDeclarer(builder: self, index: components.count - 1)
    }

    fileprivate func subscribe(_ index: Int, _ subscription: Subscription) {
        components[index].inputs.append(subscription)
    }

    fileprivate func configure(_ index: Int, _ change: (inout ComponentConfig) -> Void) {
        change(&components[index].config)
    }

    /// Validates the declarations and returns the topology, or throws every problem found.
    public func build(name: String, config: TopologyConfig = TopologyConfig()) throws(TopologyError) -> Topology {
        if !problems.isEmpty { throw TopologyError(problems: problems) }
        return try Topology.validated(name: name, config: config, components: components)
    }
}

/// Subscriptions and settings of the component just added (the builder chain).
public struct ComponentDeclarer {
    fileprivate let builder: TopologyBuilder
    fileprivate let index: Int

    @discardableResult
    public func grouping(_ component: String, stream: String = Streams.default, _ grouping: Grouping) -> ComponentDeclarer {
        builder.subscribe(index, Subscription(component: component, stream: stream, grouping: grouping))
        return self
    }

    @discardableResult
    public func shuffleGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .shuffle)
    }

    @discardableResult
    public func fieldsGrouping(_ component: String, _ fields: [String], stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .fields(fields))
    }

    @discardableResult
    public func allGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .all)
    }

    @discardableResult
    public func globalGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .global)
    }

    @discardableResult
    public func noneGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .none)
    }

    @discardableResult
    public func directGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .direct)
    }

    @discardableResult
    public func localOrShuffleGrouping(_ component: String, stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .localOrShuffle)
    }

    @discardableResult
    public func partialKeyGrouping(_ component: String, _ fields: [String], stream: String = Streams.default) -> ComponentDeclarer {
        grouping(component, stream: stream, .partialKey(fields))
    }

    @discardableResult
    public func customGrouping<G: CustomGrouping & SendableMetatype>(_ component: String, stream: String = Streams.default,
                                                  _ custom: @autoclosure @escaping @Sendable () -> G) -> ComponentDeclarer {
        grouping(component, stream: stream, .custom({ custom() }))
    }

    /// Sends the bolt a tick tuple (stream `Streams.tick`) every `seconds`.
    @discardableResult
    public func tickFrequency(seconds: Double) -> ComponentDeclarer {
        builder.configure(index) { $0.tickFrequencySeconds = seconds }
        return self
    }

    /// A setting only this component sees (over the topology-wide one of the same key).
    @discardableResult
    public func setting(_ key: String, _ value: TupleValue) -> ComponentDeclarer {
        builder.configure(index) { $0.settings[key] = value }
        return self
    }
}

extension Topology {
    /// Largest parallelism of one component: each task is a thread.
    static let parallelismMax = 1_024

    static func validated(name: String, config: TopologyConfig, components: [ComponentSpec]) throws(TopologyError) -> Topology {
        var problems = config.problems
        if name.isEmpty || name.contains(where: { !($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) {
            problems.append("topology name \"\(name)\" must be non-empty letters, digits, '-', '_' or '.'")
        }
        if components.isEmpty { problems.append("no components: add a spout with setSpout") }
        if !components.isEmpty && !components.contains(where: \.isSpout) { problems.append("no spout: a topology needs at least one") }
        var seen: Set<String> = []
        for component in components {
            if component.id.isEmpty || component.id.hasPrefix("__") {
                problems.append("component id \"\(component.id)\" is empty or reserved (\"__\" prefix)")
            }
            if !seen.insert(component.id).inserted { problems.append("component id \"\(component.id)\" used twice") }
            if component.parallelism < 1 || component.parallelism > parallelismMax {
                problems.append("component \"\(component.id)\": parallelism \(component.parallelism) is outside 1...\(parallelismMax)")
            }
            if let tick = component.config.tickFrequencySeconds, !(tick > 0) {
                problems.append("component \"\(component.id)\": tick frequency must be above 0 seconds (is \(tick))")
            }
        }
        let byID = Dictionary(components.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let known = components.map(\.id).joined(separator: ", ")
        for component in components {
            if component.isSpout {
                if !component.inputs.isEmpty { problems.append("spout \"\(component.id)\" cannot subscribe to streams") }
                continue
            }
            if component.inputs.isEmpty {
                problems.append("bolt \"\(component.id)\" subscribes to nothing: add a grouping (e.g. shuffleGrouping)")
            }
            for input in component.inputs {
                guard let source = byID[input.component] else {
                    problems.append("bolt \"\(component.id)\" subscribes to unknown component \"\(input.component)\" (known: \(known))")
                    continue
                }
                guard let stream = source.stream(input.stream) else {
                    let streams = source.streams.map(\.id)
                    problems.append("bolt \"\(component.id)\" subscribes to stream \"\(input.stream)\" of \"\(input.component)\", which declares "
                        + (streams.isEmpty ? "no streams" : "only \(streams.joined(separator: ", "))"))
                    continue
                }
                switch input.grouping {
                case .fields(let fields), .partialKey(let fields):
                    if fields.isEmpty { problems.append("bolt \"\(component.id)\": grouping on \"\(input.component)\" names no fields") }
                    for field in fields where stream.fields.index(of: field) == nil {
                        problems.append("bolt \"\(component.id)\" groups on field \"\(field)\" that stream \"\(input.stream)\" of \"\(input.component)\" does not have (fields: \(stream.fields))")
                    }
                case .direct:
                    if !stream.direct {
                        problems.append("bolt \"\(component.id)\" uses direct grouping on stream \"\(input.stream)\" of \"\(input.component)\", which is not declared direct")
                    }
                default:
                    if stream.direct {
                        problems.append("bolt \"\(component.id)\": stream \"\(input.stream)\" of \"\(input.component)\" is direct and needs directGrouping")
                    }
                }
            }
        }
        if let cycle = findCycle(components) {
            problems.append("cycle: " + cycle.joined(separator: " -> ") + " (tuple trees must end; subscriptions may not loop)")
        }
        if !problems.isEmpty { throw TopologyError(problems: problems) }
        return Topology(name: name, config: config, components: components)
    }

    /// A path that returns to its start, if the subscriptions have one (depth-first).
    private static func findCycle(_ components: [ComponentSpec]) -> [String]? {
        var consumers: [String: [String]] = [:]
        for component in components {
            for input in component.inputs { consumers[input.component, default: []].append(component.id) }
        }
        enum Mark { case visiting, done }
        var marks: [String: Mark] = [:]
        var path: [String] = []
        func visit(_ id: String) -> [String]? {
            if marks[id] == .done { return nil }
            if marks[id] == .visiting {
                let start = path.firstIndex(of: id) ?? 0
                return Array(path[start...]) + [id]
            }
            marks[id] = .visiting
            path.append(id)
            for next in consumers[id] ?? [] {
                if let cycle = visit(next) { return cycle }
            }
            path.removeLast()
            marks[id] = .done
            return nil
        }
        for component in components {
            if let cycle = visit(component.id) { return cycle }
        }
        return nil
    }
}
