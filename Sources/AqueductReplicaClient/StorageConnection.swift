import AqueductCommon
import AqueductReplication
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// Why a request to a storage node got no answer.
public enum StorageClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No answer within the request's timeout (the node is down, hung or slow).
    case timedOut(milliseconds: Int)
    /// The connection closed (or never opened) before the answer came.
    case connectionClosed(String)
    /// The node answered with a frame this client cannot read.
    case badAnswer(String)

    public var description: String {
        switch self {
        case .timedOut(let ms): "the storage node did not answer within \(ms) ms"
        case .connectionClosed(let why): "the connection to the storage node closed: \(why)"
        case .badAnswer(let why): "the storage node's answer could not be read: \(why)"
        }
    }
}

/// One connection to a storage node, requests pipelined and answered by id in any
/// order. Every request has a timeout; a closed connection fails everything pending
/// (the writer's machine turns that into `writeFailed`). Thread-safe: requests may be
/// sent from any thread; callbacks run on the connection's event loop.
public final class StorageConnection: Sendable {
    public typealias Callback = @Sendable (Result<StorageProtocol.Answer, StorageClientError>) -> Void

    let channel: any Channel
    let handler: StorageClientHandler
    public let peer: String

    init(channel: any Channel, handler: StorageClientHandler, peer: String) {
        self.channel = channel
        self.handler = handler
        self.peer = peer
    }

    /// Connects to a node; fails when it cannot within `timeoutMilliseconds`.
    public static func connect(
        host: String, port: Int, timeoutMilliseconds: Int64 = 2_000, answerBytesMax: Int = (8 << 20) + 4_096,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> StorageConnection {
        let handler = StorageClientHandler(answerBytesMax: answerBytesMax)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(timeoutMilliseconds))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port).get()
        return StorageConnection(channel: channel, handler: handler, peer: "\(host):\(port)")
    }

    /// Sends a request; `callback` runs once with the answer, a timeout or a close.
    public func send(_ request: StorageProtocol.Request, timeoutMilliseconds: Int64, callback: @escaping Callback) {
        let handler = handler
        let channel = channel
        if channel.eventLoop.inEventLoop {
            handler.send(request, timeoutMilliseconds: timeoutMilliseconds, channel: channel, callback: callback)
        } else {
            channel.eventLoop.execute { handler.send(request, timeoutMilliseconds: timeoutMilliseconds, channel: channel, callback: callback) }
        }
    }

    /// Sends a request and waits for its answer.
    public func request(_ request: StorageProtocol.Request, timeoutMilliseconds: Int64 = 5_000) async throws(StorageClientError) -> StorageProtocol.Answer {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<StorageProtocol.Answer, StorageClientError>, Never>) in
            send(request, timeoutMilliseconds: timeoutMilliseconds) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    public var isActive: Bool { channel.isActive }

    public func close() async {
        try? await channel.close()
    }
}

final class StorageClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var callback: StorageConnection.Callback
        var timeout: Scheduled<Void>?
        /// Monotonic nanoseconds when it was written, for the round-trip metric.
        var sentAt: UInt64 = 0
        var isAdd = false
    }

    /// An add from being written to this connection to its answer being read back:
    /// the network and both ends' event loops, besides the node's own add time.
    static let addRoundTrip = Metrics.Timer(label: "aqueduct_replica_add_round_trip_seconds")

    private let answerBytesMax: Int
    private var pending: [UInt64: Pending] = [:]
    private var nextID: UInt64 = 1
    private var buffered = ByteBuffer()
    private var closedBecause: String?

    init(answerBytesMax: Int) {
        self.answerBytesMax = answerBytesMax
    }

    /// On the event loop.
    func send(_ request: StorageProtocol.Request, timeoutMilliseconds: Int64, channel: any Channel, callback: @escaping StorageConnection.Callback) {
        if let closedBecause {
            callback(.failure(.connectionClosed(closedBecause)))
            return
        }
        let id = nextID
        nextID += 1
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(timeoutMilliseconds)) { [self] in
            if let request = pending.removeValue(forKey: id) {
                request.callback(.failure(.timedOut(milliseconds: Int(timeoutMilliseconds))))
            }
        }
        var isAdd = false
        if case .add = request { isAdd = true }
        pending[id] = Pending(callback: callback, timeout: timeout, sentAt: monotonicNanoseconds(), isAdd: isAdd)
        var out = channel.allocator.buffer(capacity: 64)
        StorageProtocol.encode(request, id: id, into: &out)
        channel.writeAndFlush(out, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered.readableBytes == 0 { buffered = incoming } else { buffered.writeBuffer(&incoming) }
        do {
            while let frame = try StorageProtocol.nextFrame(&buffered, frameBytesMax: answerBytesMax) {
                let answer = try StorageProtocol.decodeAnswer(frame.kind, frame.body)
                if let waiting = pending.removeValue(forKey: frame.id) {
                    if waiting.isAdd { Self.addRoundTrip.recordNanoseconds(Int64(monotonicNanoseconds() &- waiting.sentAt)) }
                    waiting.timeout?.cancel()
                    waiting.callback(.success(answer))
                }
            }
            buffered.discardReadBytes()
        } catch {
            failAll("bad answer: \(error)")
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll("closed by the node")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll("\(error)")
        context.close(promise: nil)
    }

    private func failAll(_ why: String) {
        if closedBecause == nil { closedBecause = why }
        let waiting = pending
        pending.removeAll()
        for (_, request) in waiting {
            request.timeout?.cancel()
            request.callback(.failure(.connectionClosed(why)))
        }
    }
}
