import AqueductCommon
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// Where the Kafka listener binds and what it tells clients to connect to.
public struct KafkaListenerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 9092
    /// The address in Metadata and FindCoordinator answers; the listen address when nil.
    public var advertisedHost: String?
    public var advertisedPort: Int?
    /// Largest request frame, in bytes (Kafka's socket.request.max.bytes).
    public var frameBytesMax = 100 << 20
    /// Partitions of topics created because a client asked for them (Kafka's
    /// auto.create.topics.enable and num.partitions); 0 turns auto-creation off.
    public var autoCreatePartitions = 1

    public init() {}

    public var advertised: (host: String, port: Int) { (advertisedHost ?? host, advertisedPort ?? port) }
}

/// The Kafka listener: accepts connections and answers each connection's requests
/// in order, one at a time (as Kafka's broker does: a connection is muted while its
/// request is in flight), so pipelined requests get their responses in order.
public final class KafkaServer: Sendable {
    public let configuration: KafkaListenerConfiguration
    let handler: KafkaRequestHandler
    let logger: Logger
    private let serverChannel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>

    /// The port actually bound (useful when configured with port 0).
    public let boundPort: Int

    private init(
        configuration: KafkaListenerConfiguration, handler: KafkaRequestHandler, logger: Logger,
        serverChannel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, boundPort: Int
    ) {
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        self.serverChannel = serverChannel
        self.boundPort = boundPort
    }

    /// Binds the listener. `handler` answers the requests.
    public static func bind(
        configuration: KafkaListenerConfiguration, handler: KafkaRequestHandler, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> KafkaServer {
        let frameBytesMax = configuration.frameBytesMax
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: configuration.host, port: configuration.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let port = channel.channel.localAddress?.port ?? configuration.port
        return KafkaServer(configuration: configuration, handler: handler, logger: logger, serverChannel: channel, boundPort: port)
    }

    /// Serves connections until the listener is closed (`close()`) or the task is cancelled.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            try await serverChannel.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await self.serve(connection) }
                }
            }
        }
    }

    public func close() async {
        try? await serverChannel.channel.close()
    }

    /// Most answers of one connection waiting to be written (requests read ahead of
    /// their answers); past it the connection is not read until answers go out.
    static let repliesInFlightMax = 64

    private let connections = Gauge(label: "aqueduct_kafka_connections")
    private let openConnections = Atomic<Int>(0)

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        connections.record(openConnections.wrappingAdd(1, ordering: .relaxed).newValue)
        defer { connections.record(openConnections.wrappingSubtract(1, ordering: .relaxed).newValue) }
        let address = connection.channel.remoteAddress
        let peer = address.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
        do {
            try await connection.executeThenClose { inbound, outbound in
                // Requests are handled in order up to where they would wait; their
                // answers are written in order by a second task.
                let (replies, queue) = AsyncStream<QueuedReply>.makeStream()
                let slots = WeightedSemaphore(capacity: Self.repliesInFlightMax)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await reply in replies {
                            let response: ByteBuffer?
                            switch reply {
                            case .nothing: response = nil
                            case .now(let ready): response = try ready.orClose()
                            case .later(let task): response = try await task.value.orClose()
                            }
                            slots.release(1)
                            if let response { try await outbound.write(response) }
                        }
                    }
                    var session = KafkaSession(peer: peer)
                    for try await frame in inbound {
                        await slots.acquire(1)
                        switch await handler.dispatch(frame: frame, session: &session) {
                        case .none: queue.yield(.nothing)
                        case .ready(let response): queue.yield(.now(response))
                        case .deferred(let later): queue.yield(.later(Task { await later() }))
                        }
                        if session.closeAfterResponse { break }
                    }
                    queue.finish()
                    try await group.waitForAll()
                }
            }
        } catch {
            logger.debug("Kafka connection closed", metadata: ["peer": "\(peer)", "reason": "\(error)"])
        }
    }
}

/// An answer in a connection's queue: written as soon as those before it are.
private enum QueuedReply: Sendable {
    /// No answer is due (Produce with acks=0).
    case nothing
    /// A response, or nil when it could not be encoded (the connection closes).
    case now(ByteBuffer?)
    case later(Task<ByteBuffer?, Never>)
}

/// Ends a connection whose response could not be encoded.
private struct UnencodableResponse: Error {}

extension Optional where Wrapped == ByteBuffer {
    fileprivate func orClose() throws -> ByteBuffer {
        guard let self else { throw UnencodableResponse() }
        return self
    }
}

/// What a handler knows of one connection.
public struct KafkaSession: Sendable {
    public var peer: String
    public var clientID: String?
    /// Set by a handler that cannot go on with this connection.
    public var closeAfterResponse = false

    public init(peer: String) {
        self.peer = peer
    }
}
