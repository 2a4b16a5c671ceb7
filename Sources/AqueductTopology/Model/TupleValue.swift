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
/// `Hasher` is seeded per process): FNV-1a over a tagged encoding of each value.
/// Fields and partial-key groupings route with it, so a key reaches the same task
/// whichever container emitted it.
struct StableHash {
    private(set) var value: UInt64
    private static let prime: UInt64 = 0x0000_0100_0000_01B3

    init(seed: UInt64 = 0xCBF2_9CE4_8422_2325) { value = seed }

    private mutating func add(byte: UInt8) {
        value = (value ^ UInt64(byte)) &* Self.prime
    }

    private mutating func add(word: UInt64) {
        var word = word
        for _ in 0..<8 {
            add(byte: UInt8(truncatingIfNeeded: word))
            word >>= 8
        }
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
