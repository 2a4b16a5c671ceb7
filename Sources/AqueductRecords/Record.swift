import NIOCore

/// One record as clients see it: offset, timestamp, key, value and headers.
///
/// On the wire (inside a RecordBatch v2):
///
///     length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
///     keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
///     headerCount varint | (keyLength varint | key | valueLength varint | value)*
public struct Record: Equatable, Sendable {
    public var offset: Int64
    public var timestamp: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]

    public init(offset: Int64 = 0, timestamp: Int64, key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = []) {
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// Limit on the number of headers of one record, so a bad count cannot make the
    /// decoder reserve huge arrays.
    public static let headersCountMax = 65_536

    static func decode(from buffer: inout ByteBuffer, header: RecordBatchHeader) throws(RecordBatchError) -> Record {
        guard let length = Varint.read32(from: &buffer), length >= 0 else { throw .malformedRecord("bad record length") }
        guard var body = buffer.readSlice(length: Int(length)) else {
            throw .malformedRecord("record length \(length) exceeds the \(buffer.readableBytes) bytes left")
        }
        guard let _: Int8 = body.readInteger() else { throw .malformedRecord("missing attributes") }
        guard let timestampDelta = Varint.read(from: &body) else { throw .malformedRecord("bad timestamp delta") }
        guard let offsetDelta = Varint.read32(from: &body) else { throw .malformedRecord("bad offset delta") }
        let key = try readBytes(&body, what: "key")
        let value = try readBytes(&body, what: "value")
        guard let headerCount = Varint.read32(from: &body), headerCount >= 0, Int(headerCount) <= headersCountMax else {
            throw .malformedRecord("bad header count")
        }
        var headers: [RecordHeader] = []
        headers.reserveCapacity(Int(headerCount))
        for _ in 0..<Int(headerCount) {
            guard let keyBytes = try readBytes(&body, what: "header key") else {
                throw .malformedRecord("header key is null")
            }
            let headerValue = try readBytes(&body, what: "header value")
            headers.append(RecordHeader(key: String(decoding: keyBytes, as: UTF8.self), value: headerValue))
        }
        if body.readableBytes != 0 { throw .malformedRecord("\(body.readableBytes) bytes left inside a record") }
        // Wrapping, as Kafka's own readers: a producer chooses base and delta, and no
        // sum of them may trap.
        return Record(
            offset: header.baseOffset &+ Int64(offsetDelta),
            timestamp: header.baseTimestamp &+ timestampDelta,
            key: key, value: value, headers: headers)
    }

    private static func readBytes(_ buffer: inout ByteBuffer, what: String) throws(RecordBatchError) -> [UInt8]? {
        guard let length = Varint.read32(from: &buffer), length >= -1 else { throw .malformedRecord("bad \(what) length") }
        if length == -1 { return nil }
        guard let bytes = buffer.readBytes(length: Int(length)) else {
            throw .malformedRecord("\(what) length \(length) exceeds the \(buffer.readableBytes) bytes left")
        }
        return bytes
    }
}

public struct RecordHeader: Equatable, Sendable {
    public var key: String
    public var value: [UInt8]?
    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}
