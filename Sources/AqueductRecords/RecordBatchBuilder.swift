import AqueductCommon
import NIOCore

/// Builds an uncompressed RecordBatch v2 from records, the way a Kafka producer does
/// (no producer id, no sequence). Used by the HTTP API, tests and benchmarks.
public struct RecordBatchBuilder {
    private var records: [Record] = []
    private var encodedBytes = 0

    /// Most records and bytes a batch can say it holds (its counts are 32-bit);
    /// `append` refuses a record past them, so `build` never narrows out of range.
    public static let recordsMax = Int(Int32.max)
    public static let bytesMax = Int(Int32.max) - RecordBatchHeader.size

    public init() {}

    public var count: Int { records.count }
    public var isEmpty: Bool { records.isEmpty }
    /// Bytes the batch would take if built now.
    public var estimatedSize: Int { RecordBatchHeader.size + encodedBytes }

    /// Adds a record; false (and nothing added) when the batch would pass `recordsMax`
    /// or `bytesMax`.
    @discardableResult
    public mutating func append(_ record: Record) -> Bool {
        let size = Self.encodedSize(record, timestampDelta: 0, offsetDelta: Int64(records.count + 1)) + 2
        // Sizes are counted with a one-byte timestamp delta; allow for the longest (10).
        guard records.count < Self.recordsMax, encodedBytes + size + 9 * (records.count + 1) <= Self.bytesMax else { return false }
        records.append(record)
        encodedBytes += size
        return true
    }

    @discardableResult
    public mutating func append(timestamp: Int64, key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = []) -> Bool {
        append(Record(timestamp: timestamp, key: key, value: value, headers: headers))
    }

    /// The batch with base offset `baseOffset` (the log rewrites it on append).
    public func build(baseOffset: Int64 = 0, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        precondition(!records.isEmpty, "a record batch needs at least one record")
        let baseTimestamp = records.map(\.timestamp).min()!
        let maxTimestamp = records.map(\.timestamp).max()!
        var body = allocator.buffer(capacity: encodedBytes + 64)
        for (index, record) in records.enumerated() {
            // Wrapping: any two Int64 timestamps (a client may send any) give a delta
            // that a reader adding it back to the base undoes exactly, never a trap.
            let timestampDelta = record.timestamp &- baseTimestamp
            let size = Self.encodedSize(record, timestampDelta: timestampDelta, offsetDelta: Int64(index))
            Varint.write(Int64(size), to: &body)
            body.writeInteger(Int8(0))
            Varint.write(timestampDelta, to: &body)
            Varint.write(Int64(index), to: &body)
            Self.writeBytes(record.key, to: &body)
            Self.writeBytes(record.value, to: &body)
            Varint.write(Int64(record.headers.count), to: &body)
            for header in record.headers {
                Self.writeBytes(Array(header.key.utf8), to: &body)
                Self.writeBytes(header.value, to: &body)
            }
        }
        var header = RecordBatchHeader(
            baseOffset: baseOffset,
            batchLength: Int32(truncatingIfNeeded: RecordBatchHeader.size - RecordBatchHeader.logOverhead + body.readableBytes),
            partitionLeaderEpoch: -1, magic: 2, crc: 0, attributes: 0,
            lastOffsetDelta: Int32(truncatingIfNeeded: records.count - 1),
            baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp,
            producerId: -1, producerEpoch: -1, baseSequence: -1,
            recordsCount: Int32(truncatingIfNeeded: records.count))
        var batch = allocator.buffer(capacity: header.totalSize)
        header.write(to: &batch)
        batch.writeBuffer(&body)
        header.crc = RecordBatch.checksumOfBatch(batch, at: batch.readerIndex, totalSize: header.totalSize)
        batch.setInteger(header.crc, at: batch.readerIndex + RecordBatchHeader.Field.crc)
        return batch
    }

    private static func writeBytes(_ bytes: [UInt8]?, to buffer: inout ByteBuffer) {
        guard let bytes else {
            Varint.write(-1, to: &buffer)
            return
        }
        Varint.write(Int64(bytes.count), to: &buffer)
        buffer.writeBytes(bytes)
    }

    /// Size of a record's body (everything after its length varint).
    private static func encodedSize(_ record: Record, timestampDelta: Int64, offsetDelta: Int64) -> Int {
        var size = 1 + Varint.size(of: timestampDelta) + Varint.size(of: offsetDelta)
        size += bytesSize(record.key) + bytesSize(record.value)
        size += Varint.size(of: Int64(record.headers.count))
        for header in record.headers {
            size += bytesSize(Array(header.key.utf8)) + bytesSize(header.value)
        }
        return size
    }

    private static func bytesSize(_ bytes: [UInt8]?) -> Int {
        guard let bytes else { return 1 }
        return Varint.size(of: Int64(bytes.count)) + bytes.count
    }
}
