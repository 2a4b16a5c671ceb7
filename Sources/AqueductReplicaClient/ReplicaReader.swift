import AqueductReplication
import NIOCore
import NIOPosix
import Synchronization

/// Reads confirmed entries from whichever replica answers: any node of the entry's
/// write set has it, so a reader of old data loads replicas, not the writer. A read
/// goes to one node; when it has not answered within the speculative delay, the next
/// node is asked too (BookKeeper's speculative reads), and a refusal moves on at once.
public struct ReplicaReader: Sendable {
    public struct Configuration: Sendable {
        public var requestTimeoutMilliseconds: Int64 = 5_000
        /// Ask the next replica when the current one has not answered within this.
        public var speculativeReadMilliseconds: Int64 = 50

        public init() {}
    }

    public let transport: any StorageTransport
    public let configuration: Configuration
    let loop: any EventLoop

    public init(transport: any StorageTransport, configuration: Configuration = .init(), loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.transport = transport
        self.configuration = configuration
        self.loop = loop
    }

    /// Entry `entry` of `segment`, from the replicas its fragment names. The caller reads
    /// only up to a last-add-confirmed (or a sealed segment's last entry).
    public func read(segment: UInt64, entry: Int64, metadata: SegmentMetadata) async throws(ReplicationError) -> StorageProtocol.Entry {
        let shape = try metadata.shape
        if metadata.state == .sealed, entry > metadata.lastEntry ?? -1 { throw .noSuchEntry(segment: segment, entry: entry) }
        let ensemble = metadata.ensemble(of: entry)
        let writeSet = shape.writeSet(of: entry).map { ensemble[$0] }
        // Spread readers of consecutive entries over the replicas.
        let start = Int(entry % Int64(writeSet.count))
        let order = Array(writeSet[start...] + writeSet[..<start])
        let attempt = SpeculativeRead(segment: segment, entry: entry, nodes: order, reader: self)
        return try await attempt.run()
    }

    /// The highest last-add-confirmed any node of the last fragment reports; with
    /// `after`, waits (up to `waitMilliseconds`) until one passes it (tailing readers).
    public func readLastAddConfirmed(segment: UInt64, metadata: SegmentMetadata, after: Int64? = nil, waitMilliseconds: UInt32 = 0) async -> Int64 {
        let ensemble = metadata.fragments.last!.ensemble
        let timeout = configuration.requestTimeoutMilliseconds + Int64(waitMilliseconds)
        return await withTaskGroup(of: Int64.self) { group in
            for node in ensemble {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        transport.send(.readLastAddConfirmed(segment: segment, fence: false, after: after, waitMilliseconds: waitMilliseconds), to: node,
                                       timeoutMilliseconds: timeout) { result in
                            if case .success(.lastAddConfirmed(.ok, let lastAddConfirmed, _)) = result {
                                continuation.resume(returning: lastAddConfirmed)
                            } else if case .success(.lastAddConfirmed(.timedOut, let lastAddConfirmed, _)) = result {
                                continuation.resume(returning: lastAddConfirmed)
                            } else {
                                continuation.resume(returning: -1)
                            }
                        }
                    }
                }
            }
            var highest: Int64 = -1
            for await lastAddConfirmed in group {
                highest = max(highest, lastAddConfirmed)
                // A long poll is answered by the first node that passes `after`.
                if let after, highest > after {
                    group.cancelAll()
                    break
                }
            }
            return highest
        }
    }
}

/// One read: the replicas in order, the next asked when the current is slow or refuses.
final class SpeculativeRead: Sendable {
    struct State {
        var continuation: CheckedContinuation<StorageProtocol.Entry, any Error>?
        var asked = 0
        var answered = 0
        var missing = 0
        var errors: [String] = []
    }

    let segment: UInt64
    let entry: Int64
    let nodes: [NodeID]
    let reader: ReplicaReader
    let state = Mutex(State())

    init(segment: UInt64, entry: Int64, nodes: [NodeID], reader: ReplicaReader) {
        self.segment = segment
        self.entry = entry
        self.nodes = nodes
        self.reader = reader
    }

    func run() async throws(ReplicationError) -> StorageProtocol.Entry {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                state.withLock { $0.continuation = continuation }
                askNext()
            }
        } catch let error as ReplicationError {
            throw error
        } catch {
            throw .unavailable("\(error)")
        }
    }

    /// Asks the next replica, and arms the speculative timer for the one after it.
    private func askNext() {
        let node: NodeID? = state.withLock { state in
            guard state.continuation != nil, state.asked < nodes.count else { return nil }
            state.asked += 1
            return nodes[state.asked - 1]
        }
        guard let node else { return }
        let asked = state.withLock { $0.asked }
        if asked < nodes.count {
            _ = reader.loop.scheduleTask(in: .milliseconds(reader.configuration.speculativeReadMilliseconds)) { [self] in
                let stillWaiting = state.withLock { $0.continuation != nil && $0.asked == asked }
                if stillWaiting { askNext() }
            }
        }
        reader.transport.send(.read(segment: segment, entry: entry, fence: false), to: node, timeoutMilliseconds: reader.configuration.requestTimeoutMilliseconds) { [self] result in
            answered(by: node, result)
        }
    }

    private func answered(by node: NodeID, _ result: Result<StorageProtocol.Answer, StorageClientError>) {
        if case .success(.read(.ok, let copy?)) = result, copy.segment == segment, copy.entry == entry {
            let continuation = state.withLock { state in
                defer { state.continuation = nil }
                return state.continuation
            }
            continuation?.resume(returning: copy)
            return
        }
        enum Next { case askNext, wait, fail(ReplicationError) }
        let (next, continuation) = state.withLock { state -> (Next, CheckedContinuation<StorageProtocol.Entry, any Error>?) in
            guard state.continuation != nil else { return (.wait, nil) }
            state.answered += 1
            switch result {
            case .success(.read(.noSuchEntry, _)), .success(.read(.noSuchSegment, _)): state.missing += 1
            case .success(let answer): state.errors.append("node \(node): \(answer)")
            case .failure(let error): state.errors.append("node \(node): \(error)")
            }
            if state.answered == nodes.count {
                defer { state.continuation = nil }
                let error: ReplicationError = state.missing == nodes.count
                    ? .noSuchEntry(segment: segment, entry: entry)
                    : .unavailable("entry \(entry) of segment \(segment): \(state.errors.joined(separator: "; "))")
                return (.fail(error), state.continuation)
            }
            return (state.asked == state.answered ? .askNext : .wait, nil)
        }
        switch next {
        case .askNext: askNext()
        case .wait: break
        case .fail(let error): continuation?.resume(throwing: error)
        }
    }
}
