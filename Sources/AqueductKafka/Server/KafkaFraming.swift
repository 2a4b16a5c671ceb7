import NIOCore

/// Splits a connection's bytes into Kafka frames: a 4-byte big-endian size, then that
/// many bytes. A size below the smallest request header or above the limit closes the
/// connection (the stream cannot be resynchronised), as Kafka's own broker does.
struct KafkaFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    /// Largest frame accepted, in bytes (Kafka's socket.request.max.bytes).
    let frameBytesMax: Int
    /// apiKey i16 + apiVersion i16 + correlationId i32.
    static let frameBytesMin = 8

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return .needMoreData }
        guard size >= Self.frameBytesMin, Int(size) <= frameBytesMax else {
            throw KafkaFrameError.invalidSize(Int(size), limit: frameBytesMax)
        }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(size))!))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

enum KafkaFrameError: Error, CustomStringConvertible {
    case invalidSize(Int, limit: Int)

    var description: String {
        switch self {
        case .invalidSize(let size, let limit):
            "frame size \(size) is outside \(KafkaFrameDecoder.frameBytesMin)...\(limit) bytes (socket.request.max.bytes)"
        }
    }
}
