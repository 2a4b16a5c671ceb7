/// Re-replication (BookKeeper's auto-recovery), as pure decisions: which fragments of a
/// segment lost a copy, which entries the replacement must get, where to copy each from,
/// and the fragments to compare-and-set once the copies are durable.
///
/// Only immutable fragments are repaired: every fragment of a sealed segment, and the
/// fragments of an open segment before its last (the writer replaces a failed node of
/// its last fragment itself, with an ensemble change).
public enum ReplicaRepair {
    /// One lost copy of one fragment: `lost` held `position` of fragment `fragment`,
    /// which holds entries `firstEntry...lastEntry`.
    public struct Repair: Sendable, Hashable {
        public var fragment: Int
        public var position: Int
        public var lost: NodeID
        public var replacement: NodeID
        public var firstEntry: Int64
        public var lastEntry: Int64
        let shape: QuorumShape
        /// The fragment's ensemble before the repair.
        let ensemble: [NodeID]
        let lostNodes: Set<NodeID>

        /// Whether the replacement must get `entry`: its write set includes the position.
        public func needs(_ entry: Int64) -> Bool {
            entry >= firstEntry && entry <= lastEntry && shape.isInWriteSet(position, of: entry)
        }

        /// The entries the replacement must get, ascending (computed as iterated: a
        /// fragment may hold millions).
        public var entries: some Sequence<Int64> & Sendable {
            let repair = self
            return (firstEntry...max(firstEntry, lastEntry)).lazy.filter { repair.needs($0) }
        }

        /// The other live nodes of `entry`'s write set, in the order to copy from.
        public func sources(of entry: Int64) -> [NodeID] {
            shape.writeSet(of: entry).filter { $0 != position }.map { ensemble[$0] }.filter { !lostNodes.contains($0) }
        }
    }

    /// What to repair in a segment with `fragments`, whose entries end at `lastEntry`
    /// (the sealed end, or for an open segment any value: its last fragment is skipped).
    /// `lostNodes` are gone for good (past the grace period); replacements are chosen
    /// from `liveNodes`, never a node already in the fragment's ensemble, spread by
    /// `spreadSeed` (the segment id) so repairs do not all land on one node. A fragment
    /// without a possible replacement is left out (repaired once a node joins).
    public static func plan(
        shape: QuorumShape, fragments: [Fragment], sealed: Bool, lastEntry: Int64, lostNodes: Set<NodeID>, liveNodes: [NodeID],
        spreadSeed: UInt64 = 0
    ) -> [Repair] {
        var repairs: [Repair] = []
        let live = liveNodes.filter { !lostNodes.contains($0) }.sorted()
        let repairable = sealed ? fragments.count : fragments.count - 1
        for index in 0..<max(0, repairable) {
            let fragment = fragments[index]
            let end = index + 1 < fragments.count ? fragments[index + 1].firstEntry - 1 : lastEntry
            guard end >= fragment.firstEntry else { continue }  // holds no entry
            var ensemble = fragment.ensemble
            for (position, node) in fragment.ensemble.enumerated() where lostNodes.contains(node) {
                let candidates = live.filter { !ensemble.contains($0) }
                guard !candidates.isEmpty else { continue }
                let replacement = candidates[Int((spreadSeed &+ UInt64(index * 31 + position)) % UInt64(candidates.count))]
                ensemble[position] = replacement
                repairs.append(Repair(
                    fragment: index, position: position, lost: node, replacement: replacement, firstEntry: fragment.firstEntry, lastEntry: end,
                    shape: shape, ensemble: fragment.ensemble, lostNodes: lostNodes))
            }
        }
        return repairs
    }

    /// The fragments after `repair` is done: the replacement in the lost node's place.
    public static func applying(_ repair: Repair, to fragments: [Fragment]) -> [Fragment] {
        var fragments = fragments
        fragments[repair.fragment].ensemble[repair.position] = repair.replacement
        return fragments
    }

    /// Whether the segment still names a lost node in a fragment that holds entries.
    public static func isUnderReplicated(fragments: [Fragment], sealed: Bool, lastEntry: Int64, lostNodes: Set<NodeID>) -> Bool {
        for (index, fragment) in fragments.enumerated() {
            let end = index + 1 < fragments.count ? fragments[index + 1].firstEntry - 1 : (sealed ? lastEntry : .max)
            if end >= fragment.firstEntry, fragment.ensemble.contains(where: lostNodes.contains) { return true }
        }
        return false
    }
}
