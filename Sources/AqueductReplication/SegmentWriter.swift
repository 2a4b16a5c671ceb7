/// A storage node of the cluster, by its node id.
public typealias NodeID = Int

/// A run of a segment's entries stored on one ensemble: from `firstEntry` until the next
/// fragment's first entry (BookKeeper's ensembles map). A node that fails mid-segment is
/// replaced by starting a new fragment, not by stopping the segment.
public struct Fragment: Sendable, Hashable, Codable {
    public var firstEntry: Int64
    public var ensemble: [NodeID]

    public init(firstEntry: Int64, ensemble: [NodeID]) {
        self.firstEntry = firstEntry
        self.ensemble = ensemble
    }
}

/// The single writer of one segment, as a pure state machine (BookKeeper's LedgerHandle
/// and PendingAddOp, without I/O): it numbers entries, says which nodes each goes to,
/// counts acknowledgements per write set, confirms entries strictly in order once Qa
/// copies are durable, replaces failed nodes with a new fragment, and stops for good
/// once fenced. The shell sends and receives; a test scripts any interleaving.
public struct SegmentWriter: Sendable {
    public enum Action: Sendable, Hashable {
        /// Write `entry` to `node`, carrying the last-add-confirmed known when it is sent
        /// (always below `entry`: the newest entry becomes readable with a later one).
        case send(entry: Int64, to: NodeID, lastAddConfirmed: Int64)
        /// Entries up to here are durable on an ack quorum: producers may be answered.
        case confirm(upTo: Int64)
        /// Compare-and-set these fragments into the segment's metadata, then report the
        /// outcome with `ensembleChangeCommitted` or `ensembleChangeRefused`.
        case changeEnsemble([Fragment])
        /// An explicit last-add-confirmed for a node (the writer is idle, so no entry
        /// carries it).
        case advertise(lastAddConfirmed: Int64, to: NodeID)
        /// Another writer took over (a node answered "fenced", or the metadata moved on):
        /// entries not confirmed may or may not be in the segment.
        case deposed
        /// Every entry is confirmed after `close()`: record `lastEntry` as the sealed
        /// segment's end in metadata.
        case seal(lastEntry: Int64)
    }

    public private(set) var shape: QuorumShape
    public private(set) var fragments: [Fragment]
    /// The highest entry id handed out (BookKeeper's last-add-pushed); -1 before any.
    public private(set) var lastAddPushed: Int64 = -1
    /// The highest entry confirmed to producers (last-add-confirmed); -1 before any.
    public private(set) var lastAddConfirmed: Int64 = -1
    public private(set) var isDeposed = false
    public private(set) var isClosing = false
    public private(set) var isSealed = false

    /// Positions of the current ensemble that hold each unconfirmed entry durably.
    private var acknowledged: [Int64: Set<Int>] = [:]
    /// Positions waiting for a replacement node; their writes resume after the change.
    private var failedPositions: Set<Int> = []
    /// The fragments a change in flight proposes (one change at a time).
    private var changeInFlight: [Fragment]?
    /// Nodes that may replace a failed one, in order of preference.
    private var spareNodes: [NodeID]
    /// Nodes that failed while writing this segment: never chosen again for it.
    private var failedNodes: Set<NodeID> = []
    /// The highest last-add-confirmed each node of the ensemble was told.
    private var advertisedTo: [NodeID: Int64] = [:]

    public init(shape: QuorumShape, ensemble: [NodeID], firstEntry: Int64 = 0, spareNodes: [NodeID] = []) {
        precondition(ensemble.count == shape.ensembleSize && Set(ensemble).count == ensemble.count, "an ensemble of \(shape.ensembleSize) distinct nodes")
        self.shape = shape
        fragments = [Fragment(firstEntry: firstEntry, ensemble: ensemble)]
        lastAddPushed = firstEntry - 1
        lastAddConfirmed = firstEntry - 1
        self.spareNodes = spareNodes.filter { !ensemble.contains($0) }
    }

    public var ensemble: [NodeID] { fragments[fragments.count - 1].ensemble }
    /// Entries handed out and not yet confirmed.
    public var pendingCount: Int { Int(lastAddPushed - lastAddConfirmed) }
    public var isChangingEnsemble: Bool { changeInFlight != nil }

    /// Hands out the next entry id and the writes to make for it; nil once deposed or closing.
    public mutating func append() -> (entry: Int64, actions: [Action])? {
        guard !isDeposed, !isClosing else { return nil }
        lastAddPushed += 1
        let entry = lastAddPushed
        acknowledged[entry] = []
        var actions: [Action] = []
        for position in shape.writeSet(of: entry) where !failedPositions.contains(position) {
            let node = ensemble[position]
            actions.append(.send(entry: entry, to: node, lastAddConfirmed: lastAddConfirmed))
            advertisedTo[node] = max(advertisedTo[node] ?? -1, lastAddConfirmed)
        }
        return (entry, actions)
    }

    /// `node` made `entry` durable. Acknowledgements from nodes no longer holding the
    /// entry's position (replaced since) and repeats are ignored.
    public mutating func acknowledged(_ entry: Int64, by node: NodeID) -> [Action] {
        guard !isDeposed, entry > lastAddConfirmed, entry <= lastAddPushed,
              let position = ensemble.firstIndex(of: node), !failedPositions.contains(position),
              shape.isInWriteSet(position, of: entry)
        else { return [] }
        acknowledged[entry, default: []].insert(position)
        return confirmInOrder()
    }

    /// A write to `node` failed (an error, a timeout, a closed connection): the node is
    /// replaced by a spare in a new fragment starting at the first unconfirmed entry. A
    /// node not in the ensemble, or one already being replaced, changes nothing.
    public mutating func writeFailed(at node: NodeID) -> [Action] {
        guard !isDeposed, !isSealed, let position = ensemble.firstIndex(of: node) else { return [] }
        failedNodes.insert(node)
        guard failedPositions.insert(position).inserted else { return [] }
        for entry in acknowledged.keys { acknowledged[entry]?.remove(position) }
        return proposeEnsembleChange()
    }

    /// `node` refused a write because the segment is fenced: a new writer owns the log.
    public mutating func fenced(by node: NodeID) -> [Action] {
        depose()
    }

    /// Nodes that may replace failed ones (the cluster's live members); a change waiting
    /// for a spare proceeds.
    public mutating func spareNodesChanged(_ nodes: [NodeID]) -> [Action] {
        spareNodes = nodes.filter { !ensemble.contains($0) && !failedNodes.contains($0) }
        guard !isDeposed, changeInFlight == nil, !failedPositions.isEmpty else { return [] }
        return proposeEnsembleChange()
    }

    /// The metadata took the proposed fragments: the replacements get every unconfirmed
    /// entry of their positions.
    public mutating func ensembleChangeCommitted() -> [Action] {
        guard !isDeposed, let proposed = changeInFlight else { return [] }
        let old = ensemble
        fragments = proposed
        changeInFlight = nil
        var actions: [Action] = []
        let replaced = failedPositions.filter { old[$0] != ensemble[$0] }
        failedPositions.subtract(replaced)
        // Every entry of the new fragment, confirmed meanwhile by the others or not:
        // the replacement holds the position's copy of each.
        let fragmentFirst = fragments[fragments.count - 1].firstEntry
        if lastAddPushed >= fragmentFirst {
            for entry in fragmentFirst...lastAddPushed {
                // An entry carries a last-add-confirmed below itself, resent or not.
                let carried = min(lastAddConfirmed, entry - 1)
                for position in shape.writeSet(of: entry) where replaced.contains(position) {
                    let node = ensemble[position]
                    actions.append(.send(entry: entry, to: node, lastAddConfirmed: carried))
                    advertisedTo[node] = max(advertisedTo[node] ?? -1, carried)
                }
            }
        }
        if !failedPositions.isEmpty { actions += proposeEnsembleChange() }
        return actions + sealIfDone()
    }

    /// The metadata refused the change (its version moved: the segment is being
    /// recovered or is sealed by someone else): this writer is done.
    public mutating func ensembleChangeRefused() -> [Action] {
        depose()
    }

    /// No more appends; `seal` follows once every handed-out entry is confirmed.
    public mutating func close() -> [Action] {
        guard !isDeposed, !isClosing else { return [] }
        isClosing = true
        return sealIfDone()
    }

    /// Nothing is being written: nodes of the ensemble that were not told the current
    /// last-add-confirmed get it explicitly, so readers see the newest entry.
    public mutating func idle() -> [Action] {
        guard !isDeposed, lastAddConfirmed >= fragments[0].firstEntry else { return [] }
        var actions: [Action] = []
        for (position, node) in ensemble.enumerated() where !failedPositions.contains(position) {
            if (advertisedTo[node] ?? -1) < lastAddConfirmed {
                actions.append(.advertise(lastAddConfirmed: lastAddConfirmed, to: node))
                advertisedTo[node] = lastAddConfirmed
            }
        }
        return actions
    }

    // MARK: - Internals

    private mutating func confirmInOrder() -> [Action] {
        var confirmed = lastAddConfirmed
        while confirmed < lastAddPushed, let copies = acknowledged[confirmed + 1], copies.count >= shape.ackQuorumSize {
            confirmed += 1
            acknowledged[confirmed] = nil
        }
        guard confirmed > lastAddConfirmed else { return [] }
        lastAddConfirmed = confirmed
        return [.confirm(upTo: confirmed)] + sealIfDone()
    }

    private mutating func sealIfDone() -> [Action] {
        guard isClosing, !isSealed, lastAddConfirmed == lastAddPushed, changeInFlight == nil else { return [] }
        isSealed = true
        return [.seal(lastEntry: lastAddConfirmed)]
    }

    /// Proposes a new last fragment from the first unconfirmed entry with a spare in
    /// every failed position (BookKeeper: a fragment starting at LAC + 1, replacing the
    /// last one if it already starts there). Without a spare the position stays failed
    /// and entries are confirmed by the others while they still make a quorum.
    private mutating func proposeEnsembleChange() -> [Action] {
        guard changeInFlight == nil else { return [] }
        var next = ensemble
        var replacedAny = false
        for position in failedPositions.sorted() {
            guard let spare = spareNodes.first(where: { !next.contains($0) && !failedNodes.contains($0) }) else { break }
            next[position] = spare
            spareNodes.removeAll { $0 == spare }
            replacedAny = true
        }
        guard replacedAny else { return [] }
        let first = lastAddConfirmed + 1
        var proposed = fragments
        if proposed[proposed.count - 1].firstEntry == first {
            proposed[proposed.count - 1].ensemble = next
        } else {
            proposed.append(Fragment(firstEntry: first, ensemble: next))
        }
        changeInFlight = proposed
        return [.changeEnsemble(proposed)]
    }

    private mutating func depose() -> [Action] {
        guard !isDeposed else { return [] }
        isDeposed = true
        acknowledged = [:]
        changeInFlight = nil
        return [.deposed]
    }
}
