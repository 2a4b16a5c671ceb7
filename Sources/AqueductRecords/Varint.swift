import NIOCore

/// Kafka's variable-length integers: zig-zag encoded, 7 bits per byte, least
/// significant group first (protobuf's sint32/sint64).
public enum Varint {
    /// Maximum encoded length of a 64-bit varint in bytes.
    public static let maxBytes64 = 10
    /// Maximum encoded length of a 32-bit varint in bytes.
    public static let maxBytes32 = 5

    @inlinable
    public static func write(_ value: Int64, to buffer: inout ByteBuffer) {
        var zigzag = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        while zigzag >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: zigzag) | 0x80)
            zigzag >>= 7
        }
        buffer.writeInteger(UInt8(zigzag))
    }

    @inlinable
    public static func size(of value: Int64) -> Int {
        var zigzag = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        var size = 1
        while zigzag >= 0x80 {
            zigzag >>= 7
            size += 1
        }
        return size
    }

    /// Reads a zig-zag varint of at most `maxBytes` bytes; nil when the buffer ends
    /// first or the encoding is longer than allowed.
    @inlinable
    public static func read(from buffer: inout ByteBuffer, maxBytes: Int = maxBytes64) -> Int64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        for _ in 0..<maxBytes {
            guard let byte: UInt8 = buffer.readInteger() else { return nil }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 {
                return Int64(bitPattern: result >> 1) ^ -Int64(bitPattern: result & 1)
            }
            shift += 7
        }
        return nil
    }

    /// Reads a zig-zag varint that must fit in 32 bits.
    @inlinable
    public static func read32(from buffer: inout ByteBuffer) -> Int32? {
        guard let value = read(from: &buffer, maxBytes: maxBytes32) else { return nil }
        return Int32(exactly: value)
    }
}
