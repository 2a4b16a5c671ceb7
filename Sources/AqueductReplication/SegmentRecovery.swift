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
    public let fragments: [Fragment]
    public private(set) var isFinished = false

    private var ensemble: [NodeID] { fragments[fragments.count - 1].ensemble }
    private var fenceAnswers: [Int: FenceAnswer] = [:]
    private var reading: Int64?
    private var readAnswers: [Int: ReadAnswer] = [:]
    /// The first entry proven missing: the segment ends before it.
    private var end: Int64?
    /// Entries being written back: positions that have the copy durably.
    private var writeBacks: [Int64: Set<Int>] = [:]
    /// Positions whose write-back failed, per entry.
    private var writeBackFailures: [Int64: Set<Int>] = [:]

    public init(shape: QuorumShape, fragments: [Fragment]) {
        precondition(!fragments.isEmpty && fragments.allSatisfy { $0.ensemble.count == shape.ensembleSize })
        self.shape = shape
        self.fragments = fragments
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
            let actions: [Action] = shape.writeSet(of: entry).map { .writeBack(entry: entry, to: ensemble[$0], copyFrom: node) }
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

    public mutating func writeBackAcknowledged(_ entry: Int64, by node: NodeID) -> [Action] {
        guard !isFinished, let position = ensemble.firstIndex(of: node), writeBacks[entry] != nil,
              shape.isInWriteSet(position, of: entry)
        else { return [] }
        writeBacks[entry]?.insert(position)
        return sealIfDone()
    }

    /// A node of the entry's write set did not take its copy. Recovery goes on while
    /// the others can still make an ack quorum (a node of a 3/3/2 ensemble may be the
    /// one that died), as the writer's own acknowledgement rule does.
    public mutating func writeBackFailed(_ entry: Int64, at node: NodeID) -> [Action] {
        guard !isFinished, writeBacks[entry] != nil, let position = ensemble.firstIndex(of: node),
              shape.isInWriteSet(position, of: entry)
        else { return [] }
        writeBackFailures[entry, default: []].insert(position)
        let failures = writeBackFailures[entry]!.subtracting(writeBacks[entry] ?? [])
        guard shape.writeQuorumSize - failures.count < shape.ackQuorumSize else { return [] }
        return finish(.failed("writing entry \(entry) back failed on \(failures.count) of \(shape.writeQuorumSize) nodes (node \(node) last)"))
    }

    private mutating func readEntry(_ entry: Int64) -> [Action] {
        reading = entry
        readAnswers = [:]
        return shape.writeSet(of: entry).map { .read(entry: entry, from: ensemble[$0]) }
    }

    private mutating func sealIfDone() -> [Action] {
        guard let end, writeBacks.values.allSatisfy({ $0.count >= shape.ackQuorumSize }) else { return [] }
        return finish(.seal(lastEntry: end - 1))
    }

    private mutating func finish(_ action: Action) -> [Action] {
        isFinished = true
        return [action]
    }
}
