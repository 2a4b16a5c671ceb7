import Metrics
import NIOCore
import Synchronization

/// Bytes of Kafka requests being read or waiting to be answered, and of answers waiting
/// to be written, over every connection (Kafka's queued.max.request.bytes idea). A
/// connection reserves a request's size as soon as its 4-byte prefix arrives, before
/// buffering it; when the pool is full, connections stop reading (their sockets fill,
/// their clients wait) until answers go out and bytes come back. Never unbounded
/// buffering, never a refused request.
///
/// Answers are counted when made, even past the capacity (a fetch's answer is only
/// known once read): the bound is soft by at most the answers being made at that
/// moment, and no connection reads a new request while the pool is over.
public final class KafkaMemoryPool: Sendable {
    public let capacity: Int
    private struct State {
        var used = 0
        var waiters: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())
    private let usedGauge = Gauge(label: "aqueduct_kafka_queued_bytes")
    let pauses = Counter(label: "aqueduct_kafka_reads_paused_total")

    public init(capacity: Int) {
        precondition(capacity > 0, "the pool needs a positive capacity")
        self.capacity = capacity
    }

    /// Bytes reserved now.
    public var used: Int { state.withLock { $0.used } }

    /// Reserves `bytes` if the pool has room for them; the caller releases them.
    func tryReserve(_ bytes: Int) -> Bool {
        let used = state.withLock { state -> Int? in
            guard state.used + bytes <= capacity || state.used == 0 else { return nil }
            state.used += bytes
            return state.used
        }
        if let used { usedGauge.record(used) }
        return used != nil
    }

    /// Reserves `bytes` whatever the room (answers, which exist already).
    func forceReserve(_ bytes: Int) {
        usedGauge.record(state.withLock { state in
            state.used += bytes
            return state.used
        })
    }

    /// Runs `wake` once the pool has room again (at the next release).
    func whenRoom(_ wake: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.used < capacity { return true }
            state.waiters.append(wake)
            return false
        }
        if now { wake() }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let (used, woken) = state.withLock { state -> (Int, [@Sendable () -> Void]) in
            state.used -= bytes
            precondition(state.used >= 0, "released more bytes than were reserved")
            guard state.used < capacity, !state.waiters.isEmpty else { return (state.used, []) }
            defer { state.waiters = [] }
            return (state.used, state.waiters)
        }
        usedGauge.record(used)
        for wake in woken { wake() }
    }
}

/// Bytes taken from a `KafkaMemoryPool`, given back when the last reference goes (a
/// frame dropped unread by a closing connection gives its bytes back too).
public final class PoolReservation: Sendable {
    let pool: KafkaMemoryPool
    let bytes: Int

    init(pool: KafkaMemoryPool, bytes: Int) {
        self.pool = pool
        self.bytes = bytes
    }

    /// Takes `bytes` whatever the room (an answer that exists already).
    init(pool: KafkaMemoryPool, forcing bytes: Int) {
        pool.forceReserve(bytes)
        self.pool = pool
        self.bytes = bytes
    }

    deinit { pool.release(bytes) }
}

/// A request frame (without its size prefix) and the pool bytes it holds.
public struct KafkaFrame: Sendable {
    public var bytes: ByteBuffer
    let reservation: PoolReservation?

    public init(bytes: ByteBuffer) {
        self.bytes = bytes
        self.reservation = nil
    }

    init(bytes: ByteBuffer, reservation: PoolReservation) {
        self.bytes = bytes
        self.reservation = reservation
    }
}

/// Splits a connection's bytes into Kafka frames: a 4-byte big-endian size, then that
/// many bytes. A size below the smallest request header or above the limit closes the
/// connection (the stream cannot be resynchronised), as Kafka's own broker does.
///
/// A frame's bytes are reserved in the pool when its size is known; while the pool has
/// no room the handler holds back the channel's reads (so at most one socket read past
/// the frame header is buffered) and resumes when bytes come back.
final class KafkaFrameHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = KafkaFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest frame accepted, in bytes (Kafka's socket.request.max.bytes).
    let frameBytesMax: Int
    let pool: KafkaMemoryPool
    /// apiKey i16 + apiVersion i16 + correlationId i32.
    static let frameBytesMin = 8

    private var buffered: ByteBuffer?
    /// The reservation for the frame being read, once its size is known.
    private var reservation: PoolReservation?
    /// Waiting for room in the pool: reads are held back.
    private var waitingForRoom = false
    private var readHeldBack = false
    private var closed = false

    init(frameBytesMax: Int, pool: KafkaMemoryPool) {
        self.frameBytesMax = frameBytesMax
        self.pool = pool
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        split(context: context)
    }

    private func split(context: ChannelHandlerContext) {
        while !closed, var buffer = buffered, let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) {
            guard size >= Self.frameBytesMin, Int(size) <= frameBytesMax else {
                closed = true
                context.fireErrorCaught(KafkaFrameError.invalidSize(Int(size), limit: frameBytesMax))
                context.close(promise: nil)
                return
            }
            if reservation == nil {
                guard pool.tryReserve(4 + Int(size)) else {
                    waitForRoom(context: context)
                    return
                }
                reservation = PoolReservation(pool: pool, bytes: 4 + Int(size))
            }
            guard buffer.readableBytes >= 4 + Int(size) else { return }
            buffer.moveReaderIndex(forwardBy: 4)
            let frame = buffer.readSlice(length: Int(size))!
            if buffer.readableBytes == 0 {
                buffered = nil
            } else {
                // Keep what follows, without the consumed frames' storage.
                buffered = buffer.readerIndex > 64 << 10 ? ByteBuffer(buffer: buffer) : buffer
            }
            let taken = reservation!
            reservation = nil
            context.fireChannelRead(wrapInboundOut(KafkaFrame(bytes: frame, reservation: taken)))
        }
    }

    private func waitForRoom(context: ChannelHandlerContext) {
        guard !waitingForRoom else { return }
        waitingForRoom = true
        pool.pauses.increment()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        pool.whenRoom {
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.resume(context: context)
            }
        }
    }

    private func resume(context: ChannelHandlerContext) {
        waitingForRoom = false
        guard !closed else { return }
        split(context: context)
        if !waitingForRoom && readHeldBack {
            readHeldBack = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if waitingForRoom {
            readHeldBack = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        reservation = nil
        buffered = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closed = true
        reservation = nil
        buffered = nil
    }
}

extension ByteBuffer {
    /// A copy holding only the readable bytes.
    fileprivate init(buffer: ByteBuffer) {
        var copy = ByteBufferAllocator().buffer(capacity: buffer.readableBytes)
        var source = buffer
        copy.writeBuffer(&source)
        self = copy
    }
}

enum KafkaFrameError: Error, CustomStringConvertible {
    case invalidSize(Int, limit: Int)

    var description: String {
        switch self {
        case .invalidSize(let size, let limit):
            "frame size \(size) is outside \(KafkaFrameHandler.frameBytesMin)...\(limit) bytes (socket.request.max.bytes)"
        }
    }
}
