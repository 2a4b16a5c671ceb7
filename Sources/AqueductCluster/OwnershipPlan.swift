import AqueductReplication

/// Who should write each log (own its partition), as a pure function every node
/// computes from the same view of etcd, so they agree without talking to each other;
/// a claim is still a compare-and-set, so two nodes with different views cannot both
/// own a log.
///
/// Sticky: a log stays with its owner while the owner is live and not draining (a
/// move costs a takeover, and Kafka clients a metadata refresh), unless the owners are
/// out of balance by more than one log (a node joined). A log without an owner goes to
/// the live, non-draining node owning the fewest; ties are broken by the log's id, so
/// new logs spread round-robin.
public enum OwnershipPlan {
    public static func assign(
        logs: [UInt64], liveNodes: Set<NodeID>, draining: Set<NodeID>, owners: [UInt64: NodeID]
    ) -> [UInt64: NodeID] {
        let eligible = liveNodes.subtracting(draining).sorted()
        var plan: [UInt64: NodeID] = [:]
        var load = Dictionary(uniqueKeysWithValues: eligible.map { ($0, 0) })
        let sorted = logs.sorted()
        for log in sorted {
            if let owner = owners[log], liveNodes.contains(owner), !draining.contains(owner) {
                plan[log] = owner
                load[owner, default: 0] += 1
            }
        }
        guard !eligible.isEmpty else { return plan }
        for log in sorted where plan[log] == nil {
            let fewest = load.values.min()!
            let candidates = eligible.filter { load[$0] == fewest }
            let chosen = candidates[Int(log % UInt64(candidates.count))]
            plan[log] = chosen
            load[chosen, default: 0] += 1
        }
        // Balance: while one node owns two more than another (a node joined), its
        // highest log moves to the least loaded. Only imbalance moves a log.
        while let most = eligible.max(by: { (load[$0]!, $1) < (load[$1]!, $0) }),
              let least = eligible.min(by: { (load[$0]!, $0) < (load[$1]!, $1) }),
              load[most]! - load[least]! > 1,
              let moved = sorted.last(where: { plan[$0] == most })
        {
            plan[moved] = least
            load[most]! -= 1
            load[least]! += 1
        }
        return plan
    }

    /// Plans several kinds of owned things at once (partitions' logs, topologies), each
    /// kind spread over the nodes on its own: a node with many partitions still gets
    /// its share of topologies. Ids are unique across kinds.
    public static func assign(
        kinds: [[UInt64]], liveNodes: Set<NodeID>, draining: Set<NodeID>, owners: [UInt64: NodeID]
    ) -> [UInt64: NodeID] {
        var plan: [UInt64: NodeID] = [:]
        for ids in kinds {
            plan.merge(assign(logs: ids, liveNodes: liveNodes, draining: draining, owners: owners)) { first, _ in first }
        }
        return plan
    }

    /// What `node` must do to follow `plan`, given who owns what now.
    public struct Steps: Equatable, Sendable {
        /// Logs to claim (no owner now; the plan gives them to this node).
        public var claim: [UInt64] = []
        /// Logs to hand over (owned by this node; the plan moves them: draining).
        public var release: [UInt64] = []
    }

    public static func steps(for node: NodeID, plan: [UInt64: NodeID], owners: [UInt64: NodeID]) -> Steps {
        var steps = Steps()
        for (log, planned) in plan.sorted(by: { $0.key < $1.key }) where planned == node && owners[log] == nil {
            steps.claim.append(log)
        }
        for (log, owner) in owners.sorted(by: { $0.key < $1.key }) where owner == node && plan[log] != node {
            steps.release.append(log)
        }
        return steps
    }
}
