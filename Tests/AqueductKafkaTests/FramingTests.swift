import NIOCore
import NIOEmbedded
import Testing

@testable import AqueductKafka

@Suite struct FramingTests {
    func channel(limit: Int = 1_024) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: limit)))
        return channel
    }

    @Test func framesAreSplitWhateverTheChunking() throws {
        let channel = try channel()
        var bytes = ByteBuffer()
        for size in [8, 20, 9] {
            bytes.writeInteger(Int32(size))
            bytes.writeRepeatingByte(UInt8(size), count: size)
        }
        // One byte at a time.
        for index in 0..<bytes.readableBytes {
            try channel.writeInbound(bytes.getSlice(at: index, length: 1)!)
        }
        for size in [8, 20, 9] {
            let frame = try #require(try channel.readInbound(as: ByteBuffer.self))
            #expect(frame.readableBytes == size && frame.getInteger(at: 0, as: UInt8.self) == UInt8(size))
        }
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }

    @Test func oversizedNegativeAndTinyFramesCloseTheConnection() throws {
        for size: Int32 in [1_025, -1, 3, Int32.max] {
            let channel = try channel()
            var bytes = ByteBuffer()
            bytes.writeInteger(size)
            #expect(throws: KafkaFrameError.self) { try channel.writeInbound(bytes) }
            _ = try? channel.finish()
        }
    }
}
