import Foundation

/// A value a streamlet can carry between tasks: it converts to and from one
/// `TupleValue` (the wire form between containers). Standard scalars conform; so does
/// any `Codable` type that declares `StreamletElement` (as JSON bytes).
public protocol StreamletElement: Sendable {
    var tupleValue: TupleValue { get }
    init?(tupleValue: TupleValue)
}

extension String: StreamletElement {
    public var tupleValue: TupleValue { .string(self) }
    public init?(tupleValue: TupleValue) {
        guard let value = tupleValue.stringValue else { return nil }
        self = value
    }
}

extension Int: StreamletElement {
    public var tupleValue: TupleValue { .int(Int64(self)) }
    public init?(tupleValue: TupleValue) {
        guard let value = tupleValue.intValue, let int = Int(exactly: value) else { return nil }
        self = int
    }
}

extension Int64: StreamletElement {
    public var tupleValue: TupleValue { .int(self) }
    public init?(tupleValue: TupleValue) {
        guard let value = tupleValue.intValue else { return nil }
        self = value
    }
}

extension Double: StreamletElement {
    public var tupleValue: TupleValue { .double(self) }
    public init?(tupleValue: TupleValue) {
        guard let value = tupleValue.doubleValue else { return nil }
        self = value
    }
}

extension Bool: StreamletElement {
    public var tupleValue: TupleValue { .bool(self) }
    public init?(tupleValue: TupleValue) {
        guard let value = tupleValue.boolValue else { return nil }
        self = value
    }
}

extension Array: StreamletElement where Element: StreamletElement {
    public var tupleValue: TupleValue { .list(map(\.tupleValue)) }
    public init?(tupleValue: TupleValue) {
        guard let values = tupleValue.listValue else { return nil }
        var elements: [Element] = []
        for value in values {
            guard let element = Element(tupleValue: value) else { return nil }
            elements.append(element)
        }
        self = elements
    }
}

extension Optional: StreamletElement where Wrapped: StreamletElement {
    public var tupleValue: TupleValue { self?.tupleValue ?? .null }
    public init?(tupleValue: TupleValue) {
        if case .null = tupleValue {
            self = .none
        } else {
            guard let value = Wrapped(tupleValue: tupleValue) else { return nil }
            self = .some(value)
        }
    }
}

/// Codable types carry themselves as JSON: declare `StreamletElement` and nothing else.
extension StreamletElement where Self: Codable {
    public var tupleValue: TupleValue {
        .bytes((try? Array(JSONEncoder().encode(self))) ?? [])
    }
    public init?(tupleValue: TupleValue) {
        guard let bytes = tupleValue.bytesValue, let value = try? JSONDecoder().decode(Self.self, from: Data(bytes)) else { return nil }
        self = value
    }
}

/// A key and a value: the elements of a keyed streamlet.
public struct KeyValue<Key: StreamletElement & Hashable, Value: StreamletElement>: StreamletElement {
    public var key: Key
    public var value: Value

    public init(_ key: Key, _ value: Value) {
        self.key = key
        self.value = value
    }

    public var tupleValue: TupleValue { .list([key.tupleValue, value.tupleValue]) }
    public init?(tupleValue: TupleValue) {
        guard let parts = tupleValue.listValue, parts.count == 2, let key = Key(tupleValue: parts[0]), let value = Value(tupleValue: parts[1]) else { return nil }
        self.init(key, value)
    }
}

extension KeyValue: Equatable where Value: Equatable {}
extension KeyValue: Hashable where Value: Hashable {}

/// A key in one window: what windowed reductions and joins emit as their key.
/// `start`/`end` are milliseconds since 1970 for time windows and element sequence
/// numbers (per key) for count windows; `count` is how many elements it covered.
public struct KeyedWindow<Key: StreamletElement & Hashable>: StreamletElement, Hashable {
    public var key: Key
    public var start: Int64
    public var end: Int64
    public var count: Int64

    public init(key: Key, start: Int64, end: Int64, count: Int64) {
        self.key = key
        self.start = start
        self.end = end
        self.count = count
    }

    public var tupleValue: TupleValue { .list([key.tupleValue, .int(start), .int(end), .int(count)]) }
    public init?(tupleValue: TupleValue) {
        guard let parts = tupleValue.listValue, parts.count == 4, let key = Key(tupleValue: parts[0]),
              let start = parts[1].intValue, let end = parts[2].intValue, let count = parts[3].intValue
        else { return nil }
        self.init(key: key, start: start, end: end, count: count)
    }
}
