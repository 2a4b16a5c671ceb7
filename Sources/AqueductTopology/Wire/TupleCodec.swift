/// The binary form of what stream managers send each other between containers: batches
/// of tuples for a task, acks and fails for a spout task, backpressure on and off.
///
/// Frame: u32 length (of what follows, little-endian), u8 kind, payload. All integers
/// little-endian. A tuple is: u32 source task, u16 stream index (in the source
/// component's declared streams: both ends run the same topology), u16 anchor count,
/// anchors (u32 root task, u64 root key, u64 edge), u16 value count, values (u8 tag, then
/// null: -, bool: u8, int: i64, double: u64 bits, string/bytes: u32 length + bytes,
/// list: u32 count + values).
///
/// Decoding checks every length against the frame and the limits below and throws
/// `TupleCodecError`, never traps: a peer's bad bytes close that connection only.
/// Encoding never traps either: `problem(of:)` names what a tuple has beyond those
/// limits (too many anchors or values, lists too deep, too large), and the stream
/// manager fails such a tuple's trees instead of sending it.
enum TupleCodec {
    enum Kind: UInt8 {
        case tuples = 1
        case control = 2
        case backpressure = 3
    }

    enum Frame: Equatable {
        case tuples(destinationTask: Int, [EncodedTuple])
        case control(spoutTask: Int, [ControlQueue.Message])
        case backpressure(container: Int, engaged: Bool)
    }

    /// A tuple on the wire: its source is named by task and stream index.
    struct EncodedTuple: Equatable {
        var sourceTask: Int
        var streamIndex: Int
        var anchors: [(root: TupleRoot, edge: UInt64)]
        var values: TupleValues

        static func == (left: EncodedTuple, right: EncodedTuple) -> Bool {
            left.sourceTask == right.sourceTask && left.streamIndex == right.streamIndex && left.values == right.values
                && left.anchors.count == right.anchors.count
                && zip(left.anchors, right.anchors).allSatisfy { $0.root == $1.root && $0.edge == $1.edge }
        }
    }

    static let frameBytesMax = 64 << 20
    static let valuesPerTupleMax = 4_096
    static let listDepthMax = 8
    /// Distinct tuple trees one tuple may belong to across containers.
    static let anchorsPerTupleMax = Int(UInt16.max)
    static let streamsPerComponentMax = Int(UInt16.max)
    /// Largest encoded tuple; a frame holds at least one.
    static let tupleBytesMax = frameBytesMax - 64

    /// Why a tuple cannot go to another container, or nil when it can.
    static func problem(of tuple: EncodedTuple) -> String? {
        if tuple.anchors.count > anchorsPerTupleMax { return "\(tuple.anchors.count) anchors (most \(anchorsPerTupleMax))" }
        if tuple.values.count > valuesPerTupleMax { return "\(tuple.values.count) values (most \(valuesPerTupleMax))" }
        if tuple.streamIndex < 0 || tuple.streamIndex > streamsPerComponentMax { return "stream index \(tuple.streamIndex)" }
        var bytes = 12 + 20 * tuple.anchors.count
        for value in tuple.values {
            guard let size = encodedSize(value, depth: 0) else { return "a list nested deeper than \(listDepthMax)" }
            bytes += size
            if bytes > tupleBytesMax { return "more than \(tupleBytesMax) bytes" }
        }
        return nil
    }

    /// Bytes a value takes encoded, or nil when lists nest too deep.
    private static func encodedSize(_ value: TupleValue, depth: Int) -> Int? {
        switch value {
        case .null: return 1
        case .bool: return 2
        case .int, .double: return 9
        case .string(let text): return 5 + text.utf8.count
        case .bytes(let bytes): return 5 + bytes.count
        case .list(let values):
            guard depth < listDepthMax else { return nil }
            var total = 5
            for element in values {
                guard let size = encodedSize(element, depth: depth + 1) else { return nil }
                total += size
                if total > tupleBytesMax { return total }
            }
            return total
        }
    }

    // MARK: Encoding

    static func encode(_ frame: Frame, into out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        switch frame {
        case .tuples(let destination, let tuples):
            out.append(Kind.tuples.rawValue)
            put32(UInt32(truncatingIfNeeded: destination), &out)
            put32(UInt32(truncatingIfNeeded: tuples.count), &out)
            for tuple in tuples { encode(tuple, into: &out) }
        case .control(let spoutTask, let messages):
            out.append(Kind.control.rawValue)
            put32(UInt32(truncatingIfNeeded: spoutTask), &out)
            put32(UInt32(truncatingIfNeeded: messages.count), &out)
            for message in messages {
                switch message {
                case .ack(let key, let value):
                    out.append(1)
                    put64(key, &out)
                    put64(value, &out)
                case .fail(let key):
                    out.append(2)
                    put64(key, &out)
                    put64(0, &out)
                }
            }
        case .backpressure(let container, let engaged):
            out.append(Kind.backpressure.rawValue)
            put32(UInt32(truncatingIfNeeded: container), &out)
            out.append(engaged ? 1 : 0)
        }
        let length = UInt32(truncatingIfNeeded: out.count - start - 4)
        for index in 0..<4 { out[start + index] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(index))) }
    }

    /// Encodes a tuple `problem(of:)` found nothing wrong with (lengths are written
    /// truncated, never trapping, should one slip through: the peer refuses the frame).
    static func encode(_ tuple: EncodedTuple, into out: inout [UInt8]) {
        put32(UInt32(truncatingIfNeeded: tuple.sourceTask), &out)
        put16(UInt16(truncatingIfNeeded: tuple.streamIndex), &out)
        put16(UInt16(truncatingIfNeeded: tuple.anchors.count), &out)
        for anchor in tuple.anchors {
            put32(UInt32(truncatingIfNeeded: anchor.root.task), &out)
            put64(anchor.root.key, &out)
            put64(anchor.edge, &out)
        }
        put16(UInt16(truncatingIfNeeded: tuple.values.count), &out)
        for value in tuple.values { encode(value, into: &out) }
    }

    static func encode(_ value: TupleValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(0)
        case .bool(let flag): out.append(1); out.append(flag ? 1 : 0)
        case .int(let number): out.append(2); put64(UInt64(bitPattern: number), &out)
        case .double(let number): out.append(3); put64(number.bitPattern, &out)
        case .string(let text):
            out.append(4)
            var text = text
            text.withUTF8 { bytes in
                put32(UInt32(truncatingIfNeeded: bytes.count), &out)
                out.append(contentsOf: bytes)
            }
        case .bytes(let bytes):
            out.append(5)
            put32(UInt32(truncatingIfNeeded: bytes.count), &out)
            out.append(contentsOf: bytes)
        case .list(let values):
            out.append(6)
            put32(UInt32(truncatingIfNeeded: values.count), &out)
            for element in values { encode(element, into: &out) }
        }
    }

    private static func put16(_ value: UInt16, _ out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: value))
        out.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    private static func put32(_ value: UInt32, _ out: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private static func put64(_ value: UInt64, _ out: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    // MARK: Decoding

    /// Decodes one whole frame body (the bytes after the length prefix).
    static func decode(frameBody bytes: ArraySlice<UInt8>) throws(TupleCodecError) -> Frame {
        var reader = Reader(bytes: bytes)
        guard let kind = Kind(rawValue: try reader.u8()) else { throw .unknownKind(bytes.first ?? 0) }
        let frame: Frame
        switch kind {
        case .tuples:
            let destination = Int(try reader.u32())
            let count = Int(try reader.u32())
            // Each tuple takes at least 10 bytes: a count beyond that is a lie.
            guard count <= reader.remaining / 10 else { throw .lengthBeyondFrame("tuple count \(count)") }
            var tuples: [EncodedTuple] = []
            tuples.reserveCapacity(count)
            for _ in 0..<count { tuples.append(try decodeTuple(&reader)) }
            frame = .tuples(destinationTask: destination, tuples)
        case .control:
            let spoutTask = Int(try reader.u32())
            let count = Int(try reader.u32())
            guard count <= reader.remaining / 17 else { throw .lengthBeyondFrame("control count \(count)") }
            var messages: [ControlQueue.Message] = []
            messages.reserveCapacity(count)
            for _ in 0..<count {
                let type = try reader.u8()
                let key = try reader.u64()
                let value = try reader.u64()
                switch type {
                case 1: messages.append(.ack(key: key, value: value))
                case 2: messages.append(.fail(key: key))
                default: throw .badValue("control message type \(type)")
                }
            }
            frame = .control(spoutTask: spoutTask, messages)
        case .backpressure:
            let container = Int(try reader.u32())
            let engaged = try reader.u8()
            guard engaged <= 1 else { throw .badValue("backpressure flag \(engaged)") }
            frame = .backpressure(container: container, engaged: engaged == 1)
        }
        guard reader.remaining == 0 else { throw .trailingBytes(reader.remaining) }
        return frame
    }

    private static func decodeTuple(_ reader: inout Reader) throws(TupleCodecError) -> EncodedTuple {
        let sourceTask = Int(try reader.u32())
        let streamIndex = Int(try reader.u16())
        let anchorCount = Int(try reader.u16())
        // Each anchor takes 20 bytes: a count beyond what is left is a lie.
        guard anchorCount <= reader.remaining / 20 else { throw .lengthBeyondFrame("anchor count \(anchorCount)") }
        var anchors: [(root: TupleRoot, edge: UInt64)] = []
        anchors.reserveCapacity(anchorCount)
        for _ in 0..<anchorCount {
            let task = Int(try reader.u32())
            let key = try reader.u64()
            let edge = try reader.u64()
            anchors.append((TupleRoot(task: task, key: key), edge))
        }
        let valueCount = Int(try reader.u16())
        guard valueCount <= valuesPerTupleMax else { throw .limit("\(valueCount) values in a tuple (most \(valuesPerTupleMax))") }
        var values: [TupleValue] = []
        values.reserveCapacity(valueCount)
        for _ in 0..<valueCount { values.append(try decodeValue(&reader, depth: 0)) }
        return EncodedTuple(sourceTask: sourceTask, streamIndex: streamIndex, anchors: anchors, values: TupleValues(values))
    }

    private static func decodeValue(_ reader: inout Reader, depth: Int) throws(TupleCodecError) -> TupleValue {
        let tag = try reader.u8()
        switch tag {
        case 0: return .null
        case 1:
            let flag = try reader.u8()
            guard flag <= 1 else { throw .badValue("bool \(flag)") }
            return .bool(flag == 1)
        case 2: return .int(Int64(bitPattern: try reader.u64()))
        case 3: return .double(Double(bitPattern: try reader.u64()))
        case 4:
            let bytes = try reader.bytes(Int(try reader.u32()))
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .badValue("string is not UTF-8") }
            return .string(text)
        case 5: return .bytes(Array(try reader.bytes(Int(try reader.u32()))))
        case 6:
            guard depth < listDepthMax else { throw .limit("lists nested deeper than \(listDepthMax)") }
            let count = Int(try reader.u32())
            guard count <= reader.remaining else { throw .lengthBeyondFrame("list of \(count)") }
            var values: [TupleValue] = []
            values.reserveCapacity(count)
            for _ in 0..<count { values.append(try decodeValue(&reader, depth: depth + 1)) }
            return .list(values)
        default:
            throw .badValue("value tag \(tag)")
        }
    }

    private struct Reader {
        let bytes: ArraySlice<UInt8>
        var position: Int

        init(bytes: ArraySlice<UInt8>) {
            self.bytes = bytes
            position = bytes.startIndex
        }

        var remaining: Int { bytes.endIndex - position }

        mutating func bytes(_ count: Int) throws(TupleCodecError) -> ArraySlice<UInt8> {
            guard count >= 0, count <= remaining else { throw .lengthBeyondFrame("\(count) bytes at \(position - bytes.startIndex)") }
            defer { position += count }
            return bytes[position..<position + count]
        }

        mutating func u8() throws(TupleCodecError) -> UInt8 { try bytes(1).first! }

        mutating func u16() throws(TupleCodecError) -> UInt16 {
            let raw = try bytes(2)
            return UInt16(raw[raw.startIndex]) | UInt16(raw[raw.startIndex + 1]) << 8
        }

        mutating func u32() throws(TupleCodecError) -> UInt32 {
            let raw = try bytes(4)
            var value: UInt32 = 0
            for index in 0..<4 { value |= UInt32(raw[raw.startIndex + index]) << UInt32(8 * index) }
            return value
        }

        mutating func u64() throws(TupleCodecError) -> UInt64 {
            let raw = try bytes(8)
            var value: UInt64 = 0
            for index in 0..<8 { value |= UInt64(raw[raw.startIndex + index]) << UInt64(8 * index) }
            return value
        }
    }
}

/// Why bytes from a peer stream manager were refused.
enum TupleCodecError: Error, Equatable, CustomStringConvertible {
    case unknownKind(UInt8)
    case lengthBeyondFrame(String)
    case badValue(String)
    case limit(String)
    case trailingBytes(Int)

    var description: String {
        switch self {
        case .unknownKind(let kind): "unknown frame kind \(kind)"
        case .lengthBeyondFrame(let what): "\(what) runs past the end of the frame"
        case .badValue(let what): "bad value: \(what)"
        case .limit(let what): "over a limit: \(what)"
        case .trailingBytes(let count): "\(count) bytes after the frame's content"
        }
    }
}

