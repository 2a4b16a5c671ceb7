#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// Heron's stream manager, one per container: tuples and acks for tasks of other
/// containers leave here in batches over TCP (one connection per peer container,
/// frames of `TupleCodec`), and what peers send is handed to local queues. It also
/// carries backpressure: when a local queue congests, every container's spouts stop.
///
/// Plain blocking sockets on threads: a sender writes a whole frame under its
/// connection's lock from the emitting task's thread (a slow peer slows the emitter,
/// which is backpressure too); one reader thread per inbound connection never blocks on
/// a queue (`pushFromRemote`). A frame that does not decode closes that connection.
final class StreamManager: RemoteLink, @unchecked Sendable {
    private let fabric: Fabric
    private let container: Int
    private let listener: Int32
    let port: Int
    private struct Peer {
        var address: (host: String, port: Int)
        var socket: Int32 = -1
    }
    private let peers = Mutex<[Int: Peer]>([:])
    /// One lock per peer connection so frames from several task threads never interleave.
    private let sendLocks: [Int: Monitor]
    private let stopped = Atomic<Bool>(false)
    private let inbound = Mutex<[Int32]>([])
    private let received = Atomic<Int>(0)
    /// Tuples that could not be encoded for another container (their trees failed).
    let refusedTuples = Atomic<Int>(0)
    let decodeErrors = Atomic<Int>(0)

    /// Listens on 127.0.0.1 (`port` 0: any free port).
    init(fabric: Fabric, container: Int, port: Int = 0) throws {
        self.fabric = fabric
        self.container = container
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw StreamManagerError("socket: errno \(errno)") }
        var reuse: Int32 = 1
        setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(socket, 64) == 0 else {
            close(socket)
            throw StreamManagerError("bind/listen on 127.0.0.1:\(port): errno \(errno)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        listener = socket
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        var locks: [Int: Monitor] = [:]
        for peer in 0..<fabric.plan.containers where peer != container { locks[peer] = Monitor() }
        sendLocks = locks
        let acceptThread = Thread { [self] in acceptLoop() }
        acceptThread.name = "stmgr-accept-\(container)"
        acceptThread.start()
    }

    /// Where the other containers' stream managers listen.
    func setPeers(_ addresses: [Int: (host: String, port: Int)]) {
        peers.withLock { peers in
            for (container, address) in addresses where container != self.container { peers[container] = Peer(address: address) }
        }
    }

    // MARK: RemoteLink

    func send(tuples: [Tuple], to task: Int) {
        var encoded: [TupleCodec.EncodedTuple] = []
        encoded.reserveCapacity(tuples.count)
        var batchBytes = 0
        for tuple in tuples {
            var anchors: [(root: TupleRoot, edge: UInt64)] = []
            tuple.anchors.forEach { root, edge in anchors.append((root, edge)) }
            let candidate = TupleCodec.EncodedTuple(sourceTask: tuple.source.task, streamIndex: tuple.source.streamIndex, anchors: anchors, values: tuple.values)
            if let problem = TupleCodec.problem(of: candidate) {
                refuse(candidate, problem: problem)
                continue
            }
            // Frames stay under the peer's limit: a big batch goes in several.
            let size = Self.estimatedSize(candidate)
            if !encoded.isEmpty && batchBytes + size > TupleCodec.frameBytesMax / 2 {
                sendFrame(.tuples(destinationTask: task, encoded), to: fabric.plan.tasks[task].container)
                encoded.removeAll(keepingCapacity: true)
                batchBytes = 0
            }
            encoded.append(candidate)
            batchBytes += size
        }
        guard !encoded.isEmpty else { return }
        sendFrame(.tuples(destinationTask: task, encoded), to: fabric.plan.tasks[task].container)
    }

    private func sendFrame(_ frame: TupleCodec.Frame, to container: Int) {
        var bytes: [UInt8] = []
        TupleCodec.encode(frame, into: &bytes)
        send(bytes, to: container)
    }

    private static func estimatedSize(_ tuple: TupleCodec.EncodedTuple) -> Int {
        var bytes = 12 + 20 * tuple.anchors.count
        for value in tuple.values {
            switch value {
            case .string(let text): bytes += 5 + text.utf8.count
            case .bytes(let data): bytes += 5 + data.count
            case .list(let values): bytes += 5 + 16 * values.count
            default: bytes += 9
            }
        }
        return bytes
    }

    /// A tuple that cannot cross containers: its trees fail (the spouts replay them),
    /// it is counted as a dropped emit, and the reason is logged once in a while.
    private func refuse(_ tuple: TupleCodec.EncodedTuple, problem: String) {
        refusedTuples.add(1, ordering: .relaxed)
        if refusedTuples.load(ordering: .relaxed) % 1_000 == 1 {
            FileHandle.standardError.write(Data("aqueduct: a tuple for another container was refused (\(problem)); its trees fail and replay\n".utf8))
        }
        var failures: [Int: [ControlQueue.Message]] = [:]
        for anchor in tuple.anchors { failures[anchor.root.task, default: []].append(.fail(key: anchor.root.key)) }
        for (spoutTask, messages) in failures {
            if let queue = fabric.controlQueues[spoutTask] { queue.push(messages) } else { send(control: messages, toSpout: spoutTask) }
        }
    }

    func send(control: [ControlQueue.Message], toSpout task: Int) {
        var bytes: [UInt8] = []
        TupleCodec.encode(.control(spoutTask: task, control), into: &bytes)
        send(bytes, to: fabric.plan.tasks[task].container)
    }

    func localBackpressure(engaged: Bool) {
        var bytes: [UInt8] = []
        TupleCodec.encode(.backpressure(container: container, engaged: engaged), into: &bytes)
        for peer in sendLocks.keys { send(bytes, to: peer) }
    }

    private func send(_ bytes: [UInt8], to peer: Int) {
        guard let lock = sendLocks[peer] else { return }
        lock.lock()
        defer { lock.unlock() }
        do {
            for attempt in 0..<50 {
                if stopped.load(ordering: .relaxed) || !fabric.isRunning { return }
                let socket = connection(to: peer)
                if socket >= 0 && writeAll(socket, bytes) { return }
                dropConnection(to: peer, socket)
                usleep(useconds_t(min(100_000, 1_000 << min(attempt, 7))))
            }
        }
    }

    private func connection(to peer: Int) -> Int32 {
        guard let current = peers.withLock({ $0[peer] }) else { return -1 }
        if current.socket >= 0 { return current.socket }
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return -1 }
        var noDelay: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(current.address.port).bigEndian)
        address.sin_addr.s_addr = inet_addr(current.address.host)
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            close(socket)
            return -1
        }
        peers.withLock { $0[peer]?.socket = socket }
        return socket
    }

    private func dropConnection(to peer: Int, _ socket: Int32) {
        if socket >= 0 { close(socket) }
        peers.withLock { $0[peer]?.socket = -1 }
    }

    private func writeAll(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.send(socket, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }

    // MARK: Receiving

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let socket = accept(listener, nil, nil)
            if socket < 0 {
                if stopped.load(ordering: .relaxed) { return }
                continue
            }
            inbound.withLock { $0.append(socket) }
            let reader = Thread { [self] in readLoop(socket) }
            reader.name = "stmgr-read-\(container)"
            reader.start()
        }
    }

    private func readLoop(_ socket: Int32) {
        // Containers that said "backpressure on" over this connection: if it breaks (the
        // peer died), their word no longer holds, and a restarted peer starts clear.
        var engagedPeers: Set<Int> = []
        defer {
            close(socket)
            for peer in engagedPeers { fabric.gate.remote(container: peer, engaged: false) }
        }
        var header = [UInt8](repeating: 0, count: 4)
        while !stopped.load(ordering: .relaxed) {
            guard readExactly(socket, &header, count: 4) else { return }
            let length = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16 | Int(header[3]) << 24
            guard length > 0, length <= TupleCodec.frameBytesMax else {
                decodeErrors.add(1, ordering: .relaxed)
                return
            }
            var body = [UInt8](repeating: 0, count: length)
            guard readExactly(socket, &body, count: length) else { return }
            do {
                let frame = try TupleCodec.decode(frameBody: body[...])
                if case .backpressure(let peer, let engaged) = frame {
                    if engaged { engagedPeers.insert(peer) } else { engagedPeers.remove(peer) }
                }
                try deliver(frame)
            } catch {
                decodeErrors.add(1, ordering: .relaxed)
                return
            }
        }
    }

    private func deliver(_ frame: TupleCodec.Frame) throws(TupleCodecError) {
        switch frame {
        case .tuples(let destination, let encoded):
            guard destination >= 0, destination < fabric.inputQueues.count, let queue = fabric.inputQueues[destination] else {
                throw .badValue("task \(destination) does not run in container \(container)")
            }
            var tuples: [Tuple] = []
            tuples.reserveCapacity(encoded.count)
            for tuple in encoded {
                guard tuple.sourceTask >= 0, tuple.sourceTask < fabric.sources.count, tuple.streamIndex < fabric.sources[tuple.sourceTask].count else {
                    throw .badValue("no stream \(tuple.streamIndex) of task \(tuple.sourceTask)")
                }
                var anchors = TupleAnchors.none
                for anchor in tuple.anchors { anchors.xor(anchor.root, anchor.edge) }
                tuples.append(Tuple(source: fabric.sources[tuple.sourceTask][tuple.streamIndex], values: tuple.values, anchors: anchors))
            }
            received.add(tuples.count, ordering: .relaxed)
            queue.pushFromRemote(tuples)
        case .control(let spoutTask, let messages):
            guard spoutTask >= 0, spoutTask < fabric.controlQueues.count, let queue = fabric.controlQueues[spoutTask] else {
                throw .badValue("spout task \(spoutTask) does not run in container \(container)")
            }
            queue.push(messages)
        case .backpressure(let peer, let engaged):
            fabric.gate.remote(container: peer, engaged: engaged)
        }
    }

    private func readExactly(_ socket: Int32, _ buffer: inout [UInt8], count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let read = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress! + offset, count - offset, 0) }
            if read <= 0 {
                if read < 0 && errno == EINTR { continue }
                return false
            }
            offset += read
        }
        return true
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for socket in inbound.withLock({ $0 }) { shutdown(socket, Int32(SHUT_RDWR)) }
        peers.withLock { peers in
            for (container, peer) in peers where peer.socket >= 0 {
                close(peer.socket)
                peers[container]?.socket = -1
            }
        }
    }
}

struct StreamManagerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A topology spread over several containers inside this process, each with its own
/// tasks and stream manager, connected over loopback TCP: the distributed runtime
/// without process management (tests, and the shape service mode runs per process).
public final class ContainerGroup: Sendable {
    public let containers: [RunningTopology]
    private let managers: [StreamManager]

    public init(topology: Topology, clock: any TopologyClock = MonotonicClock()) throws {
        var managers: [StreamManager] = []
        var containers: [RunningTopology] = []
        // Listen first, then start tasks with every peer's address known.
        for index in 0..<topology.config.containers {
            let running = RunningTopology(topology: topology, clock: clock, container: index, deferStart: true)
            let manager = try StreamManager(fabric: running.fabric, container: index)
            running.fabric.connect(manager)
            managers.append(manager)
            containers.append(running)
        }
        let addresses = Dictionary(uniqueKeysWithValues: managers.enumerated().map { ($0.offset, (host: "127.0.0.1", port: $0.element.port)) })
        for manager in managers { manager.setPeers(addresses) }
        for running in containers { running.startTasks() }
        self.managers = managers
        self.containers = containers
    }

    /// Sums the containers' task metrics (each task runs in one container).
    public func metrics() -> TopologyMetrics {
        var all = containers[0].metrics()
        for running in containers.dropFirst() {
            let more = running.metrics()
            all.tasks += more.tasks
            all.backpressureMillis = max(all.backpressureMillis, more.backpressureMillis)
            all.backpressureEpisodes += more.backpressureEpisodes
        }
        all.tasks.sort { $0.task < $1.task }
        return all
    }

    public func kill() {
        for running in containers { running.fabric.stop() }
        for manager in managers { manager.stop() }
        for running in containers { running.kill() }
    }

    /// Tuples that arrived from other containers, and frames refused.
    var received: Int { managers.reduce(0) { $0 + $1.receivedCount } }
}

extension StreamManager {
    var receivedCount: Int { received.load(ordering: .relaxed) }
}
