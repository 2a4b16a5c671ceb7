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
///
/// Frames larger than `largeFrameBytes` may hold at most half of the pool together: a
/// client announcing huge frames and sending them slowly (or never) cannot keep the
/// ordinary requests of everyone else waiting (their frames also have to arrive within
/// `kafka.frameReadTimeoutMs`, see `KafkaFrameHandler`).
public final class KafkaMemoryPool: Sendable {
    public let capacity: Int
    /// Frames above this size share half of the pool.
    public let largeFrameBytes: Int
    private struct State {
        var used = 0
        var usedByLarge = 0
        var waiters: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())
    private let usedGauge = Gauge(label: "aqueduct_kafka_queued_bytes")
    let pauses = Counter(label: "aqueduct_kafka_reads_paused_total")

    public init(capacity: Int, largeFrameBytes: Int = 1 << 20) {
        precondition(capacity > 0, "the pool needs a positive capacity")
        self.capacity = capacity
        self.largeFrameBytes = largeFrameBytes
    }

    /// Bytes reserved now.
    public var used: Int { state.withLock { $0.used } }

    /// Connections waiting for bytes to come back now.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Whether an ordinary request (up to `largeFrameBytes`) could be refused now, or a
    /// connection held back from starting on one: then clients that do not read are
    /// the ones to let go (`WriteStallWatch`).
    public var isUnderPressure: Bool { used > capacity - largeFrameBytes }

    /// Reserves `bytes` if the pool has room for them; the caller releases them (with
    /// `release(_:large:)` saying whether it was a large frame).
    func tryReserve(_ bytes: Int) -> Bool {
        tryReserve(bytes, orWake: nil)
    }

    /// Reserves `bytes`, or else registers `wake` to run at the next release, in one
    /// step (no release can slip between the refusal and the registration).
    func tryReserve(_ bytes: Int, orWake wake: (@Sendable () -> Void)?) -> Bool {
        let large = bytes > largeFrameBytes
        let used = state.withLock { state -> Int? in
            let fits = !(large && state.usedByLarge > 0 && state.usedByLarge + bytes > capacity / 2)
                && (state.used + bytes <= capacity || state.used == 0)
            guard fits else {
                if let wake { state.waiters.append(wake) }
                return nil
            }
            state.used += bytes
            if large { state.usedByLarge += bytes }
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

    /// Runs `wake` at the next release of bytes.
    func wakeAtNextRelease(_ wake: @escaping @Sendable () -> Void) {
        state.withLock { $0.waiters.append(wake) }
    }

    func release(_ bytes: Int, large: Bool = false) {
        guard bytes > 0 else { return }
        let (used, woken) = state.withLock { state -> (Int, [@Sendable () -> Void]) in
            state.used -= bytes
            if large { state.usedByLarge -= bytes }
            precondition(state.used >= 0, "released more bytes than were reserved")
            guard !state.waiters.isEmpty else { return (state.used, []) }
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

    let large: Bool

    /// Bytes `tryReserve` granted.
    init(pool: KafkaMemoryPool, bytes: Int) {
        self.pool = pool
        self.bytes = bytes
        self.large = bytes > pool.largeFrameBytes
    }

    /// Takes `bytes` whatever the room (an answer that exists already).
    init(pool: KafkaMemoryPool, forcing bytes: Int) {
        pool.forceReserve(bytes)
        self.pool = pool
        self.bytes = bytes
        self.large = false
    }

    deinit { pool.release(bytes, large: large) }
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
    /// How long a frame may take to arrive once its size is known, in milliseconds;
    /// past it the connection closes (a slow or stalled sender gives its bytes back).
    let frameReadTimeoutMilliseconds: Int64
    private var frameTimer: Scheduled<Void>?
    /// Frames started; tells the timer whether the frame it watches is still the one.
    private var framesStarted: UInt64 = 0
    /// Waiting for room in the pool: reads are held back.
    private var waitingForRoom = false
    private var readHeldBack = false
    private var closed = false

    init(frameBytesMax: Int, pool: KafkaMemoryPool, frameReadTimeoutMilliseconds: Int64 = 120_000) {
        self.frameBytesMax = frameBytesMax
        self.pool = pool
        self.frameReadTimeoutMilliseconds = frameReadTimeoutMilliseconds
    }

    static let slowFrames = Counter(label: "aqueduct_kafka_frames_timed_out_total")

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
                // Already waiting: the pool wakes this handler when bytes come back.
                if waitingForRoom { return }
                guard pool.tryReserve(4 + Int(size), orWake: wakeWhenRoom(context: context)) else {
                    waitingForRoom = true
                    pool.pauses.increment()
                    return
                }
                reservation = PoolReservation(pool: pool, bytes: 4 + Int(size))
                framesStarted &+= 1
                if buffer.readableBytes < 4 + Int(size) { watch(frame: framesStarted, context: context) }
            }
            guard buffer.readableBytes >= 4 + Int(size) else { return }
            frameTimer?.cancel()
            frameTimer = nil
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

    /// Closes the connection if frame `number` has not fully arrived in time.
    private func watch(frame number: UInt64, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        frameTimer = context.eventLoop.scheduleTask(in: .milliseconds(frameReadTimeoutMilliseconds)) {
            let (handler, context) = loopBound.value
            guard !handler.closed, handler.reservation != nil, handler.framesStarted == number else { return }
            handler.closed = true
            Self.slowFrames.increment()
            context.fireErrorCaught(KafkaFrameError.tooSlow(milliseconds: handler.frameReadTimeoutMilliseconds))
            context.close(promise: nil)
        }
    }

    /// What the pool runs when bytes come back: this handler tries again on its loop.
    private func wakeWhenRoom(context: ChannelHandlerContext) -> @Sendable () -> Void {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        return {
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.resume(context: context)
            }
        }
    }

    private func resume(context: ChannelHandlerContext) {
        waitingForRoom = false
        guard !closed else { return }
        let before = framesStarted
        split(context: context)
        // Frames let through here are outside a read cycle: the handlers after this
        // one (NIOAsyncChannel's) deliver what they were given at the read's end.
        if framesStarted != before { context.fireChannelReadComplete() }
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
        frameTimer?.cancel()
        reservation = nil
        buffered = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closed = true
        frameTimer?.cancel()
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
    case tooSlow(milliseconds: Int64)

    var description: String {
        switch self {
        case .invalidSize(let size, let limit):
            "frame size \(size) is outside \(KafkaFrameHandler.frameBytesMin)...\(limit) bytes (socket.request.max.bytes)"
        case .tooSlow(let milliseconds):
            "a request did not arrive whole within \(milliseconds) ms (kafka.frameReadTimeoutMs)"
        }
    }
}
