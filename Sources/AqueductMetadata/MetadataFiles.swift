import AqueductCommon
import NIOCore

/// On-disk formats of the embedded metadata store. Big-endian throughout.
///
/// Log record: `length u32 | crc32c u32 | payload`, where `length` counts the payload
/// and the CRC covers it. Payload: `revision u64 | count u32 | operation*`, an
/// operation being `kind u8 (1 put, 2 delete) | keyLength u32 | key | valueLength u32 | value`.
///
/// Snapshot: `magic "AQMS" | format u32 (1) | revision u64 | count u32 |
/// (keyLength u32 | key | valueLength u32 | value | version u64 | createdVersion u64)* |
/// crc32c u32` (the CRC covers everything before it).
enum MetadataFiles {
    static let snapshotMagic: UInt32 = 0x4151_4D53  // "AQMS"
    static let snapshotFormat: UInt32 = 1
    static let recordHeaderBytes = 8

    static func encodeRecord(revision: UInt64, operations: [MetadataOperation]) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(revision)
        let written = operations.filter { if case .check = $0 { false } else { true } }
        payload.writeInteger(UInt32(written.count))
        for operation in written {
            switch operation {
            case .put(let key, let value, _):
                payload.writeInteger(UInt8(1))
                writeBytes(Array(key.utf8), to: &payload)
                writeBytes(value, to: &payload)
            case .delete(let key, _):
                payload.writeInteger(UInt8(2))
                writeBytes(Array(key.utf8), to: &payload)
                writeBytes([], to: &payload)
            case .check:
                break
            }
        }
        var record = ByteBuffer()
        record.writeInteger(UInt32(payload.readableBytes))
        record.writeInteger(CRC32C.checksum(payload, readableRange: 0..<payload.readableBytes))
        record.writeBuffer(&payload)
        return record
    }

    enum RecordParse {
        case record(revision: UInt64, operations: [MetadataOperation], size: Int)
        /// Not enough bytes, or a bad checksum: torn or corrupt; the caller decides which.
        case invalid
        case end
    }

    static func parseRecord(_ buffer: ByteBuffer, at index: Int) -> RecordParse {
        let available = buffer.writerIndex - index
        if available == 0 { return .end }
        guard available >= recordHeaderBytes,
            let length: UInt32 = buffer.getInteger(at: index),
            let crc: UInt32 = buffer.getInteger(at: index + 4),
            Int(length) <= available - recordHeaderBytes, length >= 12
        else { return .invalid }
        let payloadStart = index + recordHeaderBytes - buffer.readerIndex
        let computed = buffer.withUnsafeReadableBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[payloadStart..<(payloadStart + Int(length))]))
        }
        guard computed == crc else { return .invalid }
        var payload = buffer.getSlice(at: index + recordHeaderBytes, length: Int(length))!
        guard let revision: UInt64 = payload.readInteger(), let count: UInt32 = payload.readInteger() else { return .invalid }
        var operations: [MetadataOperation] = []
        for _ in 0..<count {
            guard let kind: UInt8 = payload.readInteger(),
                let key = readBytes(&payload), let value = readBytes(&payload)
            else { return .invalid }
            let keyString = String(decoding: key, as: UTF8.self)
            switch kind {
            case 1: operations.append(.put(key: keyString, value: value, expect: .any))
            case 2: operations.append(.delete(key: keyString, expect: .any))
            default: return .invalid
            }
        }
        return .record(revision: revision, operations: operations, size: recordHeaderBytes + Int(length))
    }

    static func encodeSnapshot(_ state: MetadataState) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(snapshotMagic)
        buffer.writeInteger(snapshotFormat)
        buffer.writeInteger(state.revision)
        buffer.writeInteger(UInt32(state.entries.count))
        for (key, stored) in state.entries.sorted(by: { $0.key < $1.key }) {
            writeBytes(Array(key.utf8), to: &buffer)
            writeBytes(stored.value, to: &buffer)
            buffer.writeInteger(stored.version)
            buffer.writeInteger(stored.createdVersion)
        }
        buffer.writeInteger(CRC32C.checksum(buffer, readableRange: 0..<buffer.readableBytes))
        return buffer.readBytes(length: buffer.readableBytes)!
    }

    static func decodeSnapshot(_ bytes: [UInt8], path: String) throws(MetadataError) -> MetadataState {
        guard bytes.count >= 24 else { throw .corrupt(path: path, detail: "snapshot of \(bytes.count) bytes is too short") }
        let stored = bytes[(bytes.count - 4)...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let computed = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 4)])) }
        guard stored == computed else { throw .corrupt(path: path, detail: "snapshot checksum mismatch") }
        var buffer = ByteBuffer(bytes: bytes[0..<(bytes.count - 4)])
        guard buffer.readInteger(as: UInt32.self) == snapshotMagic else { throw .corrupt(path: path, detail: "not a snapshot") }
        guard buffer.readInteger(as: UInt32.self) == snapshotFormat else {
            throw .corrupt(path: path, detail: "unknown snapshot format; a newer Aqueduct wrote it")
        }
        guard let revision: UInt64 = buffer.readInteger(), let count: UInt32 = buffer.readInteger() else {
            throw .corrupt(path: path, detail: "truncated snapshot header")
        }
        var entries: [String: VersionedValue] = [:]
        for _ in 0..<count {
            guard let key = readBytes(&buffer), let value = readBytes(&buffer),
                let version: UInt64 = buffer.readInteger(), let created: UInt64 = buffer.readInteger()
            else { throw .corrupt(path: path, detail: "truncated snapshot entry") }
            entries[String(decoding: key, as: UTF8.self)] = VersionedValue(value: value, version: version, createdVersion: created)
        }
        return MetadataState(entries: entries, revision: revision)
    }

    private static func writeBytes(_ bytes: [UInt8], to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
    }

    private static func readBytes(_ buffer: inout ByteBuffer) -> [UInt8]? {
        guard let length: UInt32 = buffer.readInteger(), Int(length) <= buffer.readableBytes else { return nil }
        return buffer.readBytes(length: Int(length))
    }
}
