/// One field of a tuple. A closed set of types rather than `Any`, so that tuples cross
/// process boundaries (stream managers, topics) without a serializer registry, and so
/// that fields grouping hashes the same value to the same task in every process.
public enum TupleValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    /// Several values in one field: composite streamlet elements (key-value pairs,
    /// windows) and lists.
    case list([TupleValue])

    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    public var intValue: Int64? { if case .int(let value) = self { value } else { nil } }
    public var doubleValue: Double? {
        switch self {
        case .double(let value): value
        case .int(let value): Double(value)
        default: nil
        }
    }
    public var boolValue: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var bytesValue: [UInt8]? { if case .bytes(let value) = self { value } else { nil } }
    public var listValue: [TupleValue]? { if case .list(let value) = self { value } else { nil } }
}

extension TupleValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
}

extension TupleValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .int(let value): "\(value)"
        case .double(let value): "\(value)"
        case .string(let value): value
        case .bytes(let value): "<\(value.count) bytes>"
        case .list(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// A 64-bit hash of values that is the same in every process and every run (Swift's
/// `Hasher` is seeded per process): FNV-1a over a tagged encoding of each value, with
/// 64-bit numbers mixed in one multiply.
/// Fields and partial-key groupings route with it, so a key reaches the same task
/// whichever container emitted it.
struct StableHash {
    private(set) var value: UInt64
    private static let prime: UInt64 = 0x0000_0100_0000_01B3

    init(seed: UInt64 = 0xCBF2_9CE4_8422_2325) { value = seed }

    private mutating func add(byte: UInt8) {
        value = (value ^ UInt64(byte)) &* Self.prime
    }

    /// A whole word in one step (numbers are most keys; `finalized` mixes the rest).
    private mutating func add(word: UInt64) {
        value = (value ^ word) &* 0x9E37_79B9_7F4A_7C15
        value ^= value >> 32
    }

    mutating func add(_ tupleValue: TupleValue) {
        switch tupleValue {
        case .null: add(byte: 0)
        case .bool(let value): add(byte: 1); add(byte: value ? 1 : 0)
        case .int(let value): add(byte: 2); add(word: UInt64(bitPattern: value))
        case .double(let value): add(byte: 3); add(word: value.bitPattern)
        case .string(let value):
            add(byte: 4)
            for byte in value.utf8 { add(byte: byte) }
            add(byte: 0xFF)
        case .bytes(let value):
            add(byte: 5)
            add(word: UInt64(value.count))
            for byte in value { add(byte: byte) }
        case .list(let values):
            add(byte: 6)
            add(word: UInt64(values.count))
            for element in values { add(element) }
        }
    }

    /// Mixes the final state (FNV's low bits are weak for `% taskCount`).
    var finalized: UInt64 {
        var z = value
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return z ^ (z >> 33)
    }
}

/// The values of one tuple. An emit's array is kept as it is while the tuple stays on
/// the emitting thread (a chained bolt gets it without a copy); a tuple of up to two
/// values that goes into another task's queue has them moved inline
/// (`storeInline`), so the receiving thread never frees an array the emitting thread
/// allocated (glibc's cross-thread frees cost more than the rest of the hand-over),
/// and short strings and numbers travel without reference counting.
public struct TupleValues: RandomAccessCollection, Sendable, Hashable, ExpressibleByArrayLiteral, CustomStringConvertible {
    @usableFromInline enum Storage: Sendable {
        case array([TupleValue])
        case one(TupleValue)
        case two(TupleValue, TupleValue)
    }

    @usableFromInline var storage: Storage

    /// Up to two values inline, more in the array. Inlinable so that at an emit like
    /// `collector.emit([.int(k), .string(w)])` the optimizer sees the literal's count
    /// and never allocates its array.
    @inlinable @inline(__always)
    public init(inlining values: [TupleValue]) {
        switch values.count {
        case 1: storage = .one(values[0])
        case 2: storage = .two(values[0], values[1])
        // A copy, so that `values` never escapes: the literal's array can live on the
        // stack.
        default: storage = .array(values.map { $0 })
        }
    }

    public init() { storage = .array([]) }
    public init(_ values: [TupleValue]) { storage = .array(values) }
    public init(_ value: TupleValue) { storage = .one(value) }
    public init(_ first: TupleValue, _ second: TupleValue) { storage = .two(first, second) }
    public init(arrayLiteral elements: TupleValue...) { self.init(elements) }
    public init<S: Sequence<TupleValue>>(_ values: S) { self.init(Array(values)) }

    /// Moves one or two values out of their array (which is released here).
    mutating func storeInline() {
        guard case .array(let values) = storage else { return }
        switch values.count {
        case 1: storage = .one(values[0])
        case 2: storage = .two(values[0], values[1])
        default: break
        }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    @inline(__always) public var count: Int {
        switch storage {
        case .array(let values): values.count
        case .one: 1
        case .two: 2
        }
    }

    public subscript(position: Int) -> TupleValue {
        switch storage {
        case .array(let values):
            return values[position]
        case .one(let value):
            precondition(position == 0, "tuple value index \(position) out of range 0..<1")
            return value
        case .two(let first, let second):
            precondition(position == 0 || position == 1, "tuple value index \(position) out of range 0..<2")
            return position == 0 ? first : second
        }
    }

    /// The values as an array (allocates unless they are in one).
    public var array: [TupleValue] {
        if case .array(let values) = storage { return values }
        return Array(self)
    }

    public static func == (left: TupleValues, right: TupleValues) -> Bool { left.elementsEqual(right) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for value in self { hasher.combine(value) }
    }

    public var description: String { "[" + map(\.description).joined(separator: ", ") + "]" }
}
