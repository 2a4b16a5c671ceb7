import Synchronization

/// Names of a stream's fields, in order, shared by every tuple of the stream.
public final class Fields: Sendable, CustomStringConvertible {
    public let names: [String]
    private let indexByName: [String: Int]

    public init(_ names: [String]) {
        self.names = names
        var index: [String: Int] = [:]
        for (position, name) in names.enumerated() where index[name] == nil { index[name] = position }
        indexByName = index
    }

    /// Streams with at most this many fields are searched by comparing names (short
    /// names compare in a few instructions; hashing one with SipHash costs more).
    static let linearSearchFieldsMax = 8

    public func index(of name: String) -> Int? {
        if names.count <= Self.linearSearchFieldsMax {
            for (position, candidate) in names.enumerated() where candidate == name { return position }
            return nil
        }
        return indexByName[name]
    }
    public var count: Int { names.count }
    public var description: String { "[" + names.joined(separator: ", ") + "]" }
}

/// Well-known stream and component names. Names starting with "__" are reserved.
/// Computed and inlinable: every emit's default `stream:` argument is a literal, not a
/// global behind a once-check.
public enum Streams {
    @inlinable public static var `default`: String { "default" }
    /// Tick tuples: sent by the runtime to a bolt configured with a tick frequency.
    @inlinable public static var tick: String { "__tick" }
    @inlinable public static var systemComponent: String { "__system" }
}

/// A spout tuple's identity in the tuple trees it roots: the spout task that tracks it
/// and a random key. Heron keeps the task in the root so acks find their way home
/// without an acker component.
struct TupleRoot: Hashable, Sendable {
    var task: Int
    var key: UInt64
}

/// The roots a tuple belongs to, each with the edge id of this tuple in that tree
/// (Storm's anchors-to-ids). Almost every tuple has none or one, kept inline.
enum TupleAnchors: Sendable {
    case none
    case one(TupleRoot, edge: UInt64)
    case many([TupleRoot: UInt64])

    var isEmpty: Bool { if case .none = self { true } else { false } }

    func forEach(_ body: (TupleRoot, UInt64) -> Void) {
        switch self {
        case .none: break
        case .one(let root, let edge): body(root, edge)
        case .many(let roots): for (root, edge) in roots { body(root, edge) }
        }
    }

    /// XORs `edge` into the entry of `root`, adding it when absent.
    mutating func xor(_ root: TupleRoot, _ edge: UInt64) {
        switch self {
        case .none: self = .one(root, edge: edge)
        case .one(let existing, let existingEdge):
            if existing == root {
                self = .one(root, edge: existingEdge ^ edge)
            } else {
                self = .many([existing: existingEdge, root: edge])
            }
        case .many(var roots):
            roots[root, default: 0] ^= edge
            self = .many(roots)
        }
    }
}

/// Where tuples of one stream come from: shared by all tuples an emitting task sends on
/// that stream, so a tuple carries one pointer instead of names and field lists.
///
/// Sources are immortal (created retained, never released: a few hundred bytes per
/// submitted topology) and tuples hold them unmanaged: a shared object's
/// reference count, written by the emitting and the executing thread for every tuple,
/// cost more than the rest of a tuple's trip (cache-line ping-pong between cores).
final class TupleSource: Sendable {
    let component: String
    let task: Int
    let stream: String
    /// The stream's position among its component's declared streams (its name on the
    /// wire between containers).
    let streamIndex: Int
    let fields: Fields

    private init(component: String, task: Int, stream: String, streamIndex: Int, fields: Fields) {
        self.component = component
        self.task = task
        self.stream = stream
        self.streamIndex = streamIndex
        self.fields = fields
    }

    static func immortal(component: String, task: Int, stream: String, streamIndex: Int = 0, fields: Fields) -> TupleSource {
        let source = TupleSource(component: component, task: task, stream: stream, streamIndex: streamIndex, fields: fields)
        _ = Unmanaged.passRetained(source)
        return source
    }

    /// Sources of tuples built outside a topology (`Tuple(values:fields:)`), shared by
    /// equal descriptions so that building many does not grow memory.
    private static let made = Mutex<[String: TupleSource]>([:])

    static func shared(component: String, task: Int, stream: String, fields: [String]) -> TupleSource {
        let key = "\(component)\u{0}\(task)\u{0}\(stream)\u{0}" + fields.joined(separator: "\u{0}")
        return made.withLock { made in
            if let known = made[key] { return known }
            let source = immortal(component: component, task: task, stream: stream, fields: Fields(fields))
            made[key] = source
            return source
        }
    }
}

/// One tuple as a bolt sees it: values with the field names of their stream, where
/// it came from, and (internally) its place in the tuple trees it belongs to.
public struct Tuple: Sendable, CustomStringConvertible {
    private let sourceReference: Unmanaged<TupleSource>
    public private(set) var values: TupleValues
    var anchors: TupleAnchors
    /// Set by the receiving instance: the key under which the anchored emits of this
    /// tuple accumulate their edge ids until it is acked.
    var deliveryID: UInt64 = 0

    var source: TupleSource { sourceReference.takeUnretainedValue() }

    /// Before the tuple leaves its thread (see `TupleValues`).
    mutating func storeValuesInline() { values.storeInline() }

    init(source: Unmanaged<TupleSource>, values: TupleValues, anchors: TupleAnchors) {
        self.sourceReference = source
        self.values = values
        self.anchors = anchors
    }

    /// A tuple built by a test or a tool, outside any topology.
    public init(values: [TupleValue], fields: [String], sourceComponent: String = "test", sourceTask: Int = 0, stream: String = Streams.default) {
        self.init(source: Unmanaged.passUnretained(TupleSource.shared(component: sourceComponent, task: sourceTask, stream: stream, fields: fields)),
                  values: TupleValues(values), anchors: .none)
    }

    public var sourceComponent: String { source.component }
    public var sourceTask: Int { source.task }
    public var stream: String { source.stream }
    public var fields: Fields { source.fields }

    public var isTick: Bool { source.stream == Streams.tick && source.component == Streams.systemComponent }

    public subscript(index: Int) -> TupleValue { values[index] }

    /// The value of field `name`; `.null` when the stream has no such field.
    public subscript(name: String) -> TupleValue {
        guard let index = source.fields.index(of: name), index < values.count else { return .null }
        return values[index]
    }

    public func string(_ name: String) -> String? { self[name].stringValue }
    public func int(_ name: String) -> Int64? { self[name].intValue }
    public func double(_ name: String) -> Double? { self[name].doubleValue }

    public var description: String {
        "\(sourceComponent):\(sourceTask)/\(stream) " + "[" + values.map(\.description).joined(separator: ", ") + "]"
    }
}
