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
    /// This node's id in Metadata, FindCoordinator and replica lists (`node.id`).
    public var nodeID: Int32 = 0
    /// The address in Metadata and FindCoordinator answers; the listen address when nil.
    public var advertisedHost: String?
    public var advertisedPort: Int?
    /// Largest request frame, in bytes (Kafka's socket.request.max.bytes).
    public var frameBytesMax = 100 << 20
    /// Bytes of requests being read or answered and of answers waiting to be written,
    /// over all connections (Kafka's queued.max.request.bytes); at least frameBytesMax.
    public var queuedBytesMax = 512 << 20
    /// How long a request may take to arrive once its size is read, in milliseconds.
    public var frameReadTimeoutMilliseconds = 120_000
    /// Bytes of answers one connection may have made and not yet written; past it the
    /// connection starts on no new request until its client reads.
    public var connectionAnswerBytesMax = 1 << 20
    /// A connection whose client reads nothing of an answer for this long is closed
    /// (its answers give their bytes back), in milliseconds.
    public var writeStallTimeoutMilliseconds = 300_000
    /// The same while the memory pool is full (its stalled clients hold what the
    /// others wait for), in milliseconds.
    public var writeStallUnderPressureMilliseconds = 5_000
    /// Open connections at once (Kafka's max.connections); more are closed on accept.
    public var connectionsMax = 4_096
    /// Open connections from one client address (Kafka's max.connections.per.ip).
    public var connectionsPerAddressMax = 1_024
    /// Partitions of topics created because a client asked for them (Kafka's
    /// auto.create.topics.enable and num.partitions); 0 turns auto-creation off.
    public var autoCreatePartitions = 1
    /// Topics there may be for a client's request to create one more automatically;
    /// past it, the request gets UNKNOWN_TOPIC_OR_PARTITION (explicit creation still works).
    public var autoCreateTopicsMax = 1_000
    /// Longest a fetch waits for records, in milliseconds (a longer `max_wait_ms` is
    /// clamped to it).
    public var fetchWaitMillisecondsMax = 30_000
    /// Most bytes of records in one fetch answer (Kafka's fetch.max.bytes); a larger
    /// `max_bytes` is clamped to it.
    public var fetchBytesMax = 57_671_680
    /// Bytes fetches may be reading and encoding at once (each pass takes the most it
    /// could read before reading); more wait their turn.
    public var fetchBytesInFlightMax = 256 << 20

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
    private let serverChannel: NIOAsyncChannel<NIOAsyncChannel<KafkaFrame, ByteBuffer>, Never>
    /// Request and answer bytes in flight over every connection.
    public let pool: KafkaMemoryPool
    private let limiter: ConnectionLimiter

    /// The port actually bound (useful when configured with port 0).
    public let boundPort: Int

    private init(
        configuration: KafkaListenerConfiguration, handler: KafkaRequestHandler, logger: Logger,
        serverChannel: NIOAsyncChannel<NIOAsyncChannel<KafkaFrame, ByteBuffer>, Never>, pool: KafkaMemoryPool, boundPort: Int
    ) {
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        self.serverChannel = serverChannel
        self.pool = pool
        self.limiter = ConnectionLimiter(total: configuration.connectionsMax, perAddress: configuration.connectionsPerAddressMax)
        self.boundPort = boundPort
    }

    /// Binds the listener. `handler` answers the requests.
    public static func bind(
        configuration: KafkaListenerConfiguration, handler: KafkaRequestHandler, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> KafkaServer {
        let frameBytesMax = configuration.frameBytesMax
        let pool = KafkaMemoryPool(capacity: max(configuration.queuedBytesMax, frameBytesMax + 4))
        let frameReadTimeout = configuration.frameReadTimeoutMilliseconds
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: configuration.host, port: configuration.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(KafkaFrameHandler(
                        frameBytesMax: frameBytesMax, pool: pool, frameReadTimeoutMilliseconds: Int64(frameReadTimeout)))
                    return try NIOAsyncChannel<KafkaFrame, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let port = channel.channel.localAddress?.port ?? configuration.port
        return KafkaServer(configuration: configuration, handler: handler, logger: logger, serverChannel: channel, pool: pool, boundPort: port)
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
    static let stalledWrites = Counter(label: "aqueduct_kafka_connections_closed_stalled_total")
    static let refusedTotal = Counter(label: "aqueduct_kafka_connections_refused_total", dimensions: [("reason", "total")])
    static let refusedPerAddress = Counter(label: "aqueduct_kafka_connections_refused_total", dimensions: [("reason", "address")])
    private let stalledConnections = Atomic<Int>(0)
    /// Connections closed because their clients stopped reading, since start.
    public var stalledClosures: Int { stalledConnections.load(ordering: .relaxed) }
    private let openConnections = Atomic<Int>(0)

    private func serve(_ connection: NIOAsyncChannel<KafkaFrame, ByteBuffer>) async {
        let address = connection.channel.remoteAddress
        let host = address?.ipAddress ?? "unknown"
        let peer = address.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
        if let refusal = limiter.admit(host) {
            let reason = refusal == .total ? "kafka.connectionsMax" : "kafka.connectionsPerAddressMax"
            (refusal == .total ? Self.refusedTotal : Self.refusedPerAddress).increment()
            logger.debug("Kafka connection refused", metadata: ["peer": "\(peer)", "reason": "\(reason) reached"])
            try? await connection.executeThenClose { _, _ in }
            return
        }
        defer { limiter.release(host) }
        connections.record(openConnections.wrappingAdd(1, ordering: .relaxed).newValue)
        defer { connections.record(openConnections.wrappingSubtract(1, ordering: .relaxed).newValue) }
        // Answers being made; cancelled when the connection ends, so a parked fetch
        // lets go of what it holds at once instead of at its deadline.
        let inFlight = DeferredAnswers()
        defer { inFlight.cancelAll() }
        let pool = self.pool
        do {
            try await connection.executeThenClose { inbound, outbound in
                // Requests are handled in order up to where they would wait; their
                // answers are written in order by a second task.
                let (replies, queue) = AsyncStream<QueuedReply>.makeStream()
                let gate = DispatchGate(limit: configuration.connectionAnswerBytesMax, repliesMax: Self.repliesInFlightMax, pool: pool)
                let fetchReads = handler.fetchReads
                let stall = WriteStallWatch(
                    timeoutMilliseconds: configuration.writeStallTimeoutMilliseconds,
                    pressureTimeoutMilliseconds: configuration.writeStallUnderPressureMilliseconds,
                    underPressure: { pool.isUnderPressure || fetchReads.waiting > 0 })
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        // Closes the connection when a write waits too long for the
                        // client to read (a client that never reads pins its answers).
                        if await stall.watch() {
                            Self.stalledWrites.increment()
                            self.stalledConnections.add(1, ordering: .relaxed)
                            try? await connection.channel.close()
                        }
                    }
                    group.addTask {
                        // However the writer ends, the reader stops waiting for it.
                        defer { gate.close() }
                        for await reply in replies {
                            let answer: HeldAnswer?
                            switch reply.answer {
                            case .nothing: answer = nil
                            case .now(let ready): answer = ready
                            case .later(let id, let task):
                                answer = await task.value
                                inFlight.finished(id)
                            }
                            guard let answer else {
                                gate.replied(writtenBytes: 0)
                                continue
                            }
                            let bytes = try answer.bytes.orClose()
                            stall.writing()
                            try await outbound.write(bytes)
                            stall.written()
                            gate.replied(writtenBytes: bytes.readableBytes)
                            // The answer's pool bytes, and its request's, go back now.
                            withExtendedLifetime((answer, reply.request)) {}
                        }
                    }
                    var session = KafkaSession(peer: peer)
                    do {
                        for try await frame in inbound {
                            // No new work while answers already made fill the pool, or
                            // this connection's client has not read its own, or too
                            // many of its answers are still to be written.
                            guard await gate.waitToDispatch() else { break }
                            switch await handler.dispatch(frame: frame.bytes, session: &session) {
                            case .none: queue.yield(QueuedReply(answer: .nothing, request: frame.reservation))
                            case .ready(let answer):
                                gate.add(answer.frame?.readableBytes ?? 0)
                                queue.yield(QueuedReply(answer: .now(HeldAnswer(answer, pool: pool)), request: frame.reservation))
                            case .deferred(let later):
                                let (id, task) = inFlight.start {
                                    let answer = HeldAnswer(await later(), pool: pool)
                                    gate.add(answer.bytes?.readableBytes ?? 0)
                                    return answer
                                }
                                queue.yield(QueuedReply(answer: .later(id, task), request: frame.reservation))
                            }
                            if session.closeAfterResponse { break }
                        }
                    } catch {
                        queue.finish()
                        throw error
                    }
                    // The client stopped sending (or closed): nothing waits for answers
                    // that need a wait.
                    if !session.closeAfterResponse { inFlight.cancelAll() }
                    queue.finish()
                    // The writer ends when the queue is written; the watchdog with it.
                    try await group.next()
                    stall.stop()
                    try await group.waitForAll()
                }
            }
        } catch {
            logger.debug("Kafka connection closed", metadata: ["peer": "\(peer)", "reason": "\(error)"])
        }
    }
}

/// When a connection may start on its next request: while the pool is below its
/// capacity, the answers it made but has not written are below its own byte limit, and
/// fewer than `repliesMax` of its requests await their answers' writing. The writer
/// closes the gate when it stops, so a reader waiting here never outlives its
/// connection.
final class DispatchGate: Sendable {
    let limit: Int
    let repliesMax: Int
    let pool: KafkaMemoryPool
    private struct State {
        var unwritten = 0
        var pending = 0
        var closed = false
        var woken = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    init(limit: Int, repliesMax: Int, pool: KafkaMemoryPool) {
        self.limit = limit
        self.repliesMax = repliesMax
        self.pool = pool
    }

    /// An answer made (its bytes count until written).
    func add(_ bytes: Int) { state.withLock { $0.unwritten += bytes } }

    /// A reply taken off the queue: written (`writtenBytes` of it) or none due.
    func replied(writtenBytes: Int) {
        state.withLock { state in
            state.unwritten -= writtenBytes
            state.pending -= 1
        }
        wake()
    }

    func close() {
        state.withLock { $0.closed = true }
        wake()
    }

    private func wake() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.woken = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Counts a request pending when it may start now (true), false when closing, nil
    /// when it has to wait.
    private func tryDispatch() -> Bool? {
        state.withLock { state -> Bool? in
            if state.closed { return false }
            guard state.unwritten < limit, state.pending < repliesMax, pool.used < pool.capacity else { return nil }
            state.pending += 1
            return true
        }
    }

    /// Waits until the connection may start on a request and counts it pending; false
    /// when the connection is closing. Only the connection's reading task waits here.
    func waitToDispatch() async -> Bool {
        // The common case, every request: room everywhere, nothing to register.
        if let outcome = tryDispatch() { return outcome }
        while true {
            // Cleared, then the waker registered, then the check: a release after the
            // check (or between registration and check) is never missed.
            state.withLock { $0.woken = false }
            pool.wakeAtNextRelease { [self] in wake() }
            if let outcome = tryDispatch() { return outcome }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.woken || state.closed { return true }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }
}

/// Watches a connection's writes: `watch` returns true once a write has waited longer
/// than the timeout for the client to read.
///
/// While the pool is full, or fetches wait for read budget, the timeout is
/// `pressureTimeoutMilliseconds` instead: the connections whose clients do not read are
/// the ones holding what everyone else waits for, and they go first.
final class WriteStallWatch: Sendable {
    let timeoutNanoseconds: UInt64
    let pressureTimeoutNanoseconds: UInt64
    /// Whether others wait for what stalled connections hold.
    let underPressure: @Sendable () -> Bool
    private let writingSince = Atomic<UInt64>(0)
    private let stopped = Atomic<Bool>(false)

    init(timeoutMilliseconds: Int, pressureTimeoutMilliseconds: Int, underPressure: @escaping @Sendable () -> Bool) {
        timeoutNanoseconds = UInt64(timeoutMilliseconds) * 1_000_000
        pressureTimeoutNanoseconds = UInt64(min(pressureTimeoutMilliseconds, timeoutMilliseconds)) * 1_000_000
        self.underPressure = underPressure
    }

    func writing() { writingSince.store(max(1, monotonicNanoseconds()), ordering: .relaxed) }
    func written() { writingSince.store(0, ordering: .relaxed) }
    func stop() { stopped.store(true, ordering: .relaxed) }

    /// Returns true when a write has waited past the timeout, false once stopped.
    func watch() async -> Bool {
        while true {
            try? await Task.sleep(nanoseconds: min(pressureTimeoutNanoseconds / 4 + 1, 1_000_000_000))
            if stopped.load(ordering: .relaxed) || Task.isCancelled { return false }
            let since = writingSince.load(ordering: .relaxed)
            guard since != 0 else { continue }
            let stalled = monotonicNanoseconds() - since
            if stalled >= timeoutNanoseconds || (stalled >= pressureTimeoutNanoseconds && underPressure()) { return true }
        }
    }
}

/// An answer (nil: it could not be encoded, and the connection closes), counted in
/// the pool from the moment it exists until it is written: answers piling up for a
/// client that does not read them fill the pool, and every connection then stops
/// reading new requests.
struct HeldAnswer: Sendable {
    let bytes: ByteBuffer?
    let held: PoolReservation?
    /// What the handler made the answer hold (a fetch's read budget).
    let holding: BudgetHold?

    init(_ answer: KafkaAnswer, pool: KafkaMemoryPool) {
        self.bytes = answer.frame
        self.held = answer.frame.map { PoolReservation(pool: pool, forcing: $0.readableBytes) }
        self.holding = answer.holding
    }
}

/// A connection's answers that wait (fetches, group joins), cancellable together.
final class DeferredAnswers: Sendable {
    private let state = Mutex<(next: UInt64, tasks: [UInt64: Task<HeldAnswer, Never>], cancelled: Bool)>((0, [:], false))

    func start(_ work: @escaping @Sendable () async -> HeldAnswer) -> (UInt64, Task<HeldAnswer, Never>) {
        let task = Task { await work() }
        let (id, cancelled) = state.withLock { state -> (UInt64, Bool) in
            let id = state.next
            state.next += 1
            state.tasks[id] = task
            return (id, state.cancelled)
        }
        if cancelled { task.cancel() }
        return (id, task)
    }

    func finished(_ id: UInt64) {
        _ = state.withLock { $0.tasks.removeValue(forKey: id) }
    }

    func cancelAll() {
        let tasks = state.withLock { state in
            state.cancelled = true
            defer { state.tasks = [:] }
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
    }
}

/// An answer in a connection's queue: written as soon as those before it are. The
/// request's pool bytes are held until then.
private struct QueuedReply: Sendable {
    enum Answer: Sendable {
        /// No answer is due (Produce with acks=0).
        case nothing
        /// A response (its bytes nil when it could not be encoded: the connection closes).
        case now(HeldAnswer)
        case later(UInt64, Task<HeldAnswer, Never>)
    }
    var answer: Answer
    var request: PoolReservation?
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
