import AqueductCommon
import NIOCore

/// The 61-byte header of a Kafka RecordBatch (magic 2), as in apache/kafka
/// docs/implementation.html. All integers are big-endian.
///
///     baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
///     attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
///     producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32
///
/// The CRC-32C covers attributes to the end of the batch, so a broker may rewrite
/// baseOffset and partitionLeaderEpoch without recomputing it.
public struct RecordBatchHeader: Equatable, Sendable {
    public var baseOffset: Int64
    /// Bytes after the batchLength field: the batch is `batchLength + 12` bytes long.
    public var batchLength: Int32
    public var partitionLeaderEpoch: Int32
    public var magic: Int8
    public var crc: UInt32
    public var attributes: Int16
    public var lastOffsetDelta: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var producerId: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    public var recordsCount: Int32

    /// Byte positions of the header fields.
    public enum Field {
        public static let baseOffset = 0
        public static let batchLength = 8
        public static let partitionLeaderEpoch = 12
        public static let magic = 16
        public static let crc = 17
        public static let attributes = 21
        public static let lastOffsetDelta = 23
        public static let baseTimestamp = 27
        public static let maxTimestamp = 35
        public static let producerId = 43
        public static let producerEpoch = 51
        public static let baseSequence = 53
        public static let recordsCount = 57
    }

    /// Size of the header in bytes.
    public static let size = 61
    /// Bytes before the batchLength-counted part (baseOffset + batchLength).
    public static let logOverhead = 12
    /// Where the CRC-covered part starts.
    public static let crcCoveredStart = Field.attributes

    /// The whole batch's size in bytes.
    public var totalSize: Int { Int(batchLength) + Self.logOverhead }
    /// The offset of the batch's last record.
    public var lastOffset: Int64 { baseOffset + Int64(lastOffsetDelta) }
    /// The number of offsets the batch takes (a compacted batch may hold fewer records).
    public var offsetCount: Int64 { Int64(lastOffsetDelta) + 1 }

    public var compression: CompressionCodec? { CompressionCodec(rawValue: Int(attributes & 0x07)) }
    public var timestampType: TimestampType { (attributes & 0x08) != 0 ? .logAppendTime : .createTime }
    public var isTransactional: Bool { (attributes & 0x10) != 0 }
    public var isControl: Bool { (attributes & 0x20) != 0 }

    public init(
        baseOffset: Int64, batchLength: Int32, partitionLeaderEpoch: Int32, magic: Int8, crc: UInt32,
        attributes: Int16, lastOffsetDelta: Int32, baseTimestamp: Int64, maxTimestamp: Int64,
        producerId: Int64, producerEpoch: Int16, baseSequence: Int32, recordsCount: Int32
    ) {
        self.baseOffset = baseOffset
        self.batchLength = batchLength
        self.partitionLeaderEpoch = partitionLeaderEpoch
        self.magic = magic
        self.crc = crc
        self.attributes = attributes
        self.lastOffsetDelta = lastOffsetDelta
        self.baseTimestamp = baseTimestamp
        self.maxTimestamp = maxTimestamp
        self.producerId = producerId
        self.producerEpoch = producerEpoch
        self.baseSequence = baseSequence
        self.recordsCount = recordsCount
    }

    /// Parses the header at `index` of `buffer` (absolute index); nil when fewer than
    /// 61 bytes are there. Checks nothing else: see `RecordBatch.validate`.
    public init?(from buffer: ByteBuffer, at index: Int) {
        guard index >= 0, buffer.writerIndex - index >= Self.size else { return nil }
        baseOffset = buffer.getInteger(at: index + Field.baseOffset)!
        batchLength = buffer.getInteger(at: index + Field.batchLength)!
        partitionLeaderEpoch = buffer.getInteger(at: index + Field.partitionLeaderEpoch)!
        magic = buffer.getInteger(at: index + Field.magic)!
        crc = buffer.getInteger(at: index + Field.crc)!
        attributes = buffer.getInteger(at: index + Field.attributes)!
        lastOffsetDelta = buffer.getInteger(at: index + Field.lastOffsetDelta)!
        baseTimestamp = buffer.getInteger(at: index + Field.baseTimestamp)!
        maxTimestamp = buffer.getInteger(at: index + Field.maxTimestamp)!
        producerId = buffer.getInteger(at: index + Field.producerId)!
        producerEpoch = buffer.getInteger(at: index + Field.producerEpoch)!
        baseSequence = buffer.getInteger(at: index + Field.baseSequence)!
        recordsCount = buffer.getInteger(at: index + Field.recordsCount)!
    }

    /// Parses the header at the reader index of `buffer`.
    public init?(from buffer: ByteBuffer) {
        self.init(from: buffer, at: buffer.readerIndex)
    }

    /// Writes the header (as it is, CRC included) to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(baseOffset)
        buffer.writeInteger(batchLength)
        buffer.writeInteger(partitionLeaderEpoch)
        buffer.writeInteger(magic)
        buffer.writeInteger(crc)
        buffer.writeInteger(attributes)
        buffer.writeInteger(lastOffsetDelta)
        buffer.writeInteger(baseTimestamp)
        buffer.writeInteger(maxTimestamp)
        buffer.writeInteger(producerId)
        buffer.writeInteger(producerEpoch)
        buffer.writeInteger(baseSequence)
        buffer.writeInteger(recordsCount)
    }
}

public enum CompressionCodec: Int, Sendable, CaseIterable {
    case none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4
}

public enum TimestampType: Sendable {
    case createTime, logAppendTime
}
