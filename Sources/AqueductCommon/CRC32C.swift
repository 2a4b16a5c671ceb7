import CAqueduct
import NIOCore

/// CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2 and of every
/// journal block. Uses the CPU's SSE4.2 instruction when present.
public enum CRC32C {
    /// Whether the hardware instruction is in use on this machine.
    public static var isHardwareAccelerated: Bool { aq_crc32c_is_hardware() != 0 }

    /// Extends `crc` (the finished CRC of the bytes before; 0 for none) over `bytes`.
    @inlinable
    public static func extend(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return aq_crc32c_extend(crc, base, bytes.count)
    }

    /// The CRC-32C of bytes A followed by bytes B, from `crcA`, `crcB` and B's length,
    /// without reading B (for data whose checksum is already known and verified).
    public static func combine(_ crcA: UInt32, _ crcB: UInt32, lengthB: Int) -> UInt32 {
        aq_crc32c_combine(crcA, crcB, UInt64(lengthB))
    }

    /// The CRC-32C of `bytes`.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        extend(0, bytes)
    }

    /// The CRC-32C of `bytes`.
    @inlinable
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        if let crc = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0)) }) {
            return crc
        }
        return Array(bytes).withUnsafeBytes { checksum($0) }
    }

    /// The CRC-32C of the readable bytes `range` of `buffer` (indices relative to
    /// `readerIndex`).
    @inlinable
    public static func checksum(_ buffer: ByteBuffer, readableRange range: Range<Int>) -> UInt32 {
        buffer.withUnsafeReadableBytes { raw in
            checksum(UnsafeRawBufferPointer(rebasing: raw[range]))
        }
    }

    /// The table implementation, for tests that compare both paths.
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return aq_crc32c_extend_portable(0, base, bytes.count)
    }
}
