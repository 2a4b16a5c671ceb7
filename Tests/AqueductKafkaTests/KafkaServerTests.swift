import AqueductGroups
import AqueductBroker
import AqueductTestSupport
import Foundation
import Logging
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import AqueductKafka

/// A blocking TCP client for the wire-level tests.
final class RawConnection {
    let descriptor: Int32

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw KafkaTestError("connect failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(descriptor) }

    func send(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in _ = Glibc.send(descriptor, raw.baseAddress, raw.count, 0) }
    }

    /// Reads one response frame (without its size); nil when the server closed the connection.
    func receiveFrame() -> ByteBuffer? {
        guard let sizeBytes = receive(4) else { return nil }
        let size = Int(sizeBytes.getInteger(at: 0, as: Int32.self)!)
        return receive(size)
    }

    private func receive(_ count: Int) -> ByteBuffer? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + done, count - done, 0) }
            if n <= 0 { return nil }
            done += n
        }
        return ByteBuffer(bytes: bytes)
    }
}

func sized(_ frame: ByteBuffer) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeInteger(Int32(frame.readableBytes))
    var frame = frame
    buffer.writeBuffer(&frame)
    return buffer
}

@Suite struct KafkaServerTests {
    @Test func pipelinedRequestsAreAnsweredInOrderAndABadFrameClosesOnlyItsConnection() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var configuration = KafkaListenerConfiguration()
        configuration.port = 0
        configuration.frameBytesMax = 1 << 20
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = try await KafkaServer.bind(configuration: configuration, handler: stack.handler, logger: logger)
        let serving = Task { try await server.run() }

        let connection = try RawConnection(port: server.boundPort)
        // Three requests in one write: a long-polling fetch first, then two quick ones.
        var fetch = FetchRequest()
        fetch.replicaId = -1
        fetch.maxWaitMs = 300
        fetch.minBytes = 1
        fetch.maxBytes = 1 << 20
        fetch.topics = [.init(topic: "t", partitions: [.init(partition: 0, fetchOffset: 0, partitionMaxBytes: 1 << 20)])]
        var pipelined = sized(KafkaStack.requestFrame(.fetch, version: 11, fetch, correlationID: 1))
        var second = sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 2))
        var third = sized(KafkaStack.requestFrame(.metadata, version: 9, MetadataRequest(), correlationID: 3))
        pipelined.writeBuffer(&second)
        pipelined.writeBuffer(&third)
        connection.send(pipelined)
        for expected: Int32 in [1, 2, 3] {
            let frame = try #require(connection.receiveFrame())
            #expect(frame.getInteger(at: 0, as: Int32.self) == expected)
        }

        // A produce behind a long-polling fetch on the same connection (sarama shares
        // one): it is not held up by the fetch, and its records answer the fetch.
        fetch.maxWaitMs = 10_000
        fetch.topics[0].partitions[0].fetchOffset = 0
        var produce = ProduceRequest()
        produce.acks = -1
        produce.topicData = [.init(name: "t", partitionData: [.init(index: 0, records: batch(["wake"]))])]
        var both = sized(KafkaStack.requestFrame(.fetch, version: 11, fetch, correlationID: 5))
        var append = sized(KafkaStack.requestFrame(.produce, version: 8, produce, correlationID: 6))
        both.writeBuffer(&append)
        let began = Date()
        connection.send(both)
        var fetched = try #require(connection.receiveFrame())
        #expect(fetched.readInteger(as: Int32.self) == 5)
        var reader = KafkaReader(fetched)
        let answer = try FetchResponse(from: &reader, version: 11)
        #expect(try values(of: answer.responses[0].partitions[0].records) == ["wake"])
        #expect(connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 6)
        #expect(Date().timeIntervalSince(began) < 5, "the fetch must be answered by the produce behind it")

        // An oversized frame: that connection is closed, the other one goes on.
        let bad = try RawConnection(port: server.boundPort)
        var huge = ByteBuffer()
        huge.writeInteger(Int32(200 << 20))
        huge.writeRepeatingByte(0, count: 64)
        bad.send(huge)
        #expect(bad.receiveFrame() == nil)
        connection.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 7)))
        #expect(connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 7)

        serving.cancel()
        await server.close()
        try await stack.close()
    }
}
