import AqueductReplication
import Dispatch
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// Bounds of the storage listener. Every bound is named with its unit.
public struct StorageListenerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 0
    /// Longest frame taken; a longer one is refused from its length and the connection closed.
    public var frameBytesMax = (8 << 20) + 4_096
    /// Connections at once; one past it is closed at once.
    public var connectionsMax = 1_024
    /// Requests of one connection not yet answered; past it the connection's socket is
    /// not read until answers go out (a writer pipelines, but not without bound).
    public var requestsInFlightPerConnectionMax = 4_096
    /// Bytes of one connection's requests not yet answered, likewise.
    public var bytesInFlightPerConnectionMax = 32 << 20

    public init() {}
}

/// The storage node's TCP listener (SwiftNIO): splits each connection's bytes into
/// frames, hands requests to the `ReplicaStore`, writes answers as they come (a slow
/// add does not hold up a read behind it; the writer matches answers by request id).
/// A malformed frame closes its connection, as Kafka does.
public final class StorageServer: Sendable {
    public let store: ReplicaStore
    public let configuration: StorageListenerConfiguration
    let logger: Logger
    let connections = Atomic<Int>(0)
    let channel: Mutex<(any Channel)?> = Mutex(nil)
    /// Open connections, to close them when the node stops.
    let children = Mutex<[ObjectIdentifier: any Channel]>([:])
    let framesRefused = Counter(label: "aqueduct_replica_frames_refused_total")
    /// An add from its arrival to its answer (durable, or refused).
    let addTimer = Metrics.Timer(label: "aqueduct_replica_add_seconds")

    public init(store: ReplicaStore, configuration: StorageListenerConfiguration, logger: Logger = Logger(label: "aqueduct.replica.listener")) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts listening; returns the address bound (the port chosen when it was 0).
    public func start(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> SocketAddress {
        let server = self
        let listening = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(StorageConnectionHandler(server: server))
                }
            }
            .bind(host: configuration.host, port: configuration.port).get()
        channel.withLock { $0 = listening }
        return listening.localAddress!
    }

    /// Stops accepting connections and closes those open: their peers see the node go.
    public func stop() async {
        let listening = channel.withLock { channel -> (any Channel)? in
            defer { channel = nil }
            return channel
        }
        try? await listening?.close()
        for child in children.withLock({ Array($0.values) }) { try? await child.close() }
    }

    public var openConnections: Int { connections.load(ordering: .relaxed) }
}

/// One connection: frames in, requests to the store, answers out in completion order.
/// All state lives on the channel's event loop; the store's answers hop back onto it.
final class StorageConnectionHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let server: StorageServer
    private var buffered = ByteBuffer()
    private var requestsInFlight = 0
    private var bytesInFlight = 0
    private var readHeldBack = false
    private var counted = false
    private var closed = false
    private var polls: Set<ReplicaStore.PollToken> = []
    private var context: ChannelHandlerContext?

    init(server: StorageServer) {
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        let open = server.connections.wrappingAdd(1, ordering: .relaxed).newValue
        counted = true
        let channel = context.channel
        server.children.withLock { $0[ObjectIdentifier(channel)] = channel }
        if open > server.configuration.connectionsMax {
            server.logger.warning("refusing a storage connection: at the limit", metadata: ["limit": "\(server.configuration.connectionsMax)"])
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        if counted { server.connections.wrappingSubtract(1, ordering: .relaxed) }
        let channel = context.channel
        server.children.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) }
        for token in polls { server.store.cancelPoll(token) }
        polls.removeAll()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered.readableBytes == 0 {
            buffered = incoming
        } else {
            buffered.writeBuffer(&incoming)
        }
        do {
            while let frame = try StorageProtocol.nextFrame(&buffered, frameBytesMax: server.configuration.frameBytesMax) {
                let request = try StorageProtocol.decodeRequest(frame.kind, frame.body)
                let bytes = frame.body.readableBytes + StorageProtocol.headerBytes
                requestsInFlight += 1
                bytesInFlight += bytes
                dispatch(request, id: frame.id, bytes: bytes)
            }
            buffered.discardReadBytes()
        } catch {
            server.framesRefused.increment()
            server.logger.warning(
                "closing a storage connection that sent a bad frame",
                metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)"])
            closed = true
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        if requestsInFlight >= server.configuration.requestsInFlightPerConnectionMax
            || bytesInFlight >= server.configuration.bytesInFlightPerConnectionMax {
            readHeldBack = true
        } else {
            context.read()
        }
    }

    private func dispatch(_ request: StorageProtocol.Request, id: UInt64, bytes: Int) {
        let store = server.store
        let loop = context!.eventLoop
        let answer: @Sendable (StorageProtocol.Answer) -> Void = { [self] answer in
            loop.execute { self.send(answer, id: id, bytes: bytes) }
        }
        switch request {
        case .add(let entry, let isRecovery):
            let received = DispatchTime.now().uptimeNanoseconds
            let timer = server.addTimer
            store.add(entry, isRecovery: isRecovery) { status in
                timer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- received))
                answer(.added(status))
            }
        case .read(let segment, let entry, let fence):
            store.read(segment: segment, entry: entry, fence: fence) { answer(.read($0, $1)) }
        case .readLastAddConfirmed(let segment, let fence, let after, let wait):
            let token = Mutex<ReplicaStore.PollToken?>(nil)
            let parked = store.readLastAddConfirmed(segment: segment, fence: fence, after: after, waitMilliseconds: wait) { [self] value in
                loop.execute {
                    if let token = token.withLock({ $0 }) { self.polls.remove(token) }
                    self.send(.lastAddConfirmed(value.status, lastAddConfirmed: value.lastAddConfirmed, lastEntry: value.lastEntry), id: id, bytes: bytes)
                }
            }
            if let parked {
                token.withLock { $0 = parked }
                polls.insert(parked)
            }
        case .advertise(let segment, let lastAddConfirmed):
            answer(.advertised(store.advertise(segment: segment, lastAddConfirmed: lastAddConfirmed)))
        }
    }

    private func send(_ answer: StorageProtocol.Answer, id: UInt64, bytes: Int) {
        requestsInFlight -= 1
        bytesInFlight -= bytes
        guard !closed, let context else { return }
        var out = context.channel.allocator.buffer(capacity: 64)
        StorageProtocol.encode(answer, id: id, into: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        if readHeldBack && requestsInFlight < server.configuration.requestsInFlightPerConnectionMax
            && bytesInFlight < server.configuration.bytesInFlightPerConnectionMax {
            readHeldBack = false
            context.read()
        }
    }
}
