import AqueductReplication
import Dispatch
import DequeModule
import Logging
import Metrics
import NIOCore
import NIOPosix

public struct SegmentWriterConfiguration: Sendable {
    /// A node that has not answered an add within this is replaced (BookKeeper's
    /// addEntryTimeout).
    public var addTimeoutMilliseconds: Int64 = 5_000
    /// After this long without a new confirmation, nodes not told the newest
    /// last-add-confirmed get it explicitly, so readers see the last entry.
    public var idleAdvertiseMilliseconds: Int64 = 20
    /// Entries appended and not yet confirmed; one more fails with `backlogFull`.
    public var pendingEntriesMax = 65_536
    /// Payload bytes appended and not yet confirmed (kept for resends to replacements).
    public var pendingBytesMax = 256 << 20
    /// Wait between retries of a metadata change the store could not take (etcd down).
    public var metadataRetryMilliseconds: Int64 = 500

    public init() {}
}

/// The single writer of one replicated segment: `SegmentWriter`'s decisions, carried out
/// over a `StorageTransport` and a `SegmentMetadataStore`. Every state change happens on
/// one event loop (answers and timers hop onto it), so the machine needs no lock and
/// its actions run in the order it produced them.
public final class ReplicatedSegmentWriter: @unchecked Sendable {
    public let segment: UInt64
    public let configuration: SegmentWriterConfiguration
    private let transport: any StorageTransport
    private let metadataStore: SegmentMetadataStore
    private let loop: any EventLoop
    private let logger: Logger

    // Confined to `loop`.
    private var machine: SegmentWriter
    private var metadata: SegmentMetadata
    private var metadataVersion: UInt64
    /// Payloads of entries a node may still need: unconfirmed ones, and those of a
    /// fragment whose change is in flight (its replacement gets all of them).
    private var payloads: Deque<ByteBuffer> = []
    /// The entry id of `payloads.first`.
    private var firstKept: Int64
    private var pendingBytes = 0
    /// Who waits for an entry's confirmation.
    private enum Waiter {
        case continuation(CheckedContinuation<Int64, any Error>)
        case callback(@Sendable (Result<Int64, ReplicationError>) -> Void)

        func resume(_ result: Result<Int64, ReplicationError>) {
            switch self {
            case .continuation(let continuation): continuation.resume(with: result.mapError { $0 as any Error })
            case .callback(let callback): callback(result)
            }
        }
    }
    /// Entries not yet confirmed, with when they were submitted (uptime nanoseconds).
    private var waiting: Deque<(entry: Int64, waiter: Waiter, submittedNanoseconds: UInt64)> = []
    private var closing: [CheckedContinuation<Int64, any Error>] = []
    private var failure: ReplicationError?
    private var sealedAt: Int64?
    /// The first entry of the fragment a change in flight proposes.
    private var changeFirstEntry: Int64?
    private var idleTimer: Scheduled<Void>?
    /// The entry last built for a node, reused when the next node gets the same bytes.
    private var lastBuilt: StorageProtocol.Entry?

    private let confirmedEntries = Counter(label: "aqueduct_replica_writer_entries_confirmed_total")
    private let ensembleChanges = Counter(label: "aqueduct_replica_writer_ensemble_changes_total")
    /// Latency by stage: submit → on the writer's loop (the hand-over), and on the loop
    /// → confirmed (sends, replicas' syncs, answers).
    private let handOverTimer = Metrics.Timer(label: "aqueduct_replica_writer_handover_seconds")
    private let confirmTimer = Metrics.Timer(label: "aqueduct_replica_writer_confirm_seconds")

    /// A writer for a segment whose metadata (open, naming this writer) is at `version`.
    public init(
        segment: UInt64, metadata: SegmentMetadata, version: UInt64, spareNodes: [NodeID], transport: any StorageTransport,
        metadataStore: SegmentMetadataStore, configuration: SegmentWriterConfiguration = .init(),
        loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(), logger: Logger = Logger(label: "aqueduct.replica.writer")
    ) throws(ReplicationError) {
        guard metadata.state == .open, let last = metadata.fragments.last else { throw .closed(segment: segment) }
        self.segment = segment
        self.configuration = configuration
        self.transport = transport
        self.metadataStore = metadataStore
        self.loop = loop
        self.logger = logger
        self.metadata = metadata
        metadataVersion = version
        firstKept = last.firstEntry
        machine = SegmentWriter(shape: try metadata.shape, ensemble: last.ensemble, firstEntry: last.firstEntry, spareNodes: spareNodes)
    }

    /// Creates the segment in metadata (it must not exist) and returns its writer.
    public static func create(
        segment: UInt64, shape: QuorumShape, ensemble: [NodeID], spareNodes: [NodeID], owner: String, transport: any StorageTransport,
        metadataStore: SegmentMetadataStore, properties: [String: String]? = nil, configuration: SegmentWriterConfiguration = .init(),
        loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
    ) async throws(ReplicationError) -> ReplicatedSegmentWriter {
        var metadata = SegmentMetadata(shape: shape, ensemble: ensemble, owner: owner)
        metadata.properties = properties
        let version = try await metadataStore.create(segment, metadata)
        return try ReplicatedSegmentWriter(
            segment: segment, metadata: metadata, version: version, spareNodes: spareNodes, transport: transport,
            metadataStore: metadataStore, configuration: configuration, loop: loop)
    }

    /// Appends `payload`; returns its entry id once an ack quorum has it durably and every
    /// earlier entry is confirmed. Appends may be issued concurrently; they are numbered
    /// in the order they reach the writer's loop.
    public func append(_ payload: ByteBuffer) async throws -> Int64 {
        try await withCheckedThrowingContinuation { continuation in
            let submitted = DispatchTime.now().uptimeNanoseconds
            loop.execute { self.startAppend(payload, .continuation(continuation), submitted: submitted) }
        }
    }

    /// Appends without waiting: entries are numbered in the order of these calls made
    /// from one thread (or under one lock), and `completion` runs on the writer's loop
    /// with the entry id once it is confirmed, in entry order.
    public func submit(_ payload: ByteBuffer, completion: @escaping @Sendable (Result<Int64, ReplicationError>) -> Void) {
        let submitted = DispatchTime.now().uptimeNanoseconds
        loop.execute { self.startAppend(payload, .callback(completion), submitted: submitted) }
    }

    /// Stops appends, waits for every entry to be confirmed, seals the segment in
    /// metadata and returns its last entry (-1 when empty).
    public func close() async throws -> Int64 {
        try await withCheckedThrowingContinuation { continuation in
            loop.execute {
                if let sealedAt = self.sealedAt { return continuation.resume(returning: sealedAt) }
                if let failure = self.failure { return continuation.resume(throwing: failure) }
                self.closing.append(continuation)
                self.run(self.machine.close())
            }
        }
    }

    /// Nodes that may replace a failed one (the live members not in the ensemble).
    /// The cluster's live storage nodes: the others become spares, and ensemble nodes
    /// that are gone are replaced as if a write to them had failed.
    public func liveNodesChanged(_ live: Set<NodeID>) {
        loop.execute {
            self.run(self.machine.spareNodesChanged(live.sorted()))
            for node in self.machine.ensemble where !live.contains(node) {
                self.writeFailed(at: node, "the node left the cluster")
            }
        }
    }

    public func spareNodesChanged(_ nodes: [NodeID]) {
        loop.execute { self.run(self.machine.spareNodesChanged(nodes)) }
    }

    /// The segment's metadata as this writer last wrote or read it.
    public func currentMetadata() async -> SegmentMetadata {
        try! await loop.submit { self.metadata }.get()
    }

    public func lastAddConfirmed() async -> Int64 {
        try! await loop.submit { self.machine.lastAddConfirmed }.get()
    }

    // MARK: - On the loop

    private func startAppend(_ payload: ByteBuffer, _ waiter: Waiter, submitted: UInt64) {
        let started = DispatchTime.now().uptimeNanoseconds
        handOverTimer.recordNanoseconds(Int64(started &- submitted))
        if let failure { return waiter.resume(.failure(failure)) }
        let pendingEntries = machine.pendingCount
        guard pendingEntries < configuration.pendingEntriesMax, pendingBytes + payload.readableBytes <= configuration.pendingBytesMax else {
            return waiter.resume(.failure(.backlogFull(entries: pendingEntries, bytes: pendingBytes)))
        }
        guard let (entry, actions) = machine.append() else {
            return waiter.resume(.failure(.closed(segment: segment)))
        }
        assert(entry == firstKept + Int64(payloads.count))
        payloads.append(payload)
        pendingBytes += payload.readableBytes
        waiting.append((entry, waiter, started))
        run(actions)
    }

    private func run(_ actions: [SegmentWriter.Action]) {
        for action in actions {
            switch action {
            case .send(let entry, let node, let lastAddConfirmed):
                send(entry, to: node, lastAddConfirmed: lastAddConfirmed)
            case .confirm(let upTo):
                confirm(upTo: upTo)
            case .changeEnsemble(let fragments):
                changeEnsemble(fragments)
            case .advertise(let lastAddConfirmed, let node):
                transport.send(.advertise(segment: segment, lastAddConfirmed: lastAddConfirmed), to: node,
                               timeoutMilliseconds: configuration.addTimeoutMilliseconds) { _ in }
            case .deposed:
                fail(.fenced(segment: segment))
            case .seal(let lastEntry):
                seal(lastEntry)
            }
        }
        dropPayloadsNoLongerNeeded()
    }

    private func send(_ entry: Int64, to node: NodeID, lastAddConfirmed: Int64) {
        let built: StorageProtocol.Entry
        if let lastBuilt, lastBuilt.entry == entry, lastBuilt.lastAddConfirmed == lastAddConfirmed {
            built = lastBuilt
        } else {
            precondition(entry >= firstKept && entry < firstKept + Int64(payloads.count), "entry \(entry) of segment \(segment) must be sent but its payload was dropped")
            let payload = payloads[Int(entry - firstKept)]
            built = StorageProtocol.Entry(segment: segment, entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
            lastBuilt = built
        }
        transport.send(.add(built, isRecovery: false), to: node, timeoutMilliseconds: configuration.addTimeoutMilliseconds) { result in
            self.loop.execute { self.added(entry, by: node, result) }
        }
    }

    private func added(_ entry: Int64, by node: NodeID, _ result: Result<StorageProtocol.Answer, StorageClientError>) {
        switch result {
        case .success(.added(.ok)):
            run(machine.acknowledged(entry, by: node))
        case .success(.added(.fenced)):
            run(machine.fenced(by: node))
        case .success(let answer):
            writeFailed(at: node, "\(answer)")
        case .failure(let error):
            writeFailed(at: node, "\(error)")
        }
    }

    private func writeFailed(at node: NodeID, _ why: String) {
        let actions = machine.writeFailed(at: node)
        // Only the failure that starts a replacement is worth a line; the node's other
        // adds in flight fail the same way.
        if !actions.isEmpty {
            logger.warning("a storage node failed an add; replacing it", metadata: ["segment": "\(segment)", "node": "\(node)", "error": "\(why)"])
        }
        run(actions)
    }

    private func confirm(upTo: Int64) {
        var count = 0
        let now = DispatchTime.now().uptimeNanoseconds
        while let first = waiting.first, first.entry <= upTo {
            waiting.removeFirst()
            confirmTimer.recordNanoseconds(Int64(now &- first.submittedNanoseconds))
            first.waiter.resume(.success(first.entry))
            count += 1
        }
        confirmedEntries.increment(by: count)
        armIdleTimer()
    }

    private func armIdleTimer() {
        idleTimer?.cancel()
        idleTimer = loop.scheduleTask(in: .milliseconds(configuration.idleAdvertiseMilliseconds)) {
            self.idleTimer = nil
            self.run(self.machine.idle())
        }
    }

    private func changeEnsemble(_ fragments: [Fragment]) {
        changeFirstEntry = fragments.last!.firstEntry
        var proposed = metadata
        proposed.fragments = fragments
        ensembleChanges.increment()
        logger.notice("changing a segment's ensemble", metadata: ["segment": "\(segment)", "fragments": "\(fragments)"])
        commitEnsembleChange(proposed)
    }

    /// Compare-and-sets `proposed` on the version this writer last wrote; `then` runs on
    /// the loop with the new version or the error.
    private func replaceMetadata(_ proposed: SegmentMetadata, then: @escaping @Sendable (Result<UInt64, ReplicationError>) -> Void) {
        let version = metadataVersion
        let store = metadataStore
        let segment = segment
        Task {
            let result: Result<UInt64, ReplicationError>
            do throws(ReplicationError) {
                result = .success(try await store.replace(segment, proposed, version: version))
            } catch {
                result = .failure(error)
            }
            self.loop.execute { then(result) }
        }
    }

    private func commitEnsembleChange(_ proposed: SegmentMetadata) {
        replaceMetadata(proposed) { result in self.ensembleChangeFinished(proposed, result) }
    }

    private func ensembleChangeFinished(_ proposed: SegmentMetadata, _ result: Result<UInt64, ReplicationError>) {
        guard failure == nil else { return }
        switch result {
        case .success(let version):
            metadata = proposed
            metadataVersion = version
            let actions = machine.ensembleChangeCommitted()
            changeFirstEntry = nil
            run(actions)
        case .failure(.fenced):
            changeFirstEntry = nil
            run(machine.ensembleChangeRefused())
        case .failure(let error):
            // The store is unreachable: entries are still confirmed by the nodes left
            // (while they make a quorum); the change is proposed again.
            logger.warning("cannot record an ensemble change yet; retrying", metadata: ["segment": "\(segment)", "error": "\(error)"])
            _ = loop.scheduleTask(in: .milliseconds(configuration.metadataRetryMilliseconds)) {
                if self.failure == nil { self.commitEnsembleChange(proposed) }
            }
        }
    }

    private func seal(_ lastEntry: Int64) {
        var sealed = metadata
        sealed.state = .sealed
        sealed.lastEntry = lastEntry
        commitSeal(sealed)
    }

    private func commitSeal(_ sealed: SegmentMetadata) {
        let segment = segment
        replaceMetadata(sealed) { result in
            switch result {
            case .success(let version):
                self.metadata = sealed
                self.metadataVersion = version
                self.sealedAt = sealed.lastEntry
                self.idleTimer?.cancel()
                for waiter in self.closing { waiter.resume(returning: sealed.lastEntry ?? -1) }
                self.closing = []
            case .failure(.fenced(let segment)):
                self.fail(.fenced(segment: segment))
            case .failure(let error):
                self.logger.warning("cannot seal the segment yet; retrying", metadata: ["segment": "\(segment)", "error": "\(error)"])
                _ = self.loop.scheduleTask(in: .milliseconds(self.configuration.metadataRetryMilliseconds)) { self.commitSeal(sealed) }
            }
        }
    }

    private func fail(_ error: ReplicationError) {
        guard failure == nil else { return }
        failure = error
        idleTimer?.cancel()
        logger.notice("segment writer stopped", metadata: ["segment": "\(segment)", "reason": "\(error)"])
        let waiters = waiting
        waiting = []
        for waiter in waiters { waiter.waiter.resume(.failure(error)) }
        for waiter in closing { waiter.resume(throwing: error) }
        closing = []
        payloads = []
        pendingBytes = 0
        lastBuilt = nil
    }

    private func dropPayloadsNoLongerNeeded() {
        guard failure == nil else { return }
        let keepFrom = min(changeFirstEntry ?? .max, machine.lastAddConfirmed + 1)
        while firstKept < keepFrom, let oldest = payloads.popFirst() {
            pendingBytes -= oldest.readableBytes
            firstKept += 1
        }
    }
}
