import NIOCore
import NIOEmbedded
import Testing

@testable import AqueductKafka

@Suite struct FramingTests {
    func channel(limit: Int = 1_024, pool: KafkaMemoryPool = KafkaMemoryPool(capacity: 1 << 20), timeoutMilliseconds: Int64 = 120_000) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(KafkaFrameHandler(frameBytesMax: limit, pool: pool, frameReadTimeoutMilliseconds: timeoutMilliseconds))
        return channel
    }

    func frame(size: Int) -> ByteBuffer {
        var bytes = ByteBuffer()
        bytes.writeInteger(Int32(size))
        bytes.writeRepeatingByte(UInt8(truncatingIfNeeded: size), count: size)
        return bytes
    }

    @Test func framesAreSplitWhateverTheChunking() throws {
        let channel = try channel()
        var bytes = ByteBuffer()
        for size in [8, 20, 9] {
            var one = frame(size: size)
            bytes.writeBuffer(&one)
        }
        // One byte at a time.
        for index in 0..<bytes.readableBytes {
            try channel.writeInbound(bytes.getSlice(at: index, length: 1)!)
        }
        for size in [8, 20, 9] {
            let frame = try #require(try channel.readInbound(as: KafkaFrame.self))
            #expect(frame.bytes.readableBytes == size && frame.bytes.getInteger(at: 0, as: UInt8.self) == UInt8(size))
        }
        #expect(try channel.readInbound(as: KafkaFrame.self) == nil)
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

    @Test func aFullPoolHoldsBackFramesUntilEarlierOnesAreAnswered() throws {
        let pool = KafkaMemoryPool(capacity: 100)
        let first = try channel(pool: pool)
        let second = try channel(pool: pool)
        try first.writeInbound(frame(size: 60))
        var held = try #require(try first.readInbound(as: KafkaFrame.self))
        #expect(pool.used == 64)
        // Another connection's frame does not fit: it waits, whole or not.
        try second.writeInbound(frame(size: 60))
        #expect(try second.readInbound(as: KafkaFrame.self) == nil)
        #expect(pool.used == 64)
        // The first request is answered (its frame let go): the second goes on.
        held = KafkaFrame(bytes: ByteBuffer())
        _ = held
        second.embeddedEventLoop.run()
        let next = try #require(try second.readInbound(as: KafkaFrame.self))
        #expect(next.bytes.readableBytes == 60 && pool.used == 64)
        _ = try first.finish()
        _ = try second.finish()
    }

    @Test func aClosedConnectionGivesBackWhatItsFramesHeld() throws {
        let pool = KafkaMemoryPool(capacity: 1_000)
        do {
            let channel = try channel(pool: pool)
            try channel.writeInbound(frame(size: 100))
            // Half of another frame: reserved whole, then the connection closes.
            var partial = frame(size: 200)
            try channel.writeInbound(partial.readSlice(length: 50)!)
            #expect(pool.used == 104 + 204)
            _ = try channel.finish(acceptAlreadyClosed: true)
        }
        #expect(pool.used == 0)
    }

    @Test func largeFramesShareHalfThePoolSoSmallRequestsGoOn() throws {
        let pool = KafkaMemoryPool(capacity: 1_000, largeFrameBytes: 100)
        let big = try channel(pool: pool)
        let bigger = try channel(pool: pool)
        let small = try channel(pool: pool)
        // Announced, never sent: the first large frame holds 404 bytes...
        var header = ByteBuffer()
        header.writeInteger(Int32(400))
        try big.writeInbound(header)
        #expect(pool.used == 404)
        // ...a second one would pass half of the pool: it waits...
        try bigger.writeInbound(header)
        #expect(pool.used == 404)
        // ...and ordinary requests still get through.
        for _ in 0..<5 {
            try small.writeInbound(frame(size: 50))
            #expect(try small.readInbound(as: KafkaFrame.self)?.bytes.readableBytes == 50)
        }
        _ = try? big.finish(acceptAlreadyClosed: true)
        _ = try? bigger.finish(acceptAlreadyClosed: true)
        _ = try? small.finish(acceptAlreadyClosed: true)
    }

    @Test func aFrameThatDoesNotArriveInTimeClosesItsConnection() throws {
        let pool = KafkaMemoryPool(capacity: 1 << 20)
        let channel = try channel(pool: pool, timeoutMilliseconds: 1_000)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        var partial = frame(size: 500)
        try channel.writeInbound(partial.readSlice(length: 100)!)
        #expect(pool.used == 504 && channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        #expect(!channel.isActive && pool.used == 0)
        #expect(throws: KafkaFrameError.self) { try channel.throwIfErrorCaught() }
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }
}
