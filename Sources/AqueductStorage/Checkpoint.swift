import AqueductCommon
import NIOCore

/// Where journal and entry storage meet (BookKeeper's checkpoint): every entry
/// acknowledged before `journalPosition` is in a synced segment file, so recovery
/// replays the journal from there and older journal files can be deleted. It also
/// records each segment's synced size and state, so recovery knows which bytes of a
/// segment file to trust.
///
///     magic "AQCP" | format u32 (1) | journal file u64 | journal offset i64 |
///     next block sequence u64 | count u32 | segment* | crc32c u32
///     segment: logID u64 | number u64 | baseOffset i64 | endOffset i64 | sizeBytes i64 |
///              fencedEpoch u64 | sealed u8 | maxTimestamp i64
struct Checkpoint: Equatable {
    struct Segment: Equatable {
        var id: SegmentID
        var baseOffset: Int64
        var endOffset: Int64
        var sizeBytes: Int64
        var fencedEpoch: UInt64
        var sealed: Bool
        var maxTimestamp: Int64
    }

    var journalPosition: JournalPosition
    var nextSequence: UInt64
    var segments: [Segment]

    static let magic: UInt32 = 0x4151_4350  // "AQCP"
    static let format: UInt32 = 1

    func encode() -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(Self.format)
        buffer.writeInteger(journalPosition.file)
        buffer.writeInteger(journalPosition.offset)
        buffer.writeInteger(nextSequence)
        buffer.writeInteger(UInt32(segments.count))
        for segment in segments {
            buffer.writeInteger(segment.id.logID)
            buffer.writeInteger(segment.id.number)
            buffer.writeInteger(segment.baseOffset)
            buffer.writeInteger(segment.endOffset)
            buffer.writeInteger(segment.sizeBytes)
            buffer.writeInteger(segment.fencedEpoch)
            buffer.writeInteger(UInt8(segment.sealed ? 1 : 0))
            buffer.writeInteger(segment.maxTimestamp)
        }
        buffer.writeInteger(CRC32C.checksum(buffer, readableRange: 0..<buffer.readableBytes))
        return buffer.readBytes(length: buffer.readableBytes)!
    }

    static func decode(_ bytes: [UInt8], path: String) throws(StorageError) -> Checkpoint {
        func corrupt(_ detail: String) -> StorageError {
            .corruptEntry(SegmentID(logID: 0, number: 0), filePosition: 0, detail: "checkpoint \(path): \(detail)")
        }
        guard bytes.count >= 40 else { throw corrupt("\(bytes.count) bytes is too short") }
        let stored = bytes[(bytes.count - 4)...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let computed = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 4)])) }
        guard stored == computed else { throw corrupt("checksum mismatch") }
        var buffer = ByteBuffer(bytes: bytes[0..<(bytes.count - 4)])
        guard buffer.readInteger(as: UInt32.self) == magic else { throw corrupt("not a checkpoint") }
        guard buffer.readInteger(as: UInt32.self) == format else { throw corrupt("unknown format; a newer Aqueduct wrote it") }
        guard let file: UInt64 = buffer.readInteger(), let offset: Int64 = buffer.readInteger(),
            let sequence: UInt64 = buffer.readInteger(), let count: UInt32 = buffer.readInteger()
        else { throw corrupt("truncated header") }
        var segments: [Segment] = []
        for _ in 0..<count {
            guard let logID: UInt64 = buffer.readInteger(), let number: UInt64 = buffer.readInteger(),
                let base: Int64 = buffer.readInteger(), let end: Int64 = buffer.readInteger(),
                let size: Int64 = buffer.readInteger(), let fenced: UInt64 = buffer.readInteger(),
                let sealed: UInt8 = buffer.readInteger(), let maxTimestamp: Int64 = buffer.readInteger()
            else { throw corrupt("truncated segment list") }
            segments.append(Segment(
                id: SegmentID(logID: logID, number: number), baseOffset: base, endOffset: end, sizeBytes: size,
                fencedEpoch: fenced, sealed: sealed != 0, maxTimestamp: maxTimestamp))
        }
        return Checkpoint(journalPosition: JournalPosition(file: file, offset: offset), nextSequence: sequence, segments: segments)
    }
}
