import NIOCore

/// Why a Kafka request could not be decoded. Never a crash: the connection answers
/// or closes, and the server goes on.
public enum KafkaProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frame ended before the field.
    case truncated(field: String)
    /// A length or count that is negative (where null is not allowed) or longer than
    /// the bytes left in the frame.
    case invalidLength(field: String, length: Int)
    /// A varint longer than its type allows.
    case invalidVarint(field: String)
    /// A string that is not UTF-8.
    case invalidString(field: String)
    /// An API key this broker does not know, or a version outside what it supports.
    case unsupportedVersion(apiKey: Int16, version: Int16)

    public var description: String {
        switch self {
        case .truncated(let field): "frame ends inside field \(field)"
        case .invalidLength(let field, let length): "field \(field) has invalid length \(length)"
        case .invalidVarint(let field): "field \(field) holds an overlong varint"
        case .invalidString(let field): "field \(field) is not valid UTF-8"
        case .unsupportedVersion(let apiKey, let version): "API key \(apiKey) version \(version) is not supported"
        }
    }
}

/// A Kafka UUID (topic ids): 16 bytes, all zero meaning none.
public struct KafkaUUID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public static let zero = KafkaUUID(high: 0, low: 0)

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From the textual form of a Foundation-style UUID ("8-4-4-4-12" hex digits).
    public init?(uuidString: String) {
        let hex = uuidString.filter { $0 != "-" }
        guard hex.count == 32, let high = UInt64(hex.prefix(16), radix: 16), let low = UInt64(hex.suffix(16), radix: 16) else {
            return nil
        }
        self.init(high: high, low: low)
    }

    public var description: String {
        let digits = String(high, radix: 16).leftPadded(16) + String(low, radix: 16).leftPadded(16)
        let characters = Array(digits)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(characters[$0]) }.joined(separator: "-")
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Reads Kafka's primitive types from a frame. Every read checks the bytes left, so a
/// malformed frame gives an error, never a trap or a huge allocation.
public struct KafkaReader {
    public var buffer: ByteBuffer

    public init(_ buffer: ByteBuffer) {
        self.buffer = buffer
    }

    public var remaining: Int { buffer.readableBytes }

    @inline(__always)
    public mutating func readInt8(_ field: String) throws(KafkaProtocolError) -> Int8 {
        guard let value: Int8 = buffer.readInteger() else { throw .truncated(field: field) }
        return value
    }

    @inline(__always)
    public mutating func readInt16(_ field: String) throws(KafkaProtocolError) -> Int16 {
        guard let value: Int16 = buffer.readInteger() else { throw .truncated(field: field) }
        return value
    }

    @inline(__always)
    public mutating func readUInt16(_ field: String) throws(KafkaProtocolError) -> UInt16 {
        guard let value: UInt16 = buffer.readInteger() else { throw .truncated(field: field) }
        return value
    }

    @inline(__always)
    public mutating func readInt32(_ field: String) throws(KafkaProtocolError) -> Int32 {
        guard let value: Int32 = buffer.readInteger() else { throw .truncated(field: field) }
        return value
    }

    @inline(__always)
    public mutating func readInt64(_ field: String) throws(KafkaProtocolError) -> Int64 {
        guard let value: Int64 = buffer.readInteger() else { throw .truncated(field: field) }
        return value
    }

    public mutating func readFloat64(_ field: String) throws(KafkaProtocolError) -> Double {
        guard let bits: UInt64 = buffer.readInteger() else { throw .truncated(field: field) }
        return Double(bitPattern: bits)
    }

    public mutating func readBool(_ field: String) throws(KafkaProtocolError) -> Bool {
        try readInt8(field) != 0
    }

    public mutating func readUUID(_ field: String) throws(KafkaProtocolError) -> KafkaUUID {
        guard let high: UInt64 = buffer.readInteger(), let low: UInt64 = buffer.readInteger() else {
            throw .truncated(field: field)
        }
        return KafkaUUID(high: high, low: low)
    }

    public mutating func readUnsignedVarint(_ field: String) throws(KafkaProtocolError) -> UInt32 {
        var result: UInt32 = 0
        var shift: UInt32 = 0
        while true {
            guard let byte: UInt8 = buffer.readInteger() else { throw .truncated(field: field) }
            if shift == 28 && byte > 0x0F { throw .invalidVarint(field: field) }
            result |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// The length of a string, bytes or array: compact (unsigned varint, 0 = null) or
    /// classic (`Int32` for arrays and bytes, `Int16` for strings; -1 = null).
    /// Returns nil for null; checks the length against the bytes left, at one byte
    /// per element at least.
    private mutating func readLength(_ field: String, compact: Bool, short: Bool) throws(KafkaProtocolError) -> Int? {
        let length: Int
        if compact {
            let raw = try readUnsignedVarint(field)
            if raw == 0 { return nil }
            length = Int(raw) - 1
        } else if short {
            let raw = try readInt16(field)
            if raw == -1 { return nil }
            length = Int(raw)
        } else {
            let raw = try readInt32(field)
            if raw == -1 { return nil }
            length = Int(raw)
        }
        guard length >= 0, length <= buffer.readableBytes else { throw .invalidLength(field: field, length: length) }
        return length
    }

    public mutating func readNullableString(_ field: String, compact: Bool) throws(KafkaProtocolError) -> String? {
        guard let length = try readLength(field, compact: compact, short: true) else { return nil }
        guard let string = buffer.readString(length: length) else { throw .invalidString(field: field) }
        return string
    }

    public mutating func readString(_ field: String, compact: Bool) throws(KafkaProtocolError) -> String {
        guard let string = try readNullableString(field, compact: compact) else {
            throw .invalidLength(field: field, length: -1)
        }
        return string
    }

    public mutating func readNullableBytes(_ field: String, compact: Bool) throws(KafkaProtocolError) -> [UInt8]? {
        guard let length = try readLength(field, compact: compact, short: false) else { return nil }
        return buffer.readBytes(length: length)
    }

    public mutating func readBytes(_ field: String, compact: Bool) throws(KafkaProtocolError) -> [UInt8] {
        guard let bytes = try readNullableBytes(field, compact: compact) else { throw .invalidLength(field: field, length: -1) }
        return bytes
    }

    /// Record batches: a slice of the frame, not a copy.
    public mutating func readNullableRecords(_ field: String, compact: Bool) throws(KafkaProtocolError) -> ByteBuffer? {
        guard let length = try readLength(field, compact: compact, short: false) else { return nil }
        return buffer.readSlice(length: length)
    }

    /// The element count of an array, or nil for a null array.
    public mutating func readNullableArrayCount(_ field: String, compact: Bool) throws(KafkaProtocolError) -> Int? {
        try readLength(field, compact: compact, short: false)
    }

    public mutating func readArrayCount(_ field: String, compact: Bool) throws(KafkaProtocolError) -> Int {
        guard let count = try readLength(field, compact: compact, short: false) else { throw .invalidLength(field: field, length: -1) }
        return count
    }

    /// Skips a tagged field this version does not know.
    public mutating func skip(_ bytes: Int, _ field: String) throws(KafkaProtocolError) {
        guard bytes >= 0, bytes <= buffer.readableBytes else { throw .invalidLength(field: field, length: bytes) }
        buffer.moveReaderIndex(forwardBy: bytes)
    }

    /// A sub-reader over the next `bytes` bytes (a tagged field's value).
    public mutating func subReader(_ bytes: Int, _ field: String) throws(KafkaProtocolError) -> KafkaReader {
        guard bytes >= 0, let slice = buffer.readSlice(length: bytes) else { throw .invalidLength(field: field, length: bytes) }
        return KafkaReader(slice)
    }
}

/// A value that does not fit its field's encoding: a string longer than a 16-bit
/// length allows, more elements than a 32-bit count. The writer records the first one
/// instead of trapping; a response that has one is never sent.
public struct KafkaEncodingError: Error, Equatable, Sendable, CustomStringConvertible {
    public var kind: String
    public var length: Int
    public var limit: Int

    public var description: String { "a \(kind) of length \(length) does not fit its encoding (at most \(limit))" }
}

/// Writes Kafka's primitive types. Lengths and counts are checked against what their
/// encoding can hold: a value that does not fit is written clamped and remembered in
/// `failure`, never a trap, and whoever sends the bytes checks `failure` first.
public struct KafkaWriter {
    public var buffer: ByteBuffer
    /// The first value that did not fit; the bytes are not to be sent when set.
    public private(set) var failure: KafkaEncodingError?

    public init(_ buffer: ByteBuffer) {
        self.buffer = buffer
    }

    public init(capacity: Int = 256) {
        self.buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Longest classic string (16-bit length).
    public static let stringBytesMax = Int(Int16.max)
    /// Longest bytes, records or array (32-bit length).
    public static let lengthMax = Int(Int32.max)
    /// Longest compact length (unsigned varint of length + 1).
    public static let compactLengthMax = Int(UInt32.max) - 1

    @inline(__always) public mutating func writeInt8(_ value: Int8) { buffer.writeInteger(value) }
    @inline(__always) public mutating func writeInt16(_ value: Int16) { buffer.writeInteger(value) }
    @inline(__always) public mutating func writeUInt16(_ value: UInt16) { buffer.writeInteger(value) }
    @inline(__always) public mutating func writeInt32(_ value: Int32) { buffer.writeInteger(value) }
    @inline(__always) public mutating func writeInt64(_ value: Int64) { buffer.writeInteger(value) }
    public mutating func writeFloat64(_ value: Double) { buffer.writeInteger(value.bitPattern) }
    public mutating func writeBool(_ value: Bool) { buffer.writeInteger(value ? 1 : 0 as Int8) }

    public mutating func writeUUID(_ value: KafkaUUID) {
        buffer.writeInteger(value.high)
        buffer.writeInteger(value.low)
    }

    public mutating func writeUnsignedVarint(_ value: UInt32) {
        var value = value
        while value >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        buffer.writeInteger(UInt8(truncatingIfNeeded: value))
    }

    /// Records the first failure; later ones add nothing (the response is lost anyway).
    private mutating func fail(_ kind: String, length: Int, limit: Int) {
        if failure == nil { failure = KafkaEncodingError(kind: kind, length: length, limit: limit) }
    }

    private mutating func writeLength(_ length: Int?, compact: Bool, short: Bool) {
        guard var length else {
            if compact { writeUnsignedVarint(0) } else if short { writeInt16(-1) } else { writeInt32(-1) }
            return
        }
        let limit = compact ? Self.compactLengthMax : short ? Self.stringBytesMax : Self.lengthMax
        if length > limit {
            fail(compact ? "compact field" : short ? "string" : "bytes or array", length: length, limit: limit)
            length = limit
        }
        if compact {
            writeUnsignedVarint(UInt32(truncatingIfNeeded: length + 1))
        } else if short {
            writeInt16(Int16(truncatingIfNeeded: length))
        } else {
            writeInt32(Int32(truncatingIfNeeded: length))
        }
    }

    public mutating func writeString(_ value: String?, compact: Bool) {
        guard let value else {
            writeLength(nil, compact: compact, short: true)
            return
        }
        writeLength(value.utf8.count, compact: compact, short: true)
        buffer.writeString(value)
    }

    public mutating func writeBytes(_ value: [UInt8]?, compact: Bool) {
        writeLength(value?.count, compact: compact, short: false)
        if let value { buffer.writeBytes(value) }
    }

    public mutating func writeRecords(_ value: ByteBuffer?, compact: Bool) {
        writeLength(value?.readableBytes, compact: compact, short: false)
        if var value { buffer.writeBuffer(&value) }
    }

    public mutating func writeArrayCount(_ count: Int?, compact: Bool) {
        writeLength(count, compact: compact, short: false)
    }

    /// Writes a tagged field's value (written into `inner`) prefixed by its size; a
    /// failure inside it is this writer's failure.
    public mutating func writeTaggedValue(_ inner: inout KafkaWriter) {
        if let failure = inner.failure, self.failure == nil { self.failure = failure }
        let size = inner.buffer.readableBytes
        if size > Int(UInt32.max) { fail("tagged field", length: size, limit: Int(UInt32.max)) }
        writeUnsignedVarint(UInt32(truncatingIfNeeded: size))
        buffer.writeBuffer(&inner.buffer)
    }

    /// Writes `body` prefixed by its length as an unsigned varint (a tagged field).
    public mutating func writeSizePrefixed(_ body: (inout KafkaWriter) -> Void) {
        var inner = KafkaWriter(capacity: 64)
        body(&inner)
        writeTaggedValue(&inner)
    }
}

/// A generated Kafka message: one of the request or response bodies.
public protocol KafkaMessage: Sendable, Equatable {
    init()
    init(from reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError)
    func encode(to writer: inout KafkaWriter, version: Int16)
}
