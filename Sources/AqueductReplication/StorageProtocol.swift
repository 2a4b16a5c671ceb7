import AqueductCommon
import NIOCore

/// The storage nodes' wire protocol: what a segment's writer, its recovery and its
/// readers ask a node (BookKeeper's add, recovery add, read, read-LAC with fencing and
/// long poll), and the answers. Frames are length-prefixed, big-endian:
///
///     length:u32 (of what follows) | version:u8 = 1 | kind:u8 | requestID:u64 | body
///
/// An entry travels with a CRC-32C over (segment, entry, last-add-confirmed, payload),
/// computed by the writer, kept by the node and checked by whoever reads it.
public enum StorageProtocol {
    public static let version: UInt8 = 1
    /// length + version + kind + request id.
    public static let headerBytes = 4 + 1 + 1 + 8

    public enum Kind: UInt8, Sendable {
        case add = 1
        case read = 2
        case readLastAddConfirmed = 3
        case advertise = 4
        case addAnswer = 0x81
        case readAnswer = 0x82
        case lastAddConfirmedAnswer = 0x83
        case advertiseAnswer = 0x84
    }

    /// Answers' status codes (documented in docs/REPLICATION.md).
    public enum Status: UInt8, Sendable, Hashable {
        case ok = 0
        /// The segment is fenced: a normal add is refused (recovery adds are taken).
        case fenced = 1
        case noSuchSegment = 2
        case noSuchEntry = 3
        /// The entry's checksum does not match its bytes.
        case badChecksum = 4
        /// The payload passes the node's limit.
        case tooLarge = 5
        /// The node cannot store or read now (disk error, shutting down).
        case unavailable = 6
        /// A long poll ended without a newer last-add-confirmed.
        case timedOut = 7
    }

    public struct Entry: Sendable, Hashable {
        public var segment: UInt64
        public var entry: Int64
        /// The last-add-confirmed when the writer sent it (below `entry`).
        public var lastAddConfirmed: Int64
        public var payload: ByteBuffer
        public var checksum: UInt32

        /// An entry with its checksum computed.
        public init(segment: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: ByteBuffer) {
            self.segment = segment
            self.entry = entry
            self.lastAddConfirmed = lastAddConfirmed
            self.payload = payload
            checksum = Self.checksum(segment: segment, entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
        }

        /// An entry as received or stored, with the checksum it came with (check it with
        /// `isIntact`).
        public init(segment: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: ByteBuffer, checksum: UInt32) {
            self.segment = segment
            self.entry = entry
            self.lastAddConfirmed = lastAddConfirmed
            self.payload = payload
            self.checksum = checksum
        }

        public var isIntact: Bool {
            checksum == Self.checksum(segment: segment, entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
        }

        /// Over the big-endian position (as on the wire), then the payload: one pass, no copy.
        static func checksum(segment: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: ByteBuffer) -> UInt32 {
            let position = (segment.bigEndian, UInt64(bitPattern: entry).bigEndian, UInt64(bitPattern: lastAddConfirmed).bigEndian)
            let crc = withUnsafeBytes(of: position) { CRC32C.checksum($0) }
            return payload.withUnsafeReadableBytes { CRC32C.extend(crc, $0) }
        }
    }

    public enum Request: Sendable, Hashable {
        /// Store `entry` durably, then answer. A recovery add is taken by a fenced segment.
        case add(Entry, isRecovery: Bool)
        /// Read one entry; with `fence`, fence the segment first (recovery reads).
        case read(segment: UInt64, entry: Int64, fence: Bool)
        /// The node's last-add-confirmed and last stored entry; with `fence`, fence first
        /// (how recovery starts). With `after`, a long poll: answer once the
        /// last-add-confirmed passes it, or `timedOut` after `waitMilliseconds`.
        case readLastAddConfirmed(segment: UInt64, fence: Bool, after: Int64?, waitMilliseconds: UInt32)
        /// An explicit last-add-confirmed from an idle writer.
        case advertise(segment: UInt64, lastAddConfirmed: Int64)
    }

    public enum Answer: Sendable, Hashable {
        case added(Status)
        /// The entry when `ok`.
        case read(Status, Entry?)
        /// The node's last-add-confirmed and last stored entry (-1: none).
        case lastAddConfirmed(Status, lastAddConfirmed: Int64, lastEntry: Int64)
        case advertised(Status)
    }

    public enum DecodeError: Error, Sendable, Hashable, CustomStringConvertible {
        case frameTooLarge(bytes: Int, limit: Int)
        case unsupportedVersion(UInt8)
        case unknownKind(UInt8)
        case unknownStatus(UInt8)
        case malformed(String)

        public var description: String {
            switch self {
            case let .frameTooLarge(bytes, limit): "a frame of \(bytes) bytes passes the limit of \(limit)"
            case let .unsupportedVersion(version): "protocol version \(version) is not served (this node speaks \(StorageProtocol.version))"
            case let .unknownKind(kind): "unknown message kind \(kind)"
            case let .unknownStatus(status): "unknown status \(status)"
            case let .malformed(what): "malformed frame: \(what)"
            }
        }
    }

    // MARK: - Encoding

    public static func encode(_ request: Request, id: UInt64, into buffer: inout ByteBuffer) {
        switch request {
        case let .add(entry, isRecovery):
            frame(.add, id, into: &buffer) { body in
                body.writeInteger(UInt8(isRecovery ? 1 : 0))
                write(entry, into: &body)
            }
        case let .read(segment, entry, fence):
            frame(.read, id, into: &buffer) { body in
                body.writeInteger(segment)
                body.writeInteger(entry)
                body.writeInteger(UInt8(fence ? 1 : 0))
            }
        case let .readLastAddConfirmed(segment, fence, after, wait):
            frame(.readLastAddConfirmed, id, into: &buffer) { body in
                body.writeInteger(segment)
                body.writeInteger(UInt8((fence ? 1 : 0) | (after != nil ? 2 : 0)))
                body.writeInteger(after ?? -1)
                body.writeInteger(wait)
            }
        case let .advertise(segment, lastAddConfirmed):
            frame(.advertise, id, into: &buffer) { body in
                body.writeInteger(segment)
                body.writeInteger(lastAddConfirmed)
            }
        }
    }

    public static func encode(_ answer: Answer, id: UInt64, into buffer: inout ByteBuffer) {
        switch answer {
        case let .added(status):
            frame(.addAnswer, id, into: &buffer) { $0.writeInteger(status.rawValue) }
        case let .read(status, entry):
            frame(.readAnswer, id, into: &buffer) { body in
                body.writeInteger(status.rawValue)
                if status == .ok, let entry { write(entry, into: &body) }
            }
        case let .lastAddConfirmed(status, lac, last):
            frame(.lastAddConfirmedAnswer, id, into: &buffer) { body in
                body.writeInteger(status.rawValue)
                body.writeInteger(lac)
                body.writeInteger(last)
            }
        case let .advertised(status):
            frame(.advertiseAnswer, id, into: &buffer) { $0.writeInteger(status.rawValue) }
        }
    }

    private static func frame(_ kind: Kind, _ id: UInt64, into buffer: inout ByteBuffer, body: (inout ByteBuffer) -> Void) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(version)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(id)
        body(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - start - 4), at: start)
    }

    private static func write(_ entry: Entry, into body: inout ByteBuffer) {
        body.writeInteger(entry.segment)
        body.writeInteger(entry.entry)
        body.writeInteger(entry.lastAddConfirmed)
        body.writeInteger(entry.checksum)
        body.writeInteger(UInt32(entry.payload.readableBytes))
        var payload = entry.payload
        body.writeBuffer(&payload)
    }

    // MARK: - Decoding

    /// One whole frame off the front of `buffer`, or nil (nothing consumed) until all of
    /// it has arrived. A frame longer than `frameBytesMax` is refused before it is read.
    public static func nextFrame(_ buffer: inout ByteBuffer, frameBytesMax: Int) throws(DecodeError) -> (kind: Kind, id: UInt64, body: ByteBuffer)? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard Int(length) <= frameBytesMax else { throw .frameTooLarge(bytes: Int(length), limit: frameBytesMax) }
        guard Int(length) >= headerBytes - 4 else { throw .malformed("a frame of \(length) bytes is shorter than its header") }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var frame = buffer.readSlice(length: Int(length))!
        let version: UInt8 = frame.readInteger()!
        let kindByte: UInt8 = frame.readInteger()!
        let id: UInt64 = frame.readInteger()!
        guard version == Self.version else { throw .unsupportedVersion(version) }
        guard let kind = Kind(rawValue: kindByte) else { throw .unknownKind(kindByte) }
        return (kind, id, frame)
    }

    public static func decodeRequest(_ kind: Kind, _ body: ByteBuffer) throws(DecodeError) -> Request {
        var body = body
        let request: Request
        switch kind {
        case .add:
            let flags: UInt8 = try read(&body, "add flags")
            request = .add(try readEntry(&body), isRecovery: flags & 1 != 0)
        case .read:
            let segment: UInt64 = try read(&body, "segment")
            let entry: Int64 = try read(&body, "entry")
            let flags: UInt8 = try read(&body, "read flags")
            guard entry >= 0 else { throw .malformed("a read of entry \(entry)") }
            request = .read(segment: segment, entry: entry, fence: flags & 1 != 0)
        case .readLastAddConfirmed:
            let segment: UInt64 = try read(&body, "segment")
            let flags: UInt8 = try read(&body, "flags")
            let after: Int64 = try read(&body, "long-poll position")
            let wait: UInt32 = try read(&body, "long-poll wait")
            guard after >= -1 else { throw .malformed("a long poll after entry \(after)") }
            request = .readLastAddConfirmed(segment: segment, fence: flags & 1 != 0, after: flags & 2 != 0 ? after : nil, waitMilliseconds: wait)
        case .advertise:
            let segment: UInt64 = try read(&body, "segment")
            let lac: Int64 = try read(&body, "last-add-confirmed")
            guard lac >= -1 else { throw .malformed("a last-add-confirmed of \(lac)") }
            request = .advertise(segment: segment, lastAddConfirmed: lac)
        default:
            throw .malformed("an answer (kind \(kind.rawValue)) where a request was expected")
        }
        guard body.readableBytes == 0 else { throw .malformed("\(body.readableBytes) bytes after the message") }
        return request
    }

    public static func decodeAnswer(_ kind: Kind, _ body: ByteBuffer) throws(DecodeError) -> Answer {
        var body = body
        let statusByte: UInt8 = try read(&body, "status")
        guard let status = Status(rawValue: statusByte) else { throw .unknownStatus(statusByte) }
        let answer: Answer
        switch kind {
        case .addAnswer: answer = .added(status)
        case .readAnswer: answer = .read(status, status == .ok ? try readEntry(&body) : nil)
        case .lastAddConfirmedAnswer:
            answer = .lastAddConfirmed(status, lastAddConfirmed: try read(&body, "last-add-confirmed"), lastEntry: try read(&body, "last entry"))
        case .advertiseAnswer: answer = .advertised(status)
        default: throw .malformed("a request (kind \(kind.rawValue)) where an answer was expected")
        }
        guard body.readableBytes == 0 else { throw .malformed("\(body.readableBytes) bytes after the message") }
        return answer
    }

    private static func read<T: FixedWidthInteger>(_ body: inout ByteBuffer, _ what: String) throws(DecodeError) -> T {
        guard let value: T = body.readInteger() else { throw .malformed("the frame ends before its \(what)") }
        return value
    }

    private static func readEntry(_ body: inout ByteBuffer) throws(DecodeError) -> Entry {
        let segment: UInt64 = try read(&body, "segment")
        let entry: Int64 = try read(&body, "entry")
        let lac: Int64 = try read(&body, "last-add-confirmed")
        let checksum: UInt32 = try read(&body, "checksum")
        let length: UInt32 = try read(&body, "payload length")
        guard entry >= 0, lac >= -1 else { throw .malformed("entry \(entry) with last-add-confirmed \(lac)") }
        guard let payload = body.readSlice(length: Int(length)) else {
            throw .malformed("a payload of \(length) bytes in \(body.readableBytes)")
        }
        return Entry(segment: segment, entry: entry, lastAddConfirmed: lac, payload: payload, checksum: checksum)
    }
}
