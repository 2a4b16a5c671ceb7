import AqueductReplication
import Testing

/// Re-replication's plan: which fragments lost a copy, which entries the replacement
/// needs, where each is copied from.
@Suite struct ReplicaRepairTests {
    let shape332 = try! QuorumShape(ensemble: 3, write: 3, ack: 2)
    let shape532 = try! QuorumShape(ensemble: 5, write: 3, ack: 2)

    @Test func everyFragmentHoldingTheLostNodeGetsAReplacementOutsideItsEnsemble() {
        let fragments = [Fragment(firstEntry: 0, ensemble: [1, 2, 3]), Fragment(firstEntry: 40, ensemble: [1, 2, 4])]
        let repairs = ReplicaRepair.plan(shape: shape332, fragments: fragments, sealed: true, lastEntry: 99, lostNodes: [2], liveNodes: [1, 3, 4, 5])
        #expect(repairs.count == 2)
        #expect(repairs.map(\.fragment) == [0, 1])
        #expect(repairs.allSatisfy { $0.position == 1 && $0.lost == 2 })
        #expect(!fragments[0].ensemble.contains(repairs[0].replacement) && [4, 5].contains(repairs[0].replacement))
        #expect(repairs[1].replacement == 3 || repairs[1].replacement == 5)
        // 3/3/2: every entry of the fragment is on every node.
        #expect(Array(repairs[0].entries) == Array(0...39))
        #expect(Array(repairs[1].entries) == Array(40...99))
        #expect(repairs[0].sources(of: 7) == [3, 1], "copied from the other live members of the write set, in its order")
        let repaired = repairs.reduce(fragments) { ReplicaRepair.applying($1, to: $0) }
        #expect(!repaired.contains { $0.ensemble.contains(2) })
        #expect(!ReplicaRepair.isUnderReplicated(fragments: repaired, sealed: true, lastEntry: 99, lostNodes: [2]))
        #expect(ReplicaRepair.isUnderReplicated(fragments: fragments, sealed: true, lastEntry: 99, lostNodes: [2]))
    }

    @Test func withStripingOnlyTheEntriesOfTheLostPositionAreCopied() {
        let fragments = [Fragment(firstEntry: 0, ensemble: [1, 2, 3, 4, 5])]
        let repairs = ReplicaRepair.plan(shape: shape532, fragments: fragments, sealed: true, lastEntry: 19, lostNodes: [1], liveNodes: [2, 3, 4, 5, 6])
        #expect(repairs.count == 1 && repairs[0].replacement == 6)
        // Position 0 is in the write sets starting at 3, 4 and 0 (mod 5).
        #expect(Array(repairs[0].entries) == (0...19).filter { [0, 3, 4].contains($0 % 5) }.map(Int64.init))
        #expect(repairs[0].sources(of: 3) == [4, 5])
        #expect(repairs[0].sources(of: 0) == [2, 3])
    }

    @Test func anOpenSegmentsLastFragmentIsTheWritersAndEmptyFragmentsNeedNoCopy() {
        let fragments = [Fragment(firstEntry: 0, ensemble: [1, 2, 3]), Fragment(firstEntry: 10, ensemble: [1, 4, 3]), Fragment(firstEntry: 10, ensemble: [1, 4, 2])]
        let open = ReplicaRepair.plan(shape: shape332, fragments: Array(fragments.prefix(2)), sealed: false, lastEntry: 50, lostNodes: [3], liveNodes: [1, 2, 4, 5])
        #expect(open.map(\.fragment) == [0], "the open segment's last fragment is left to its writer")
        // A fragment that starts where the next one starts holds no entry.
        let sealed = ReplicaRepair.plan(shape: shape332, fragments: fragments, sealed: true, lastEntry: 20, lostNodes: [4], liveNodes: [1, 2, 3, 5])
        #expect(sealed.map(\.fragment) == [2])
        #expect(!ReplicaRepair.isUnderReplicated(fragments: Array(fragments.prefix(2)) + [Fragment(firstEntry: 10, ensemble: [1, 5, 2])],
                                                  sealed: true, lastEntry: 20, lostNodes: [4]))
    }

    @Test func withoutAPossibleReplacementTheFragmentWaits() {
        let fragments = [Fragment(firstEntry: 0, ensemble: [1, 2, 3])]
        #expect(ReplicaRepair.plan(shape: shape332, fragments: fragments, sealed: true, lastEntry: 9, lostNodes: [3], liveNodes: [1, 2]).isEmpty)
        #expect(ReplicaRepair.plan(shape: shape332, fragments: fragments, sealed: true, lastEntry: -1, lostNodes: [3], liveNodes: [1, 2, 4]).isEmpty,
                "an empty segment has nothing to copy")
    }
}
