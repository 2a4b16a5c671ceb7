@testable import AqueductReplication
import AqueductTestSupport
import Testing

@Suite struct SegmentRecoveryTests {
    let shape = try! QuorumShape(ensemble: 3, write: 3, ack: 2)

    @Test func recoveryReadsFromTheHighestConfirmedEntryWritesBackAndSealsBeforeTheFirstMissing() {
        var recovery = SegmentRecovery(shape: shape, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2, 3])])
        #expect(recovery.start() == [.fence(1), .fence(2), .fence(3)])
        #expect(recovery.fenceAnswered(by: 1, .fenced(lastAddConfirmed: 2)).isEmpty, "one of three covers nothing for 3/3/2")
        #expect(Set(recovery.fenceAnswered(by: 2, .fenced(lastAddConfirmed: 1))) == [.read(entry: 3, from: 1), .read(entry: 3, from: 2), .read(entry: 3, from: 3)])
        #expect(recovery.fenceAnswered(by: 3, .failed).isEmpty, "late answers change nothing")
        let found = recovery.readAnswered(3, by: 2, .found)
        #expect(Set(found) == [.writeBack(entry: 3, to: 1, copyFrom: 2), .writeBack(entry: 3, to: 2, copyFrom: 2), .writeBack(entry: 3, to: 3, copyFrom: 2),
                               .read(entry: 4, from: 1), .read(entry: 4, from: 2), .read(entry: 4, from: 3)])
        #expect(recovery.readAnswered(4, by: 1, .missing).isEmpty, "one negative answer proves nothing")
        #expect(recovery.readAnswered(4, by: 3, .missing).isEmpty, "proven missing, but entry 3 is not written back yet")
        #expect(recovery.writeBackAcknowledged(3, by: 1).isEmpty)
        #expect(recovery.writeBackAcknowledged(3, by: 3) == [.seal(lastEntry: 3)])
        #expect(recovery.isFinished)
    }

    @Test func aWriteBackThatFailsOnOneNodeStillSealsWhenTheOthersMakeAnAckQuorum() {
        var recovery = SegmentRecovery(shape: shape, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2, 3])])
        _ = recovery.start()
        _ = recovery.fenceAnswered(by: 1, .fenced(lastAddConfirmed: 0))
        _ = recovery.fenceAnswered(by: 3, .fenced(lastAddConfirmed: 0))
        _ = recovery.readAnswered(1, by: 1, .found)
        _ = recovery.readAnswered(2, by: 1, .missing)
        #expect(recovery.readAnswered(2, by: 3, .missing).isEmpty, "entry 1 is not written back yet")
        #expect(recovery.writeBackFailed(1, at: 2).isEmpty, "node 2 is gone, 1 and 3 can still acknowledge")
        #expect(recovery.writeBackAcknowledged(1, by: 1).isEmpty)
        #expect(recovery.writeBackAcknowledged(1, by: 3) == [.seal(lastEntry: 1)])

        // 2/2/2 on two nodes, one of them gone: no ack quorum is left.
        var degraded = SegmentRecovery(shape: try! QuorumShape(ensemble: 2, write: 2, ack: 2), fragments: [Fragment(firstEntry: 0, ensemble: [1, 2])])
        _ = degraded.start()
        _ = degraded.fenceAnswered(by: 1, .fenced(lastAddConfirmed: -1))
        _ = degraded.readAnswered(0, by: 1, .found)
        guard case .failed = degraded.writeBackFailed(0, at: 2).first else { Issue.record("expected a failure"); return }
    }

    /// BookKeeper's ensemble change during recovery: a 2/2/2 segment (made while a node
    /// was down) loses one of its two nodes; a spare takes its place from the first
    /// entry not on an ack quorum, and the seal carries the new fragment.
    @Test func aFailedWriteBackMovesToASpareFromTheFirstUnsecuredEntry() {
        let pair = try! QuorumShape(ensemble: 2, write: 2, ack: 2)
        var recovery = SegmentRecovery(shape: pair, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2])], spareNodes: [2, 3, 4])
        _ = recovery.start()
        _ = recovery.fenceAnswered(by: 2, .failed)
        #expect(Set(recovery.fenceAnswered(by: 1, .fenced(lastAddConfirmed: 4))) == [.read(entry: 5, from: 1), .read(entry: 5, from: 2)])
        #expect(Set(recovery.readAnswered(5, by: 1, .found)) == [
            .writeBack(entry: 5, to: 1, copyFrom: 1), .writeBack(entry: 5, to: 2, copyFrom: 1), .read(entry: 6, from: 1), .read(entry: 6, from: 2),
        ])
        _ = recovery.readAnswered(6, by: 1, .found)
        #expect(recovery.writeBackAcknowledged(5, by: 1).isEmpty)
        // Node 2 fails entry 6's write-back: node 3 (not 2 again) takes position 1 from
        // entry 5, the first entry without an ack quorum; entries 5 and 6 go to it.
        #expect(Set(recovery.writeBackFailed(6, at: 2)) == [.writeBack(entry: 5, to: 3, copyFrom: 1), .writeBack(entry: 6, to: 3, copyFrom: 1)])
        #expect(recovery.fragments == [Fragment(firstEntry: 0, ensemble: [1, 2]), Fragment(firstEntry: 5, ensemble: [1, 3])])
        #expect(recovery.writeBackAcknowledged(5, by: 2).isEmpty && recovery.writeBackFailed(5, at: 2).isEmpty, "node 2 no longer counts from entry 5")
        // Entry 7 is read from the old ensemble (where the old writer wrote it).
        #expect(Set(recovery.readAnswered(7, by: 1, .missing)) == [])
        _ = recovery.writeBackAcknowledged(6, by: 1)
        _ = recovery.writeBackAcknowledged(5, by: 3)
        #expect(recovery.writeBackAcknowledged(6, by: 3) == [.seal(lastEntry: 6)])
        #expect(recovery.fragments.last == Fragment(firstEntry: 5, ensemble: [1, 3]))
    }

    @Test func aLastFragmentStartsTheReadsEvenWhenNodesKnowAnOlderConfirmedEntry() {
        var recovery = SegmentRecovery(shape: shape, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2, 3]), Fragment(firstEntry: 10, ensemble: [1, 2, 4])])
        #expect(recovery.start() == [.fence(1), .fence(2), .fence(4)])
        _ = recovery.fenceAnswered(by: 4, .noSuchSegment)
        // Entry 10 starts the fragment (its write set: every node of 3/3/2), not entry 8.
        #expect(Set(recovery.fenceAnswered(by: 1, .fenced(lastAddConfirmed: 7))) == [.read(entry: 10, from: 1), .read(entry: 10, from: 2), .read(entry: 10, from: 4)])
    }

    @Test func recoveryFailsWhenFencingOrAReadCannotDecide() {
        var unfenced = SegmentRecovery(shape: shape, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2, 3])])
        _ = unfenced.start()
        _ = unfenced.fenceAnswered(by: 1, .fenced(lastAddConfirmed: 0))
        _ = unfenced.fenceAnswered(by: 2, .failed)
        guard case .failed = unfenced.fenceAnswered(by: 3, .failed).first else { Issue.record("expected a failure"); return }

        var undecided = SegmentRecovery(shape: shape, fragments: [Fragment(firstEntry: 0, ensemble: [1, 2, 3])])
        _ = undecided.start()
        _ = undecided.fenceAnswered(by: 1, .noSuchSegment)
        _ = undecided.fenceAnswered(by: 2, .noSuchSegment)
        _ = undecided.readAnswered(0, by: 1, .missing)
        _ = undecided.readAnswered(0, by: 2, .failed)
        guard case .failed = undecided.readAnswered(0, by: 3, .failed).first else { Issue.record("expected a failure"); return }
    }

    /// The deposed writer keeps writing while a new one fences and recovers the segment,
    /// in random interleavings, with nodes the recoverer cannot reach: whenever recovery
    /// seals, every entry the old writer ever confirmed is at or before the seal and on an
    /// ack quorum, and the old writer confirms nothing past it.
    @Test func aTakeoverRacingTheOldWriterNeverLosesAConfirmedEntry() throws {
        let first = testSeed()
        var sealed = 0
        for run in UInt64(0)..<300 where try takeover(seed: first &+ run) { sealed += 1 }
        #expect(sealed > 100, "most runs should seal")
    }

    struct Disk {
        var entries: Set<Int64> = []
        var lastAddConfirmed: Int64 = -1
        var fenced = false
    }

    /// One run; true when recovery sealed the segment.
    func takeover(seed: UInt64) throws -> Bool {
        var random = SplitMix64(seed: seed)
        let shapes = [try QuorumShape(ensemble: 3, write: 3, ack: 2), try QuorumShape(ensemble: 4, write: 3, ack: 2),
                      try QuorumShape(ensemble: 5, write: 3, ack: 2), try QuorumShape(ensemble: 5, write: 2, ack: 2), .single]
        let shape = shapes[Int(random.next() % UInt64(shapes.count))]
        let nodes = Array(0..<shape.ensembleSize)
        var disks = Dictionary(uniqueKeysWithValues: nodes.map { ($0, Disk()) })
        // Nodes the recoverer cannot reach (the old writer can): at most Qa − 1 usually.
        let unreachable = Set(nodes.filter { _ in random.next() % 5 == 0 })
        var writer = SegmentWriter(shape: shape, ensemble: nodes)
        var writerMail: [(entry: Int64, node: NodeID, lac: Int64)] = []
        var writerAcks: [(entry: Int64, node: NodeID)] = []
        var confirmed: Int64 = -1
        var recovery: SegmentRecovery?
        var recoveryMail: [SegmentRecovery.Action] = []
        var writeBackAcks: [(entry: Int64, node: NodeID)] = []
        var seal: Int64?
        var failedRecovery = false

        func applyWriter(_ actions: [SegmentWriter.Action]) {
            for action in actions {
                if case let .send(entry, node, lac) = action { writerMail.append((entry, node, lac)) }
                if case let .confirm(upTo) = action { confirmed = upTo }
            }
        }
        func applyRecovery(_ actions: [SegmentRecovery.Action]) {
            for action in actions {
                switch action {
                case let .seal(lastEntry): seal = lastEntry
                case .failed: failedRecovery = true
                default: recoveryMail.append(action)
                }
            }
        }

        for step in 0..<400 {
            if recovery == nil, step > 20, random.next() % 30 == 0 {
                recovery = SegmentRecovery(shape: shape, fragments: writer.fragments)
                applyRecovery(recovery!.start())
            }
            switch random.next() % 8 {
            case 0, 1:
                if let appended = writer.append() { applyWriter(appended.actions) }
            case 2, 3:
                guard !writerMail.isEmpty else { continue }
                let mail = writerMail.remove(at: Int(random.next() % UInt64(writerMail.count)))
                if disks[mail.node]!.fenced {
                    applyWriter(writer.fenced(by: mail.node))
                } else {
                    disks[mail.node]!.entries.insert(mail.entry)
                    disks[mail.node]!.lastAddConfirmed = max(disks[mail.node]!.lastAddConfirmed, mail.lac)
                    writerAcks.append((mail.entry, mail.node))
                }
            case 4:
                guard !writerAcks.isEmpty else { continue }
                let ack = writerAcks.remove(at: Int(random.next() % UInt64(writerAcks.count)))
                applyWriter(writer.acknowledged(ack.entry, by: ack.node))
            case 5, 6:
                guard var current = recovery, !recoveryMail.isEmpty else { continue }
                let action = recoveryMail.remove(at: Int(random.next() % UInt64(recoveryMail.count)))
                switch action {
                case let .fence(node):
                    if unreachable.contains(node) {
                        applyRecovery(current.fenceAnswered(by: node, .failed))
                    } else {
                        disks[node]!.fenced = true
                        let disk = disks[node]!
                        applyRecovery(current.fenceAnswered(by: node, disk.entries.isEmpty ? .noSuchSegment : .fenced(lastAddConfirmed: disk.lastAddConfirmed)))
                    }
                case let .read(entry, node):
                    if unreachable.contains(node) {
                        applyRecovery(current.readAnswered(entry, by: node, .failed))
                    } else {
                        disks[node]!.fenced = true  // a recovery read fences too
                        applyRecovery(current.readAnswered(entry, by: node, disks[node]!.entries.contains(entry) ? .found : .missing))
                    }
                case let .writeBack(entry, node, _):
                    if unreachable.contains(node) { continue }
                    disks[node]!.entries.insert(entry)  // a recovery add: fenced nodes take it
                    writeBackAcks.append((entry, node))
                default: break
                }
                recovery = current
            default:
                guard var current = recovery, !writeBackAcks.isEmpty else { continue }
                let ack = writeBackAcks.remove(at: Int(random.next() % UInt64(writeBackAcks.count)))
                applyRecovery(current.writeBackAcknowledged(ack.entry, by: ack.node))
                recovery = current
            }
            if let seal {
                #expect(confirmed <= seal, "the old writer confirmed \(confirmed) past the seal at \(seal), \(shape), seed \(seed)")
            }
        }
        guard let seal else { return false }
        #expect(confirmed <= seal, "confirmed \(confirmed) lost: sealed at \(seal), \(shape), seed \(seed)")
        if seal >= 0 {
            for entry in 0...seal {
                let copies = shape.writeSet(of: entry).filter { disks[nodes[$0]]!.entries.contains(entry) }.count
                #expect(copies >= shape.ackQuorumSize, "entry \(entry) on \(copies) nodes after the seal, \(shape), seed \(seed)")
            }
        }
        _ = failedRecovery
        return true
    }
}
