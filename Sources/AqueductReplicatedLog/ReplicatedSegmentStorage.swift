import AqueductCommon
import AqueductRecords
import AqueductReplicaClient
import AqueductReplication
import AqueductStorage
import DequeModule
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

public struct ReplicatedStorageConfiguration: Sendable {
    /// Ensemble, write and ack quorum of new segments.
    public var shape: QuorumShape
    /// This node's name in segment metadata (who writes or recovers a segment).
    public var owner: String
    public var writer = SegmentWriterConfiguration()
    public var reader = ReplicaReader.Configuration()
    public var recovery = SegmentRecoverer.Configuration()
    /// Bytes appended and not yet confirmed, over every segment; appends wait past it.
    public var writeBudgetBytes = 256 << 20
    /// Each batch is charged at least this against the budget, which bounds the
    /// entries in flight too.
    public var entryChargeBytesMin = 1_024
    /// Recently confirmed batches kept in memory per segment written here, so tailing
    /// readers never wait on a storage node.
    public var tailCacheBytesPerSegment = 4 << 20
    /// Entry positions (offset → entry) remembered per segment, to find where an
    /// offset is without searching; past it the oldest are forgotten.
    public var positionsRememberedMax = 65_536
    /// Every this many entries, a written entry's position is kept for good (a sparse
    /// index); the search between two of them reads at most log2 of this many entries.
    public var indexIntervalEntries: Int64 = 16
    /// Entries read from replicas at once by one read.
    public var readEntriesInFlight = 4

    public init(shape: QuorumShape, owner: String) {
        self.shape = shape
        self.owner = owner
        writer.pendingEntriesMax = 1 << 20
        writer.pendingBytesMax = 2 * writeBudgetBytes
    }
}

/// A log's segments as replicated segments (cluster mode): each `SegmentID` maps to a
/// replicated segment written by this node's `ReplicatedSegmentWriter` to an ensemble
/// chosen from the live storage nodes, fenced by `SegmentRecoverer`, read from any
/// replica with `ReplicaReader`. Each entry is one record batch with the segment's
/// running totals (`LogEntryFormat`).
public final class ReplicatedSegmentStorage: SegmentStorage {
    public let configuration: ReplicatedStorageConfiguration
    let transport: any StorageTransport
    let metadataStore: SegmentMetadataStore
    let liveNodes: @Sendable () -> [NodeID]
    let reader: ReplicaReader
    let budget: WeightedSemaphore
    let logger: Logger
    let segments = Mutex<[SegmentID: ReplicatedSegment]>([:])
    let degradedSegments = Counter(label: "aqueduct_replica_segments_created_degraded_total")
    /// A log's own shape (a topic's replication settings); nil: `configuration.shape`.
    let shapeOfLog = Mutex<(@Sendable (UInt64) -> QuorumShape?)?>(nil)

    /// `liveNodes`: the storage nodes new ensembles and replacements are chosen from.
    public init(
        configuration: ReplicatedStorageConfiguration, transport: any StorageTransport, metadataStore: SegmentMetadataStore,
        liveNodes: @escaping @Sendable () -> [NodeID], logger: Logger = Logger(label: "aqueduct.replicated-log")
    ) {
        self.configuration = configuration
        self.transport = transport
        self.metadataStore = metadataStore
        self.liveNodes = liveNodes
        reader = ReplicaReader(transport: transport, configuration: configuration.reader)
        budget = WeightedSemaphore(capacity: configuration.writeBudgetBytes)
        self.logger = logger
    }

    /// Every server of the cluster reaches these segments.
    public var isShared: Bool { true }

    /// The replicated segment holding a log's segment: the log id in the high 32 bits,
    /// the segment number in the low (a log rolls far fewer than 2^32 segments).
    public static func replicaID(_ id: SegmentID) -> UInt64 {
        precondition(id.logID < 1 << 32 && id.number < 1 << 32, "segment \(id) is past the replicated id space")
        return id.logID << 32 | id.number
    }

    /// Where each log's shape comes from (its configuration); the default shape for logs
    /// it answers nil for.
    public func setShapeProvider(_ provider: @escaping @Sendable (UInt64) -> QuorumShape?) {
        shapeOfLog.withLock { $0 = provider }
    }

    /// The shape new segments of a log get.
    public func shape(ofLog logID: UInt64) -> QuorumShape {
        shapeOfLog.withLock { $0 }?(logID) ?? configuration.shape
    }

    // MARK: - Membership

    /// The cluster's live storage nodes changed: open writers may take the new ones as
    /// spares, and replace nodes of their ensembles that left (not only on a failed
    /// write: an idle segment must not keep naming a node that is gone).
    public func liveNodesChanged(_ live: Set<NodeID>) {
        let writers = segments.withLock { $0.values.compactMap { $0.state.withLock { $0.writer } } }
        for writer in writers { writer.liveNodesChanged(live) }
    }

    /// Whether the segment this process writes should be rolled so its copies can be
    /// repaired: an earlier fragment names a node no longer live (only a sealed segment
    /// is re-replicated), or it was made on fewer nodes than configured and enough are
    /// live again.
    public func shouldRoll(_ id: SegmentID, live: Set<NodeID>) async -> Bool {
        guard let writer = segments.withLock({ $0[id] })?.state.withLock({ $0.writer }) else { return false }
        let metadata = await writer.currentMetadata()
        let lastAddConfirmed = await writer.lastAddConfirmed()
        guard lastAddConfirmed >= 0, let last = metadata.fragments.last else { return false }
        let earlierLost = metadata.fragments.dropLast().contains { fragment in fragment.ensemble.contains { !live.contains($0) } }
        let configured = shape(ofLog: id.logID)
        let degraded = last.ensemble.count < configured.ensembleSize && live.count >= configured.ensembleSize
        return earlierLost || degraded
    }

    // MARK: - Writing

    public func createSegment(_ id: SegmentID, baseOffset: Int64, epoch: UInt64) async throws(StorageError) {
        let configured = shape(ofLog: id.logID)
        var shape = configured
        let members = Array(Set(liveNodes())).sorted()
        guard members.count >= shape.ackQuorumSize else {
            throw .replicasUnavailable("\(members.count) storage nodes are live; segments of \(shape) need at least \(shape.ackQuorumSize)")
        }
        if members.count < shape.ensembleSize {
            // A node is down and no spare is left (three nodes, 3/3/2): a smaller
            // ensemble with the same ack quorum keeps the log writable with the same
            // guarantee per acknowledged entry (Kafka keeps a partition writable while
            // min.insync.replicas are in sync); the next roll gets a full ensemble.
            let ensemble = members.count
            shape = (try? QuorumShape(ensemble: ensemble, write: min(shape.writeQuorumSize, ensemble), ack: shape.ackQuorumSize)) ?? shape
            degradedSegments.increment()
            logger.warning("creating a segment on fewer storage nodes than configured", metadata: [
                "segment": "\(id)", "shape": "\(shape)", "configured": "\(configured)",
            ])
        }
        let replicaID = Self.replicaID(id)
        // Rotate by segment so the ensembles (and the disk load) spread over the nodes.
        let start = Int(replicaID % UInt64(members.count))
        let ensemble = (0..<shape.ensembleSize).map { members[(start + $0) % members.count] }
        let spares = members.filter { !ensemble.contains($0) }
        let writer: ReplicatedSegmentWriter
        do throws(ReplicationError) {
            writer = try await ReplicatedSegmentWriter.create(
                segment: replicaID, shape: shape, ensemble: ensemble, spareNodes: spares, owner: "\(configuration.owner) epoch \(epoch)",
                transport: transport, metadataStore: metadataStore,
                properties: ["log": "\(id.logID)", "number": "\(id.number)", "baseOffset": "\(baseOffset)"],
                configuration: configuration.writer)
        } catch .fenced {
            throw .segmentExists(id)
        } catch {
            throw .replicasUnavailable("creating segment \(id): \(error)")
        }
        let segment = ReplicatedSegment(id: id, replicaID: replicaID, baseOffset: baseOffset)
        let metadata = await writer.currentMetadata()
        segment.state.withLock { state in
            state.writer = writer
            state.writerEpoch = epoch
            state.metadata = metadata
        }
        segments.withLock { $0[id] = segment }
    }

    public func appender(_ id: SegmentID) throws(StorageError) -> any SegmentAppender {
        guard let segment = segments.withLock({ $0[id] }) else { throw .segmentNotFound(id) }
        return ReplicatedAppender(storage: self, segment: segment)
    }

    /// Queues a batch on the segment's writer (called by the log under its lock, so
    /// entries are numbered in offset order).
    func submitAppend(
        _ segment: ReplicatedSegment, epoch: UInt64, batch: ByteBuffer, header: RecordBatchHeader, reservedBytes: Int,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError) {
        let id = segment.id
        try segment.state.withLock { (state: inout ReplicatedSegment.State) throws(StorageError) in
            if state.deleted { throw .segmentNotFound(id) }
            if state.sealed { throw .sealed(id) }
            if epoch < state.fencedEpoch { throw .fenced(id, writerEpoch: epoch, fencedEpoch: state.fencedEpoch) }
            guard let writer = state.writer, epoch == state.writerEpoch else {
                throw .fenced(id, writerEpoch: epoch, fencedEpoch: max(state.fencedEpoch, state.writerEpoch))
            }
            guard header.baseOffset == state.nextOffset else {
                throw .offsetMismatch(id, expected: state.nextOffset, got: header.baseOffset)
            }
            let totals = LogEntryFormat.Totals(
                endOffset: header.lastOffset + 1, bytesThrough: state.submitted.bytesThrough + Int64(batch.readableBytes),
                maxTimestampThrough: max(state.submitted.maxTimestampThrough, header.maxTimestamp))
            let payload = LogEntryFormat.encode(batch: batch, baseOffset: header.baseOffset, totals: totals)
            state.submitted = totals
            state.nextOffset = totals.endOffset
            state.unconfirmed.append(ReplicatedSegment.Unconfirmed(
                baseOffset: header.baseOffset, totals: totals,
                batch: payload.getSlice(at: payload.readerIndex + LogEntryFormat.headerBytes, length: batch.readableBytes)!))
            writer.submit(payload) { [self] result in
                confirmed(segment, result, epoch: epoch, reservedBytes: reservedBytes, completion: completion)
            }
        }
    }

    /// On the writer's loop, in entry order.
    private func confirmed(
        _ segment: ReplicatedSegment, _ result: Result<Int64, ReplicationError>, epoch: UInt64, reservedBytes: Int,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) {
        budget.release(reservedBytes)
        switch result {
        case .success(let entry):
            let woken = segment.state.withLock { state -> [CheckedContinuation<WaitOutcome, Never>] in
                // After a takeover by this process, recovery may already have moved past it.
                guard let done = state.unconfirmed.popFirst(), entry > state.confirmedEntry else { return [] }
                state.confirmedEntry = entry
                state.confirmed = done.totals
                state.remember(offset: done.baseOffset, entry: entry, keep: entry % configuration.indexIntervalEntries == 0,
                               max: configuration.positionsRememberedMax)
                state.tail.append((entry, done.baseOffset, done.totals.endOffset, done.batch))
                state.tailBytes += done.batch.readableBytes
                while state.tailBytes > configuration.tailCacheBytesPerSegment, let oldest = state.tail.popFirst() {
                    state.tailBytes -= oldest.batch.readableBytes
                }
                return state.takeWaiters { $0 < done.totals.endOffset }
            }
            for waiter in woken { waiter.resume(returning: .available) }
            completion(.success(()))
        case .failure(let error):
            let failure: StorageError = switch error {
            case .fenced: .fenced(segment.id, writerEpoch: epoch, fencedEpoch: epoch + 1)
            case .closed: .sealed(segment.id)
            default: .replicasUnavailable("\(error)")
            }
            segment.state.withLock { state in
                if case .fenced = failure, state.writerEpoch == epoch {
                    state.fencedEpoch = max(state.fencedEpoch, epoch + 1)
                    state.writer = nil
                }
                state.unconfirmed.removeAll()
            }
            completion(.failure(failure))
        }
    }

    public func reserveWriteBudget(_ bytes: Int) async -> Int {
        await budget.acquire(min(max(bytes, configuration.entryChargeBytesMin), configuration.writeBudgetBytes))
    }

    public func releaseWriteBudget(_ bytes: Int) {
        budget.release(bytes)
    }

    /// The charge stays until the batch is confirmed.
    public func settleBudget(reservedBytes: Int, batchBytes: Int) {}

    // MARK: - Fencing, sealing, deleting

    /// Takes the segment over: recovery claims it in metadata first, then fences its
    /// nodes, reads and writes back, and seals it; the end is read from the last entry.
    @discardableResult
    public func fence(_ id: SegmentID, epoch: UInt64) async throws(StorageError) -> SegmentInfo {
        let replicaID = Self.replicaID(id)
        let outcome: SegmentRecoverer.Outcome
        do throws(ReplicationError) {
            outcome = try await SegmentRecoverer.recover(
                segment: replicaID, owner: "\(configuration.owner) epoch \(epoch)", transport: transport, metadataStore: metadataStore,
                spareNodes: Array(Set(liveNodes())).sorted().shuffled(), configuration: configuration.recovery)
        } catch .noSuchSegment {
            throw .segmentNotFound(id)
        } catch {
            throw .replicasUnavailable("recovering segment \(id): \(error)")
        }
        guard let baseOffset = outcome.metadata.properties?["baseOffset"].flatMap(Int64.init) else {
            throw .corruptEntry(id, filePosition: 0, detail: "the segment's metadata has no base offset")
        }
        var totals = LogEntryFormat.Totals(endOffset: baseOffset, bytesThrough: 0, maxTimestampThrough: -1)
        if outcome.lastEntry >= 0 {
            totals = try await readEntry(id, outcome.lastEntry, metadata: outcome.metadata).totals
        }
        let segment = segments.withLock { segments in
            if let known = segments[id] { return known }
            let opened = ReplicatedSegment(id: id, replicaID: replicaID, baseOffset: baseOffset)
            segments[id] = opened
            return opened
        }
        let (info, woken) = segment.state.withLock { state in
            state.fencedEpoch = max(state.fencedEpoch, epoch)
            state.writer = nil
            state.sealed = true
            state.lastEntry = outcome.lastEntry
            state.confirmedEntry = outcome.lastEntry
            state.confirmed = totals
            state.metadata = outcome.metadata
            return (state.info(segment), state.takeWaiters { _ in true })
        }
        for waiter in woken { waiter.resume(returning: .sealed) }
        return info
    }

    @discardableResult
    public func seal(_ id: SegmentID) async throws(StorageError) -> SegmentInfo {
        guard let segment = segments.withLock({ $0[id] }) else { throw .segmentNotFound(id) }
        let (writer, epoch) = segment.state.withLock { ($0.writer, $0.writerEpoch) }
        guard let writer else {
            if let info = segment.state.withLock({ $0.sealed ? $0.info(segment) : nil }) { return info }
            return try await fence(id, epoch: segment.state.withLock { $0.fencedEpoch })
        }
        let lastEntry: Int64
        do {
            lastEntry = try await writer.close()
        } catch ReplicationError.fenced {
            throw .fenced(id, writerEpoch: epoch, fencedEpoch: epoch + 1)
        } catch {
            throw .replicasUnavailable("sealing segment \(id): \(error)")
        }
        let metadata = await writer.currentMetadata()
        let (info, woken) = segment.state.withLock { state in
            state.writer = nil
            state.sealed = true
            state.lastEntry = lastEntry
            state.metadata = metadata
            return (state.info(segment), state.takeWaiters { _ in true })
        }
        for waiter in woken { waiter.resume(returning: .sealed) }
        return info
    }

    public func deleteSegment(_ id: SegmentID) async throws(StorageError) {
        let local = segments.withLock { $0.removeValue(forKey: id) }
        if let local {
            let woken = local.state.withLock { state in
                state.deleted = true
                return state.takeWaiters { _ in true }
            }
            for waiter in woken { waiter.resume(returning: .deleted) }
        }
        do throws(ReplicationError) {
            _ = try await metadataStore.load(Self.replicaID(id))
            try await metadataStore.delete(Self.replicaID(id))
        } catch .noSuchSegment {
            if local == nil { throw .segmentNotFound(id) }
        } catch {
            throw .replicasUnavailable("deleting segment \(id): \(error)")
        }
    }

    public func segmentInfo(_ id: SegmentID) -> SegmentInfo? {
        guard let segment = segments.withLock({ $0[id] }) else { return nil }
        return segment.state.withLock { $0.info(segment) }
    }

    /// Replicated segments live on the storage nodes, not here: nothing to clean up.
    public func allSegments() -> [SegmentInfo] { [] }

    // MARK: - Reading

    public func read(_ id: SegmentID, from offset: Int64, maxBytes: Int) async throws(StorageError) -> SegmentRead {
        let segment = try await open(id)
        let view = segment.state.withLock { $0.readView(segment) }
        guard let lastEntry = view.lastReadableEntry, offset < view.endOffset else {
            return SegmentRead(batches: [], nextOffset: offset, fromCache: true)
        }
        guard offset >= segment.baseOffset else {
            throw .offsetOutOfRange(id, offset: offset, start: segment.baseOffset, end: view.endOffset)
        }
        // Tailing readers: from memory.
        if let cached = segment.state.withLock({ $0.readTail(from: offset, maxBytes: maxBytes) }) { return cached }
        var entry = try await locate(offset, in: segment, lastEntry: lastEntry, metadata: view.metadata)
        var batches: [ByteBuffer] = []
        var bytes = 0
        var next = offset
        while entry <= lastEntry, bytes < maxBytes || batches.isEmpty {
            let window = min(Int64(configuration.readEntriesInFlight), lastEntry - entry + 1)
            let read = try await readEntries(id, entry..<(entry + window), metadata: view.metadata)
            for (totals, batch) in read {
                if totals.endOffset <= next { continue }  // the batch before the offset asked for
                batches.append(batch)
                bytes += batch.readableBytes
                next = totals.endOffset
                if bytes >= maxBytes { break }
            }
            entry += window
            if let last = read.last {
                segment.state.withLock { $0.remember(offset: last.totals.endOffset, entry: entry, keep: false, max: configuration.positionsRememberedMax) }
            }
        }
        return SegmentRead(batches: batches, nextOffset: next, fromCache: false)
    }

    public func waitForEntries(_ id: SegmentID, at offset: Int64, timeoutNanoseconds: UInt64) async -> WaitOutcome {
        guard let segment = segments.withLock({ $0[id] }) else { return .deleted }
        return await withCheckedContinuation { (continuation: CheckedContinuation<WaitOutcome, Never>) in
            enum Registered { case ready(WaitOutcome), waiting(Int) }
            let registered: Registered = segment.state.withLock { state in
                if state.deleted { return .ready(.deleted) }
                if offset < state.confirmed.endOffset { return .ready(.available) }
                if state.sealed { return .ready(.sealed) }
                let id = state.nextWaiterID
                state.nextWaiterID += 1
                state.waiters[id] = (offset, continuation)
                return .waiting(id)
            }
            switch registered {
            case .ready(let outcome):
                continuation.resume(returning: outcome)
            case .waiting(let waiterID):
                // Whoever takes the waiter out resumes it: the timer, or an append.
                let wait = TimeAmount.nanoseconds(Int64(min(timeoutNanoseconds, UInt64(Int64.max))))
                MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: wait) {
                    let waiter = segment.state.withLock { $0.waiters.removeValue(forKey: waiterID) }
                    waiter?.continuation.resume(returning: .timedOut)
                }
            }
        }
    }

    /// The segment as known here, or opened from its metadata (written elsewhere).
    private func open(_ id: SegmentID) async throws(StorageError) -> ReplicatedSegment {
        if let known = segments.withLock({ $0[id] }) { return known }
        let replicaID = Self.replicaID(id)
        let metadata: SegmentMetadata
        do throws(ReplicationError) {
            metadata = try await metadataStore.load(replicaID).metadata
        } catch .noSuchSegment {
            throw .segmentNotFound(id)
        } catch {
            throw .replicasUnavailable("reading segment \(id)'s metadata: \(error)")
        }
        guard let baseOffset = metadata.properties?["baseOffset"].flatMap(Int64.init) else {
            throw .corruptEntry(id, filePosition: 0, detail: "the segment's metadata has no base offset")
        }
        let opened = ReplicatedSegment(id: id, replicaID: replicaID, baseOffset: baseOffset)
        var totals = LogEntryFormat.Totals(endOffset: baseOffset, bytesThrough: 0, maxTimestampThrough: -1)
        var lastEntry: Int64 = -1
        if metadata.state == .sealed {
            lastEntry = metadata.lastEntry ?? -1
        } else {
            // Written elsewhere and still open: what its nodes say is confirmed.
            lastEntry = await reader.readLastAddConfirmed(segment: replicaID, metadata: metadata)
        }
        if lastEntry >= 0 { totals = try await readEntry(id, lastEntry, metadata: metadata).totals }
        opened.state.withLock { state in
            state.sealed = metadata.state == .sealed
            state.lastEntry = state.sealed ? lastEntry : nil
            state.confirmedEntry = lastEntry
            state.confirmed = totals
            state.metadata = metadata
        }
        return segments.withLock { segments in
            if let raced = segments[id] { return raced }
            segments[id] = opened
            return opened
        }
    }

    /// The entry holding `offset`: a remembered position, else a binary search between
    /// the nearest known positions, reading entries from replicas.
    private func locate(_ offset: Int64, in segment: ReplicatedSegment, lastEntry: Int64, metadata: SegmentMetadata?) async throws(StorageError) -> Int64 {
        var (low, high) = segment.state.withLock { $0.bounds(of: offset, lastEntry: lastEntry) }
        // Invariant: the entry holding `offset` is in low...high.
        while low < high {
            let middle = low + (high - low + 1) / 2
            let (totals, batch) = try await readEntry(segment.id, middle, metadata: metadata)
            let base = batch.getInteger(at: batch.readerIndex, as: Int64.self) ?? 0
            segment.state.withLock { $0.remember(offset: base, entry: middle, keep: false, max: configuration.positionsRememberedMax) }
            if base <= offset {
                low = middle
                if offset < totals.endOffset { return middle }
            } else {
                high = middle - 1
            }
        }
        return low
    }

    private func readEntry(_ id: SegmentID, _ entry: Int64, metadata: SegmentMetadata?) async throws(StorageError) -> (totals: LogEntryFormat.Totals, batch: ByteBuffer) {
        guard let metadata else { throw .segmentNotFound(id) }
        let copy: StorageProtocol.Entry
        do throws(ReplicationError) {
            copy = try await reader.read(segment: Self.replicaID(id), entry: entry, metadata: metadata)
        } catch {
            throw .replicasUnavailable("reading entry \(entry) of segment \(id): \(error)")
        }
        do {
            return try LogEntryFormat.decode(copy.payload)
        } catch {
            throw .corruptEntry(id, filePosition: entry, detail: error.description)
        }
    }

    private func readEntries(_ id: SegmentID, _ entries: Range<Int64>, metadata: SegmentMetadata?) async throws(StorageError) -> [(totals: LogEntryFormat.Totals, batch: ByteBuffer)] {
        let result = await withTaskGroup(of: (Int64, Result<(totals: LogEntryFormat.Totals, batch: ByteBuffer), StorageError>).self) { group in
            for entry in entries {
                group.addTask {
                    do throws(StorageError) {
                        return (entry, .success(try await self.readEntry(id, entry, metadata: metadata)))
                    } catch {
                        return (entry, .failure(error))
                    }
                }
            }
            var read: [Int64: Result<(totals: LogEntryFormat.Totals, batch: ByteBuffer), StorageError>] = [:]
            for await (entry, outcome) in group { read[entry] = outcome }
            return entries.map { read[$0]! }
        }
        return try result.map { outcome throws(StorageError) in try outcome.get() }
    }
}

/// One segment's state in this process.
final class ReplicatedSegment: Sendable {
    struct Unconfirmed {
        var baseOffset: Int64
        var totals: LogEntryFormat.Totals
        var batch: ByteBuffer
    }

    struct ReadView {
        var endOffset: Int64
        var lastReadableEntry: Int64?
        var metadata: SegmentMetadata?
    }

    struct State {
        var writer: ReplicatedSegmentWriter?
        var writerEpoch: UInt64 = 0
        var metadata: SegmentMetadata?
        var nextOffset: Int64
        var submitted: LogEntryFormat.Totals
        var unconfirmed: Deque<Unconfirmed> = []
        var confirmedEntry: Int64 = -1
        var confirmed: LogEntryFormat.Totals
        var lastEntry: Int64?
        var sealed = false
        var fencedEpoch: UInt64 = 0
        var deleted = false
        var waiters: [Int: (offset: Int64, continuation: CheckedContinuation<WaitOutcome, Never>)] = [:]
        var nextWaiterID = 0
        /// Recently confirmed batches written here, contiguous, oldest first.
        var tail: Deque<(entry: Int64, baseOffset: Int64, endOffset: Int64, batch: ByteBuffer)> = []
        var tailBytes = 0
        /// Sparse index kept for good: entry positions, in entry order.
        var index: [(baseOffset: Int64, entry: Int64)] = []
        /// Recently learned positions (offset → entry starting there), bounded.
        var positions: [Int64: Int64] = [:]

        func info(_ segment: ReplicatedSegment) -> SegmentInfo {
            SegmentInfo(
                id: segment.id, baseOffset: segment.baseOffset, endOffset: confirmed.endOffset, sizeBytes: confirmed.bytesThrough,
                maxTimestamp: confirmed.maxTimestampThrough, sealed: sealed, fencedEpoch: fencedEpoch)
        }

        func readView(_ segment: ReplicatedSegment) -> ReadView {
            ReadView(endOffset: confirmed.endOffset, lastReadableEntry: confirmedEntry >= 0 ? confirmedEntry : nil, metadata: metadata)
        }

        mutating func takeWaiters(where wakes: (Int64) -> Bool) -> [CheckedContinuation<WaitOutcome, Never>] {
            let ready = waiters.filter { wakes($0.value.offset) }
            for id in ready.keys { waiters[id] = nil }
            return ready.values.map(\.continuation)
        }

        mutating func remember(offset: Int64, entry: Int64, keep: Bool, max: Int) {
            if keep, index.last.map({ $0.entry < entry }) ?? true { index.append((offset, entry)) }
            if positions.count >= max { positions.removeAll(keepingCapacity: true) }
            positions[offset] = entry
        }

        /// The entries between which `offset` must be: from the known positions.
        func bounds(of offset: Int64, lastEntry: Int64) -> (Int64, Int64) {
            if let exact = positions[offset] { return (exact, exact) }
            var low: Int64 = 0
            var high = lastEntry
            // The last kept position at or before the offset, the first after it.
            var lower = 0
            var upper = index.count
            while lower < upper {
                let middle = (lower + upper) / 2
                if index[middle].baseOffset <= offset { lower = middle + 1 } else { upper = middle }
            }
            if lower > 0 { low = index[lower - 1].entry }
            if lower < index.count { high = min(high, index[lower].entry - 1) }
            return (low, max(low, high))
        }

        /// Batches from the in-memory tail when it holds `offset`.
        func readTail(from offset: Int64, maxBytes: Int) -> SegmentRead? {
            guard let first = tail.first, first.baseOffset <= offset, let last = tail.last, offset < last.endOffset else { return nil }
            var lower = 0
            var upper = tail.count
            while lower < upper {
                let middle = (lower + upper) / 2
                if tail[middle].baseOffset <= offset { lower = middle + 1 } else { upper = middle }
            }
            var index = lower - 1
            var batches: [ByteBuffer] = []
            var bytes = 0
            var next = offset
            while index < tail.count, bytes < maxBytes || batches.isEmpty {
                let cached = tail[index]
                batches.append(cached.batch)
                bytes += cached.batch.readableBytes
                next = cached.endOffset
                index += 1
            }
            return SegmentRead(batches: batches, nextOffset: next, fromCache: true)
        }
    }

    let id: SegmentID
    let replicaID: UInt64
    let baseOffset: Int64
    let state: Mutex<State>

    init(id: SegmentID, replicaID: UInt64, baseOffset: Int64) {
        self.id = id
        self.replicaID = replicaID
        self.baseOffset = baseOffset
        let empty = LogEntryFormat.Totals(endOffset: baseOffset, bytesThrough: 0, maxTimestampThrough: -1)
        state = Mutex(State(nextOffset: baseOffset, submitted: empty, confirmed: empty))
    }
}

struct ReplicatedAppender: SegmentAppender {
    let storage: ReplicatedSegmentStorage
    let segment: ReplicatedSegment
    var id: SegmentID { segment.id }

    func submitAppend(
        epoch: UInt64, batch: ByteBuffer, header: RecordBatchHeader, reservedBytes: Int, checksumVerified: Bool, baseOffsetWritten: Bool,
        completion: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) throws(StorageError) {
        try storage.submitAppend(segment, epoch: epoch, batch: batch, header: header, reservedBytes: reservedBytes, completion: completion)
    }
}
