import AqueductRecords
import NIOCore

/// A log's entry in a replicated segment: one record batch (its base offset written)
/// behind a small header with the segment's running totals, so the last entry alone
/// tells a new owner where the segment ends, how big it is and its newest timestamp
/// (what the log records when it seals a segment it did not write).
///
/// `version u8 = 1 | endOffset i64 | bytesThrough i64 | maxTimestampThrough i64 | batch`
enum LogEntryFormat {
    static let version: UInt8 = 1
    static let headerBytes = 25

    struct Totals: Equatable, Sendable {
        /// One past the batch's last offset.
        var endOffset: Int64
        /// Batch bytes of the segment up to and including this entry.
        var bytesThrough: Int64
        /// Newest record timestamp up to and including this entry (-1: none).
        var maxTimestampThrough: Int64
    }

    enum DecodeError: Error, CustomStringConvertible {
        case malformed(String)
        var description: String {
            switch self { case .malformed(let why): "a replicated log entry is malformed: \(why)" }
        }
    }

    /// The entry for `batch` with `baseOffset` written into its copy.
    static func encode(batch: ByteBuffer, baseOffset: Int64, totals: Totals, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var out = allocator.buffer(capacity: headerBytes + batch.readableBytes)
        out.writeInteger(version)
        out.writeInteger(totals.endOffset)
        out.writeInteger(totals.bytesThrough)
        out.writeInteger(totals.maxTimestampThrough)
        let batchStart = out.writerIndex
        var copy = batch
        out.writeBuffer(&copy)
        RecordBatch.setBaseOffset(baseOffset, in: &out, at: batchStart)
        return out
    }

    /// The totals and the batch (a slice of `payload`, no copy).
    static func decode(_ payload: ByteBuffer) throws(DecodeError) -> (totals: Totals, batch: ByteBuffer) {
        var reader = payload
        guard let version: UInt8 = reader.readInteger(), version == Self.version else {
            throw .malformed("unknown entry version")
        }
        guard let end: Int64 = reader.readInteger(), let bytes: Int64 = reader.readInteger(), let timestamp: Int64 = reader.readInteger(),
              reader.readableBytes >= RecordBatchHeader.size
        else { throw .malformed("shorter than its header") }
        return (Totals(endOffset: end, bytesThrough: bytes, maxTimestampThrough: timestamp), reader)
    }
}
