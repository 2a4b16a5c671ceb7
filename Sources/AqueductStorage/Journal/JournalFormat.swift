import AqueductCommon
import NIOCore

/// The journal's on-disk format. A journal file is a sequence of blocks; one block is
/// what one group commit wrote (and one fdatasync covered). A file ends with a block
/// holding one `fileEnd` record; what follows it (zeroes, or blocks from the file's
/// previous life, with lower sequences) is not journal data.
///
///     block:  magic u32 "AQJB" | length u32 | sequence u64 | crc32c u32 | record*
///     record: kind u8 | logID u64 | segment u64 | epoch u64 | value i64 | length u32 | payload
///
/// `length` of a block counts its records; the CRC-32C covers length, sequence and the
/// records. Sequences are dense across files, so a missing or repeated block is seen.
/// `value` is the base offset for `create`, unused otherwise; `payload` is the record
/// batch for `add`, empty otherwise. Big-endian throughout.
enum JournalFormat {
    static let blockMagic: UInt32 = 0x4151_4A42  // "AQJB"
    static let blockHeaderBytes = 20
    static let recordHeaderBytes = 37
    /// Most blocks ever written at once (`journalWritesInFlightMax` is clamped to it).
    /// Recovery relies on it: a damaged block followed by fewer valid blocks than this,
    /// up to the journal's end, is a torn tail, since none of them can have been
    /// acknowledged (acknowledgements go in order).
    static let writesInFlightLimit = 4
    /// Longest block a reader accepts, whatever the configuration was.
    static let blockBytesLimit = 256 << 20

    enum Kind: UInt8 {
        case add = 1
        case create = 2
        case fence = 3
        case seal = 4
        case delete = 5
        /// The last block of a journal file: the journal goes on in the next file.
        case fileEnd = 6
    }

    struct Record {
        var kind: Kind
        var segment: SegmentID
        var epoch: UInt64
        var value: Int64
        var payload: ByteBuffer
    }

    static func writeRecordHeader(
        _ kind: Kind, segment: SegmentID, epoch: UInt64, value: Int64, payloadBytes: Int, to buffer: inout ByteBuffer
    ) {
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(segment.logID)
        buffer.writeInteger(segment.number)
        buffer.writeInteger(epoch)
        buffer.writeInteger(value)
        buffer.writeInteger(UInt32(payloadBytes))
    }

    /// Reserves room for a block header at the writer index; `sealBlock` fills it in.
    static func beginBlock(_ buffer: inout ByteBuffer) -> Int {
        let start = buffer.writerIndex
        buffer.writeRepeatingByte(0, count: blockHeaderBytes)
        return start
    }

    /// Fills in a block header's magic, length and sequence (the CRC comes last, with
    /// `setBlockChecksum`), for a block whose records are written in pieces.
    static func setBlockHeader(_ buffer: inout ByteBuffer, start: Int, recordsBytes: Int, sequence: UInt64) {
        buffer.setInteger(blockMagic, at: start)
        buffer.setInteger(UInt32(recordsBytes), at: start + 4)
        buffer.setInteger(sequence, at: start + 8)
    }

    /// The CRC-32C of length, sequence and records (`CRC32C.extend` over them in order).
    static func setBlockChecksum(_ buffer: inout ByteBuffer, start: Int, crc: UInt32) {
        buffer.setInteger(crc, at: start + 16)
    }

    static func sealBlock(_ buffer: inout ByteBuffer, start: Int, sequence: UInt64) {
        let recordsBytes = buffer.writerIndex - start - blockHeaderBytes
        buffer.setInteger(blockMagic, at: start)
        buffer.setInteger(UInt32(recordsBytes), at: start + 4)
        buffer.setInteger(sequence, at: start + 8)
        let relative = start - buffer.readerIndex
        let crc = buffer.withUnsafeReadableBytes { raw -> UInt32 in
            let lengthAndSequence = UnsafeRawBufferPointer(rebasing: raw[(relative + 4)..<(relative + 16)])
            let records = UnsafeRawBufferPointer(rebasing: raw[(relative + blockHeaderBytes)..<(relative + blockHeaderBytes + recordsBytes)])
            return CRC32C.extend(CRC32C.checksum(lengthAndSequence), records)
        }
        buffer.setInteger(crc, at: start + 16)
    }

    enum BlockParse {
        case block(sequence: UInt64, records: [Record], size: Int)
        case invalid(reason: String)
        case end
    }

    /// Parses the block at absolute `index` of `buffer`.
    static func parseBlock(_ buffer: ByteBuffer, at index: Int) -> BlockParse {
        let available = buffer.writerIndex - index
        if available == 0 { return .end }
        guard available >= blockHeaderBytes else { return .invalid(reason: "\(available) bytes, shorter than a block header") }
        let magic: UInt32 = buffer.getInteger(at: index)!
        let length: UInt32 = buffer.getInteger(at: index + 4)!
        let sequence: UInt64 = buffer.getInteger(at: index + 8)!
        let crc: UInt32 = buffer.getInteger(at: index + 16)!
        if magic == 0 && length == 0 && sequence == 0 { return .invalid(reason: "zeroes") }
        guard magic == blockMagic else { return .invalid(reason: "bad magic") }
        guard Int(length) <= blockBytesLimit, Int(length) <= available - blockHeaderBytes else {
            return .invalid(reason: "block length \(length) runs past the end (\(available - blockHeaderBytes) bytes left)")
        }
        let relative = index - buffer.readerIndex
        let computed = buffer.withUnsafeReadableBytes { raw -> UInt32 in
            let lengthAndSequence = UnsafeRawBufferPointer(rebasing: raw[(relative + 4)..<(relative + 16)])
            let records = UnsafeRawBufferPointer(rebasing: raw[(relative + blockHeaderBytes)..<(relative + blockHeaderBytes + Int(length))])
            return CRC32C.extend(CRC32C.checksum(lengthAndSequence), records)
        }
        guard computed == crc else { return .invalid(reason: "checksum mismatch") }
        var body = buffer.getSlice(at: index + blockHeaderBytes, length: Int(length))!
        var records: [Record] = []
        while body.readableBytes > 0 {
            guard body.readableBytes >= recordHeaderBytes,
                let kindByte: UInt8 = body.readInteger(), let kind = Kind(rawValue: kindByte),
                let logID: UInt64 = body.readInteger(), let number: UInt64 = body.readInteger(),
                let epoch: UInt64 = body.readInteger(), let value: Int64 = body.readInteger(),
                let payloadBytes: UInt32 = body.readInteger(),
                let payload = body.readSlice(length: Int(payloadBytes))
            else {
                // The CRC matched, so this is a bug in the writer, not the disk.
                return .invalid(reason: "malformed record inside a block with a valid checksum")
            }
            records.append(Record(kind: kind, segment: SegmentID(logID: logID, number: number), epoch: epoch, value: value, payload: payload))
        }
        return .block(sequence: sequence, records: records, size: blockHeaderBytes + Int(length))
    }

    static func fileName(number: UInt64) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".journal"
    }

    static func fileNumber(of name: String) -> UInt64? {
        guard name.hasSuffix(".journal") else { return nil }
        return UInt64(name.dropLast(".journal".count))
    }
}

/// A point in the journal: a file and a byte position in it.
struct JournalPosition: Comparable, Hashable, Sendable, Codable {
    var file: UInt64
    var offset: Int64

    static func < (a: JournalPosition, b: JournalPosition) -> Bool {
        (a.file, a.offset) < (b.file, b.offset)
    }
}
