/// Closing a segment whose writer may still be alive (BookKeeper's open-for-recovery), as a
/// pure state machine: fence every node of the last fragment until no write set could
/// still acknowledge an entry of the old writer, read forward from the highest
/// last-add-confirmed, write every entry found back to its write set (an ack quorum of
/// it must take it, as for the writer), and end the
/// segment before the first entry proven missing. The caller claims the new epoch in
/// metadata (compare-and-set) before it starts, and records `seal` the same way after.
public struct SegmentRecovery: Sendable {
    /// A node's answer to "fence this segment and tell me what you have".
    public enum FenceAnswer: Sendable, Hashable {
        /// Fenced; the highest last-add-confirmed the node was told.
        case fenced(lastAddConfirmed: Int64)
        /// The node never got an entry of the segment (it counts as an answer: the old
        /// writer crashed before writing to it), and is fenced now.
        case noSuchSegment
        /// No answer, or an error: the node may still take the old writer's entries.
        case failed
    }

    public enum ReadAnswer: Sendable, Hashable {
        case found
        case missing
        case failed
    }

    public enum Action: Sendable, Hashable {
        /// Fence the segment on `node` and ask for its last-add-confirmed.
        case fence(NodeID)
        /// A recovery read (it fences too) of `entry` from `node`.
        case read(entry: Int64, from: NodeID)
        /// Write the copy of `entry` read from `copyFrom` to `node` as a recovery add,
        /// which fenced nodes take.
        case writeBack(entry: Int64, to: NodeID, copyFrom: NodeID)
        /// Every entry up to `lastEntry` is on an ack quorum: seal the segment there.
        case seal(lastEntry: Int64)
        /// Recovery cannot decide now (too many nodes unreachable); retry later.
        case failed(String)
    }

    public let shape: QuorumShape
    /// The segment's fragments; when a write-back fails and a spare is left, recovery
    /// changes the ensemble from the first entry not yet on an ack quorum (a fragment
    /// more, recorded with the seal), as BookKeeper's recovery does.
    public private(set) var fragments: [Fragment]
    public private(set) var isFinished = false

    /// The last fragment as the old writer left it: fences and reads go there.
    private let ensemble: [NodeID]
    /// Where write-backs of entries from `writeFrom` on go (the last fragment's
    /// ensemble until a write-back fails).
    private var writeEnsemble: [NodeID]
    private var writeFrom: Int64
    /// Nodes that may replace one that fails a write-back, in order of preference.
    private var spareNodes: [NodeID]
    /// The node each entry's copy was read from (write-backs to a replacement copy it).
    private var sources: [Int64: NodeID] = [:]
    private let originalFragments: Int
    private var fenceAnswers: [Int: FenceAnswer] = [:]
    private var reading: Int64?
    private var readAnswers: [Int: ReadAnswer] = [:]
    /// The first entry proven missing: the segment ends before it.
    private var end: Int64?
    /// Entries being written back: positions that have the copy durably.
    private var writeBacks: [Int64: Set<Int>] = [:]
    /// Positions whose write-back failed, per entry.
    private var writeBackFailures: [Int64: Set<Int>] = [:]

    /// `spareNodes`: nodes outside the last fragment that may take a failed node's place.
    public init(shape: QuorumShape, fragments: [Fragment], spareNodes: [NodeID] = []) {
        precondition(!fragments.isEmpty && fragments.allSatisfy { $0.ensemble.count == shape.ensembleSize })
        self.shape = shape
        self.fragments = fragments
        ensemble = fragments[fragments.count - 1].ensemble
        writeEnsemble = ensemble
        writeFrom = fragments[fragments.count - 1].firstEntry
        self.spareNodes = spareNodes.filter { !fragments[fragments.count - 1].ensemble.contains($0) }
        originalFragments = fragments.count
    }

    /// Fences every node of the last fragment (earlier fragments are immutable: their
    /// entries were all confirmed before the fragment after them began).
    public mutating func start() -> [Action] {
        ensemble.map { .fence($0) }
    }

    public mutating func fenceAnswered(by node: NodeID, _ answer: FenceAnswer) -> [Action] {
        guard !isFinished, reading == nil, end == nil, let position = ensemble.firstIndex(of: node) else { return [] }
        fenceAnswers[position] = answer
        let answered = Set(fenceAnswers.filter { $0.value != .failed }.keys)
        guard shape.fenceIsCovered(answered: answered) else {
            if fenceAnswers.count == shape.ensembleSize {
                return finish(.failed("fencing reached \(answered.count) of \(shape.ensembleSize) nodes; some write set could still take the old writer's entries"))
            }
            return []
        }
        let highestConfirmed = fenceAnswers.values.compactMap { answer -> Int64? in
            if case let .fenced(lastAddConfirmed) = answer { lastAddConfirmed } else { nil }
        }.max() ?? -1
        return readEntry(max(highestConfirmed, fragments[fragments.count - 1].firstEntry - 1) + 1)
    }

    public mutating func readAnswered(_ entry: Int64, by node: NodeID, _ answer: ReadAnswer) -> [Action] {
        guard !isFinished, entry == reading, let position = ensemble.firstIndex(of: node),
              shape.isInWriteSet(position, of: entry), readAnswers[position] == nil
        else { return [] }
        readAnswers[position] = answer
        switch answer {
        case .found:
            writeBacks[entry] = []
            sources[entry] = node
            let actions: [Action] = shape.writeSet(of: entry).map { .writeBack(entry: entry, to: writeEnsemble[$0], copyFrom: node) }
            return actions + readEntry(entry + 1)
        case .missing, .failed:
            let negative = Set(readAnswers.filter { $0.value == .missing }.keys)
            if shape.entryIsProvablyMissing(entry, negativeFrom: negative) {
                end = entry
                reading = nil
                return sealIfDone()
            }
            if readAnswers.count == shape.writeQuorumSize {
                return finish(.failed("entry \(entry) was neither read nor proven missing: \(negative.count) of \(shape.missingProofCount) nodes said missing"))
            }
            return []
        }
    }

    /// The nodes an entry's write-back goes to.
    private func writeBackEnsemble(of entry: Int64) -> [NodeID] { entry >= writeFrom ? writeEnsemble : ensemble }

    public mutating func writeBackAcknowledged(_ entry: Int64, by node: NodeID) -> [Action] {
        guard !isFinished, let position = writeBackEnsemble(of: entry).firstIndex(of: node), writeBacks[entry] != nil,
              shape.isInWriteSet(position, of: entry)
        else { return [] }
        writeBacks[entry]?.insert(position)
        return sealIfDone()
    }

    /// A node of the entry's write set did not take its copy. With a spare left, it is
    /// replaced from the first entry not yet on an ack quorum (the copies it took before
    /// that stay where the metadata names them); without one, recovery goes on while
    /// the others can still make an ack quorum, as the writer's own acknowledgement rule
    /// does.
    public mutating func writeBackFailed(_ entry: Int64, at node: NodeID) -> [Action] {
        guard !isFinished, writeBacks[entry] != nil, let position = writeBackEnsemble(of: entry).firstIndex(of: node),
              shape.isInWriteSet(position, of: entry), (writeBacks[entry]?.count ?? 0) < shape.ackQuorumSize
        else { return [] }
        if !spareNodes.isEmpty { return replace(position) }
        writeBackFailures[entry, default: []].insert(position)
        let failures = writeBackFailures[entry]!.subtracting(writeBacks[entry] ?? [])
        guard shape.writeQuorumSize - failures.count < shape.ackQuorumSize else { return [] }
        return finish(.failed("writing entry \(entry) back failed on \(failures.count) of \(shape.writeQuorumSize) nodes (node \(node) last)"))
    }

    /// An ensemble change during recovery: `position` of the write ensemble becomes a
    /// spare from the first entry not yet on an ack quorum on; every entry from there
    /// whose write set has the position is written to the spare (what the old node took
    /// of them no longer counts: the metadata will name the spare there).
    private mutating func replace(_ position: Int) -> [Action] {
        // Entries before it are on an ack quorum where the metadata names them now; all
        // from it on were read back by this recovery (so each has a source).
        guard let from = writeBacks.filter({ $0.value.count < shape.ackQuorumSize }).keys.min() else { return [] }
        let spare = spareNodes.removeFirst()
        writeEnsemble[position] = spare
        writeFrom = from
        if let last = fragments.last, last.firstEntry == from {
            fragments[fragments.count - 1].ensemble = writeEnsemble
        } else {
            fragments.append(Fragment(firstEntry: from, ensemble: writeEnsemble))
        }
        var actions: [Action] = []
        for entry in writeBacks.keys.sorted() where entry >= from && shape.isInWriteSet(position, of: entry) {
            writeBacks[entry]?.remove(position)
            writeBackFailures[entry]?.remove(position)
            actions.append(.writeBack(entry: entry, to: spare, copyFrom: sources[entry]!))
        }
        return actions
    }

    private mutating func readEntry(_ entry: Int64) -> [Action] {
        reading = entry
        readAnswers = [:]
        return shape.writeSet(of: entry).map { .read(entry: entry, from: ensemble[$0]) }
    }

    private mutating func sealIfDone() -> [Action] {
        guard let end, writeBacks.values.allSatisfy({ $0.count >= shape.ackQuorumSize }) else { return [] }
        // A fragment begun for entries that turned out missing holds nothing.
        while fragments.count > originalFragments, let last = fragments.last, last.firstEntry > end - 1 { fragments.removeLast() }
        return finish(.seal(lastEntry: end - 1))
    }

    private mutating func finish(_ action: Action) -> [Action] {
        isFinished = true
        return [action]
    }
}
