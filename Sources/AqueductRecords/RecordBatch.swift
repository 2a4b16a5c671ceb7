import AqueductCommon
import CAqueduct
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Why a record batch was refused. Each case names what was wrong and with which numbers.
public enum RecordBatchError: Error, Equatable, CustomStringConvertible, Sendable {
    case truncated(available: Int, needed: Int)
    case invalidLength(Int32)
    case tooLarge(bytes: Int, limitBytes: Int)
    case unsupportedMagic(Int8)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case invalidRecordCount(recordsCount: Int32, lastOffsetDelta: Int32)
    case unsupportedCompression(Int16)
    case trailingBytes(Int)
    case malformedRecord(String)
    /// The codec's system library (zlib, zstd, lz4) is not installed.
    case compressedRecords(CompressionCodec)
    case corruptCompressedRecords(CompressionCodec)
    case decompressedTooLarge(limitBytes: Int)

    public var description: String {
        switch self {
        case .truncated(let available, let needed):
            "record batch truncated: \(available) bytes present, \(needed) needed"
        case .invalidLength(let length):
            "record batch length \(length) is invalid (must cover the 49 bytes after it)"
        case .tooLarge(let bytes, let limit):
            "record batch of \(bytes) bytes exceeds the limit of \(limit) bytes"
        case .unsupportedMagic(let magic):
            "record batch magic \(magic) is not supported (only 2: Kafka 0.11+ clients)"
        case .checksumMismatch(let stored, let computed):
            "record batch CRC-32C mismatch: stored \(hex(stored)), computed \(hex(computed))"
        case .invalidRecordCount(let count, let delta):
            "record batch holds \(count) records but lastOffsetDelta is \(delta)"
        case .unsupportedCompression(let attributes):
            "record batch compression codec \(attributes & 7) is unknown"
        case .trailingBytes(let count):
            "\(count) bytes follow the record batch"
        case .malformedRecord(let why):
            "malformed record: \(why)"
        case .compressedRecords(let codec):
            "records compressed with \(codec) cannot be decoded: its system library (\(Self.libraryName(codec))) is not installed"
        case .corruptCompressedRecords(let codec):
            "records compressed with \(codec) do not decompress: the batch is corrupt"
        case .decompressedTooLarge(let limit):
            "the batch's records decompress to more than \(limit) bytes"
        }
    }
}

extension RecordBatchError {
    static func libraryName(_ codec: CompressionCodec) -> String {
        switch codec {
        case .gzip: "libz.so.1, package zlib1g"
        case .lz4: "liblz4.so.1, package liblz4-1"
        case .zstd: "libzstd.so.1, package libzstd1"
        case .snappy, .none: "built in"
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// Operations on record batches held in `ByteBuffer`s, without copying them.
public enum RecordBatch {
    /// Validates that the readable bytes of `buffer` are exactly one well-formed batch
    /// of at most `maxBytes`: length, magic 2, CRC-32C, record count, codec. Returns
    /// its header. This is the check every batch passes before the log takes it.
    public static func validate(_ buffer: ByteBuffer, maxBytes: Int) throws(RecordBatchError) -> RecordBatchHeader {
        let header = try validateOne(buffer, at: buffer.readerIndex, maxBytes: maxBytes)
        let extra = buffer.readableBytes - header.totalSize
        if extra != 0 { throw .trailingBytes(extra) }
        return header
    }

    /// Validates the batch starting at absolute `index` of `buffer` (further bytes may
    /// follow it).
    public static func validateOne(_ buffer: ByteBuffer, at index: Int, maxBytes: Int) throws(RecordBatchError) -> RecordBatchHeader {
        let available = buffer.writerIndex - index
        guard let header = RecordBatchHeader(from: buffer, at: index) else {
            throw .truncated(available: available, needed: RecordBatchHeader.size)
        }
        guard header.batchLength >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead) else {
            throw .invalidLength(header.batchLength)
        }
        guard header.totalSize <= maxBytes else { throw .tooLarge(bytes: header.totalSize, limitBytes: maxBytes) }
        guard header.totalSize <= available else { throw .truncated(available: available, needed: header.totalSize) }
        guard header.magic == 2 else { throw .unsupportedMagic(header.magic) }
        guard header.compression != nil else { throw .unsupportedCompression(header.attributes) }
        // Compaction may drop records from a batch, so fewer records than offsets is legal.
        guard header.recordsCount >= 0, header.lastOffsetDelta >= 0,
            Int64(header.recordsCount) <= Int64(header.lastOffsetDelta) + 1
        else {
            throw .invalidRecordCount(recordsCount: header.recordsCount, lastOffsetDelta: header.lastOffsetDelta)
        }
        let computed = checksumOfBatch(buffer, at: index, totalSize: header.totalSize)
        guard computed == header.crc else { throw .checksumMismatch(stored: header.crc, computed: computed) }
        return header
    }

    /// The CRC-32C of the covered part (attributes to end) of the batch at `index`.
    public static func checksumOfBatch(_ buffer: ByteBuffer, at index: Int, totalSize: Int) -> UInt32 {
        let start = index - buffer.readerIndex + RecordBatchHeader.crcCoveredStart
        let end = index - buffer.readerIndex + totalSize
        return buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
        }
    }

    /// Rewrites the base offset of the batch at `index` (not covered by the CRC).
    public static func setBaseOffset(_ offset: Int64, in buffer: inout ByteBuffer, at index: Int) {
        buffer.setInteger(offset, at: index + RecordBatchHeader.Field.baseOffset)
    }

    /// Rewrites the partition leader epoch of the batch at `index` (not covered by the CRC).
    public static func setPartitionLeaderEpoch(_ epoch: Int32, in buffer: inout ByteBuffer, at index: Int) {
        buffer.setInteger(epoch, at: index + RecordBatchHeader.Field.partitionLeaderEpoch)
    }

    /// Most bytes the records of one batch may decompress to.
    public static let decompressedBytesMax = 256 << 20

    /// Decodes the records of a batch (the readable bytes of `batch`), decompressing
    /// them first if the producer compressed them (gzip, snappy, lz4, zstd). Batches are
    /// stored and served as sent; this is for readers that want the records.
    public static func records(of batch: ByteBuffer) throws(RecordBatchError) -> [Record] {
        guard let header = RecordBatchHeader(from: batch) else {
            throw .truncated(available: batch.readableBytes, needed: RecordBatchHeader.size)
        }
        guard let codec = header.compression else { throw .unsupportedCompression(header.attributes) }
        guard header.totalSize <= batch.readableBytes else {
            throw .truncated(available: batch.readableBytes, needed: header.totalSize)
        }
        var body = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.size, length: header.totalSize - RecordBatchHeader.size)!
        if codec != .none { body = try decompress(body, codec) }
        var records: [Record] = []
        records.reserveCapacity(Int(max(0, min(header.recordsCount, 100_000))))
        for _ in 0..<max(0, Int(header.recordsCount)) {
            records.append(try Record.decode(from: &body, header: header))
        }
        if body.readableBytes != 0 { throw .malformedRecord("\(body.readableBytes) bytes left after the last record") }
        return records
    }
}

extension RecordBatch {
    /// The records section of a compressed batch, decompressed.
    static func decompress(_ compressed: ByteBuffer, _ codec: CompressionCodec) throws(RecordBatchError) -> ByteBuffer {
        var output: UnsafeMutableRawPointer?
        var length = 0
        let status = compressed.withUnsafeReadableBytes { raw in
            aq_decompress(Int32(codec.rawValue), raw.baseAddress, raw.count, decompressedBytesMax, &output, &length)
        }
        switch status {
        case 0: break
        case AQ_CODEC_UNAVAILABLE: throw .compressedRecords(codec)
        case AQ_CODEC_TOO_LARGE: throw .decompressedTooLarge(limitBytes: decompressedBytesMax)
        default: throw .corruptCompressedRecords(codec)
        }
        defer { free(output) }
        return ByteBuffer(bytes: UnsafeRawBufferPointer(start: output, count: length))
    }
}

/// Walks the whole batches in a buffer of concatenated batches (a segment read or a
/// fetch response), stopping before a partial batch at the end.
public struct RecordBatchIterator: IteratorProtocol, Sequence {
    private let buffer: ByteBuffer
    private var index: Int

    public init(_ buffer: ByteBuffer) {
        self.buffer = buffer
        self.index = buffer.readerIndex
    }

    /// Absolute index where the next batch would start.
    public var position: Int { index }

    /// The next whole batch: its header and a slice holding exactly its bytes.
    public mutating func next() -> (header: RecordBatchHeader, bytes: ByteBuffer)? {
        guard let header = RecordBatchHeader(from: buffer, at: index),
            header.batchLength >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead),
            buffer.writerIndex - index >= header.totalSize
        else { return nil }
        let slice = buffer.getSlice(at: index, length: header.totalSize)!
        index += header.totalSize
        return (header, slice)
    }
}
