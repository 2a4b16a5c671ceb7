@testable import AqueductReplication
import AqueductTestSupport
import Testing

@Suite struct SegmentWriterTests {
    let shape = try! QuorumShape(ensemble: 3, write: 3, ack: 2)

    func sends(_ actions: [SegmentWriter.Action]) -> [(entry: Int64, node: NodeID, lac: Int64)] {
        actions.compactMap { if case let .send(entry, node, lac) = $0 { (entry, node, lac) } else { nil } }
    }

    @Test func entriesAreConfirmedInOrderOnceAnAckQuorumHasThem() {
        var writer = SegmentWriter(shape: shape, ensemble: [1, 2, 3])
        let first = writer.append()!
        #expect(first.entry == 0 && sends(first.actions).map(\.node) == [1, 2, 3])
        _ = writer.append()
        _ = writer.append()
        // Entry 2 reaches its quorum first: nothing is confirmed past a gap.
        #expect(writer.acknowledged(2, by: 1).isEmpty)
        #expect(writer.acknowledged(2, by: 3).isEmpty)
        #expect(writer.acknowledged(0, by: 2).isEmpty)
        #expect(writer.acknowledged(0, by: 2).isEmpty, "a repeated ack counts once")
        #expect(writer.acknowledged(0, by: 1) == [.confirm(upTo: 0)])
        #expect(writer.acknowledged(1, by: 3).isEmpty)
        #expect(writer.acknowledged(1, by: 2) == [.confirm(upTo: 2)], "1 unblocks 2, already on a quorum")
        #expect(writer.acknowledged(1, by: 1).isEmpty, "late acks of confirmed entries change nothing")
        #expect(writer.lastAddConfirmed == 2 && writer.pendingCount == 0)
    }

    @Test func stripedEntriesCountOnlyAcksFromTheirWriteSet() throws {
        var writer = SegmentWriter(shape: try QuorumShape(ensemble: 4, write: 2, ack: 2), ensemble: [10, 11, 12, 13])
        let entry = writer.append()!  // entry 0 → positions 0, 1
        #expect(sends(entry.actions).map(\.node) == [10, 11])
        #expect(writer.acknowledged(0, by: 12).isEmpty, "node 12 was never sent entry 0")
        #expect(writer.acknowledged(0, by: 10).isEmpty)
        #expect(writer.acknowledged(0, by: 11) == [.confirm(upTo: 0)])
    }

    @Test func eachEntryCarriesTheLastAddConfirmedWhenItIsSent() {
        var writer = SegmentWriter(shape: shape, ensemble: [1, 2, 3])
        #expect(sends(writer.append()!.actions).allSatisfy { $0.lac == -1 })
        _ = writer.acknowledged(0, by: 1)
        _ = writer.acknowledged(0, by: 2)
        #expect(sends(writer.append()!.actions).allSatisfy { $0.lac == 0 })
        // Idle: the node that was not sent entry 1's copy yet... all were; but none was told
        // that entry 1 is confirmed until it is advertised.
        _ = writer.acknowledged(1, by: 2)
        _ = writer.acknowledged(1, by: 3)
        #expect(Set(writer.idle()) == [.advertise(lastAddConfirmed: 1, to: 1), .advertise(lastAddConfirmed: 1, to: 2), .advertise(lastAddConfirmed: 1, to: 3)])
        #expect(writer.idle().isEmpty, "told once")
    }

    @Test func aFailedNodeIsReplacedByANewFragmentFromTheFirstUnconfirmedEntry() {
        var writer = SegmentWriter(shape: shape, ensemble: [1, 2, 3], spareNodes: [4, 5])
        for _ in 0..<3 { _ = writer.append() }
        _ = writer.acknowledged(0, by: 1)
        _ = writer.acknowledged(0, by: 3)  // 0 confirmed; 1 and 2 pending
        _ = writer.acknowledged(1, by: 3)
        #expect(writer.writeFailed(at: 3) == [.changeEnsemble([Fragment(firstEntry: 0, ensemble: [1, 2, 3]), Fragment(firstEntry: 1, ensemble: [1, 2, 4])])])
        #expect(writer.writeFailed(at: 3).isEmpty, "one change at a time, for one failure")
        #expect(writer.acknowledged(1, by: 3).isEmpty, "the failed node's acks no longer count")
        // Appends go on meanwhile, to the nodes that are left.
        #expect(sends(writer.append()!.actions).map(\.node) == [1, 2])
        #expect(writer.acknowledged(1, by: 1).isEmpty)
        #expect(writer.acknowledged(1, by: 2) == [.confirm(upTo: 1)])
        // The replacement gets every entry of the new fragment, confirmed or not.
        let resent = sends(writer.ensembleChangeCommitted())
        #expect(resent.map(\.entry) == [1, 2, 3] && resent.allSatisfy { $0.node == 4 })
        #expect(writer.fragments.last == Fragment(firstEntry: 1, ensemble: [1, 2, 4]))
        _ = writer.acknowledged(2, by: 4)
        #expect(writer.acknowledged(2, by: 1) == [.confirm(upTo: 2)])
    }

    @Test func aChangeRefusedByTheMetadataOrAFencedNodeDeposesTheWriter() {
        var writer = SegmentWriter(shape: shape, ensemble: [1, 2, 3], spareNodes: [4])
        _ = writer.append()
        _ = writer.writeFailed(at: 2)
        #expect(writer.ensembleChangeRefused() == [.deposed])
        #expect(writer.append() == nil)
        #expect(writer.acknowledged(0, by: 1).isEmpty && writer.acknowledged(0, by: 3).isEmpty, "nothing is confirmed after")

        var other = SegmentWriter(shape: shape, ensemble: [1, 2, 3])
        _ = other.append()
        _ = other.acknowledged(0, by: 1)
        #expect(other.fenced(by: 2) == [.deposed])
        #expect(other.fenced(by: 3).isEmpty)
        #expect(other.acknowledged(0, by: 3).isEmpty)
    }

    @Test func closingSealsOnceEveryEntryIsConfirmed() {
        var writer = SegmentWriter(shape: shape, ensemble: [1, 2, 3])
        _ = writer.append()
        _ = writer.append()
        _ = writer.acknowledged(0, by: 1)
        _ = writer.acknowledged(0, by: 2)
        #expect(writer.close().isEmpty)
        #expect(writer.append() == nil, "no appends while closing")
        _ = writer.acknowledged(1, by: 1)
        #expect(writer.acknowledged(1, by: 3) == [.confirm(upTo: 1), .seal(lastEntry: 1)])
        var empty = SegmentWriter(shape: shape, ensemble: [1, 2, 3])
        #expect(empty.close() == [.seal(lastEntry: -1)])
    }

    /// Random interleavings of sends, acks, node failures and metadata answers against a
    /// model of the nodes' disks: every confirmed entry is on an ack quorum of its
    /// fragment as the metadata has it, confirmations come in order, each send carries a
    /// last-add-confirmed below its entry; in the end every entry is fully replicated.
    @Test func randomInterleavingsKeepEveryConfirmedEntryOnAQuorum() throws {
        let first = testSeed()
        for run in UInt64(0)..<200 { try simulate(seed: first &+ run) }
    }

    func simulate(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let shapes = [try QuorumShape(ensemble: 3, write: 3, ack: 2), try QuorumShape(ensemble: 4, write: 3, ack: 2),
                      try QuorumShape(ensemble: 5, write: 2, ack: 2), try QuorumShape(ensemble: 3, write: 2, ack: 1), .single]
        let shape = shapes[Int(random.next() % UInt64(shapes.count))]
        let spares = Array(100..<(100 + shape.ensembleSize))
        var writer = SegmentWriter(shape: shape, ensemble: Array(0..<shape.ensembleSize), spareNodes: spares)
        var disks: [NodeID: Set<Int64>] = [:]
        var dead: Set<NodeID> = []
        var inFlight: [(entry: Int64, node: NodeID)] = []
        var acks: [(entry: Int64, node: NodeID)] = []
        var confirmed: Int64 = -1
        var changePending = false
        var failuresLeft = shape.ensembleSize - 1

        func apply(_ actions: [SegmentWriter.Action]) {
            for action in actions {
                switch action {
                case let .send(entry, node, lac):
                    #expect(lac < entry, "seed \(seed)")
                    inFlight.append((entry, node))
                case let .confirm(upTo):
                    #expect(upTo > confirmed, "seed \(seed)")
                    confirmed = upTo
                case .changeEnsemble: changePending = true
                case .advertise, .seal: break
                case .deposed: Issue.record("deposed without fencing, seed \(seed)")
                }
            }
        }
        func checkQuorums() {
            guard confirmed >= 0 else { return }
            for entry in 0...confirmed {
                let fragment = writer.fragments.last { $0.firstEntry <= entry }!
                let copies = shape.writeSet(of: entry).filter { disks[fragment.ensemble[$0], default: []].contains(entry) }.count
                #expect(copies >= shape.ackQuorumSize, "entry \(entry) on \(copies) nodes of \(fragment), seed \(seed)")
            }
        }

        for _ in 0..<300 {
            switch random.next() % 10 {
            case 0, 1, 2:
                if let appended = writer.append() { apply(appended.actions) }
            case 3, 4, 5:
                guard !inFlight.isEmpty else { continue }
                let delivery = inFlight.remove(at: Int(random.next() % UInt64(inFlight.count)))
                if dead.contains(delivery.node) { continue }
                disks[delivery.node, default: []].insert(delivery.entry)
                acks.append(delivery)
            case 6, 7:
                guard !acks.isEmpty else { continue }
                let ack = acks.remove(at: Int(random.next() % UInt64(acks.count)))
                if !dead.contains(ack.node) { apply(writer.acknowledged(ack.entry, by: ack.node)) }
            case 8:
                if changePending, random.next() % 2 == 0 {
                    changePending = false
                    apply(writer.ensembleChangeCommitted())
                }
            default:
                guard failuresLeft > 0, random.next() % 4 == 0 else { continue }
                let victim = writer.ensemble[Int(random.next() % UInt64(shape.ensembleSize))]
                guard !dead.contains(victim) else { continue }
                failuresLeft -= 1
                dead.insert(victim)
                apply(writer.writeFailed(at: victim))
            }
            checkQuorums()
        }
        // Quiesce: changes commit, everything is delivered and acknowledged.
        while changePending || !inFlight.isEmpty || !acks.isEmpty {
            if changePending { changePending = false; apply(writer.ensembleChangeCommitted()) }
            for delivery in inFlight where !dead.contains(delivery.node) {
                disks[delivery.node, default: []].insert(delivery.entry)
                acks.append(delivery)
            }
            inFlight = []
            let pending = acks
            acks = []
            for ack in pending where !dead.contains(ack.node) { apply(writer.acknowledged(ack.entry, by: ack.node)) }
        }
        checkQuorums()
        #expect(confirmed == writer.lastAddPushed, "every entry confirmed, seed \(seed)")
        #expect(writer.ensemble.allSatisfy { !dead.contains($0) }, "no dead node left in the ensemble, seed \(seed)")
        if writer.lastAddPushed >= 0 {
            for entry in 0...writer.lastAddPushed {
                let fragment = writer.fragments.last { $0.firstEntry <= entry }!
                guard fragment == writer.fragments.last else { continue }  // older fragments keep a dead node: re-replication's job
                for position in shape.writeSet(of: entry) {
                    #expect(disks[fragment.ensemble[position], default: []].contains(entry), "entry \(entry) missing on \(fragment.ensemble[position]), seed \(seed)")
                }
            }
        }
    }
}
