import AqueductGroups
import AqueductBroker
import AqueductRecords
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
final class RawConnection: @unchecked Sendable {
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
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(descriptor) }

    func send(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in _ = Glibc.send(descriptor, raw.baseAddress, raw.count, 0) }
    }

    /// Reads one response frame (without its size); nil when the server closed the
    /// connection. The blocking reads run on a Dispatch thread, never on the Swift
    /// concurrency pool, which the server in the same process needs.
    func receiveFrame() async -> ByteBuffer? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: self.receiveFrameBlocking())
            }
        }
    }

    private func receiveFrameBlocking() -> ByteBuffer? {
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
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 600_000
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        var configuration = KafkaListenerConfiguration()
        configuration.port = 0
        configuration.frameBytesMax = 1 << 20
        configuration.fetchWaitMillisecondsMax = 600_000
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
            let frame = try #require(await connection.receiveFrame())
            #expect(frame.getInteger(at: 0, as: Int32.self) == expected)
        }

        // A produce behind a long-polling fetch on the same connection (sarama shares
        // one): it is not held up by the fetch, and its records answer the fetch (else
        // the fetch would answer after 10 minutes, past the receive timeout).
        fetch.maxWaitMs = 600_000
        fetch.topics[0].partitions[0].fetchOffset = 0
        var produce = ProduceRequest()
        produce.acks = -1
        produce.topicData = [.init(name: "t", partitionData: [.init(index: 0, records: batch(["wake"]))])]
        var both = sized(KafkaStack.requestFrame(.fetch, version: 11, fetch, correlationID: 5))
        var append = sized(KafkaStack.requestFrame(.produce, version: 8, produce, correlationID: 6))
        both.writeBuffer(&append)
        connection.send(both)
        var fetched = try #require(await connection.receiveFrame())
        #expect(fetched.readInteger(as: Int32.self) == 5)
        var reader = KafkaReader(fetched)
        let answer = try FetchResponse(from: &reader, version: 11)
        #expect(try values(of: answer.responses[0].partitions[0].records) == ["wake"])
        #expect(await connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 6)

        // An oversized frame: that connection is closed, the other one goes on.
        let bad = try RawConnection(port: server.boundPort)
        var huge = ByteBuffer()
        huge.writeInteger(Int32(200 << 20))
        huge.writeRepeatingByte(0, count: 64)
        bad.send(huge)
        #expect(await bad.receiveFrame() == nil)
        connection.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 7)))
        #expect(await connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 7)

        serving.cancel()
        await server.close()
        try await stack.close()
    }

    /// A server on a free loopback port with `configure` applied.
    func serve(_ stack: KafkaStack, _ configure: (inout KafkaListenerConfiguration) -> Void) async throws -> (KafkaServer, Task<Void, any Error>) {
        var configuration = KafkaListenerConfiguration()
        configuration.port = 0
        configure(&configuration)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = try await KafkaServer.bind(configuration: configuration, handler: stack.handler, logger: logger)
        return (server, Task { try await server.run() })
    }

    func longFetch(_ topic: String, correlationID: Int32, waitMilliseconds: Int32) -> ByteBuffer {
        var fetch = FetchRequest()
        fetch.replicaId = -1
        fetch.maxWaitMs = waitMilliseconds
        fetch.minBytes = 1
        fetch.maxBytes = Int32.max
        fetch.topics = [.init(topic: topic, partitions: [.init(partition: 0, fetchOffset: 0, partitionMaxBytes: 1 << 20)])]
        return sized(KafkaStack.requestFrame(.fetch, version: 11, fetch, correlationID: correlationID))
    }

    @Test func aFetchParkedOnAClosedConnectionLetsGoAtOnce() async throws {
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 3_600_000
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let (server, serving) = try await serve(stack) { _ in }
        var connections: [RawConnection] = []
        for index in 0..<50 {
            let connection = try RawConnection(port: server.boundPort)
            connection.send(longFetch("t", correlationID: Int32(index), waitMilliseconds: 3_600_000))
            connections.append(connection)
        }
        try await waitUntil { stack.broker.appends.waiting == 50 }
        connections.removeAll()  // closes them, their fetches an hour from their deadline
        try await waitUntil { stack.broker.appends.waiting == 0 && server.pool.used == 0 }
        serving.cancel()
        await server.close()
        try await stack.close()
    }

    @Test func fetchWaitsAreClampedToTheConfiguredMaximum() async throws {
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 100
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        let (server, serving) = try await serve(stack) { _ in }
        let connection = try RawConnection(port: server.boundPort)
        // Int32.max ms is 24 days; the answer comes after the clamped wait (else the
        // receive times out after a minute and this fails).
        connection.send(longFetch("t", correlationID: 9, waitMilliseconds: Int32.max))
        #expect(await connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 9)
        serving.cancel()
        await server.close()
        try await stack.close()
    }

    @Test func connectionsPastTheLimitsAreClosedAndTheOthersServed() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        let (server, serving) = try await serve(stack) { $0.connectionsPerAddressMax = 3 }
        let admitted = try (0..<3).map { _ in try RawConnection(port: server.boundPort) }
        for (index, connection) in admitted.enumerated() {
            connection.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: Int32(index))))
            #expect(await connection.receiveFrame()?.getInteger(at: 0, as: Int32.self) == Int32(index))
        }
        let refused = try RawConnection(port: server.boundPort)
        refused.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 99)))
        #expect(await refused.receiveFrame() == nil)
        admitted[0].send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 7)))
        #expect(await admitted[0].receiveFrame()?.getInteger(at: 0, as: Int32.self) == 7)
        serving.cancel()
        await server.close()
        try await stack.close()
    }

    @Test func aClientThatStopsReadingIsCutAndItsAnswersLetGo() async throws {
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 0
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener)
        _ = try await stack.broker.createTopic("t", partitions: 1)
        // About 1 MB in the partition: each fetch answers it all.
        for round in 0..<10 {
            var builder = RecordBatchBuilder()
            for index in 0..<100 { builder.append(timestamp: 1, key: nil, value: Array(repeating: UInt8(index), count: 1_000 + round)) }
            #expect(try await stack.produce("t", builder.build()).errorCode == 0)
        }
        let (server, serving) = try await serve(stack) {
            $0.writeStallTimeoutMilliseconds = 1_000
            $0.connectionAnswerBytesMax = 4 << 20
        }
        let hog = try RawConnection(port: server.boundPort)
        var fetches = ByteBuffer()
        for index in 0..<64 {
            var one = longFetch("t", correlationID: Int32(index), waitMilliseconds: 0)
            fetches.writeBuffer(&one)
        }
        hog.send(fetches)
        // Nothing is read: the answers stop at the connection's limit, then the
        // connection is closed and they give their bytes back.
        try await waitUntil { server.pool.used == 0 && server.stalledClosures > 0 }
        // What the client can still read ends before the 64th answer.
        var answers = 0
        while await hog.receiveFrame() != nil { answers += 1 }
        #expect(answers < 64)
        // Others are served throughout.
        let other = try RawConnection(port: server.boundPort)
        other.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 5)))
        #expect(await other.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 5)
        serving.cancel()
        await server.close()
        try await stack.close()
    }

    @Test func aRequestHeldBackByAFullPoolIsServedWhenBytesComeBack() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        let (server, serving) = try await serve(stack) {
            $0.frameBytesMax = 64 << 10
            $0.queuedBytesMax = 256 << 10
        }
        // Answers nobody reads hold the whole pool.
        var held: PoolReservation? = PoolReservation(pool: server.pool, forcing: server.pool.capacity)
        let client = try RawConnection(port: server.boundPort)
        client.send(sized(KafkaStack.requestFrame(.apiVersions, version: 3, ApiVersionsRequest(), correlationID: 7)))
        try await waitUntil { server.pool.waiting >= 1 }
        // They are written (or dropped): the request waiting for room goes on.
        held = nil
        _ = held
        #expect(await client.receiveFrame()?.getInteger(at: 0, as: Int32.self) == 7)
        serving.cancel()
        await server.close()
        try await stack.close()
    }
}
