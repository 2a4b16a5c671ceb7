import AqueductMetadata
import AqueductReplication
import Foundation
import Logging
import Metrics
import Synchronization

/// Copies the entries a lost node held to a replacement and records the replacement in
/// the segment's metadata (BookKeeper's ReplicationWorker), following `ReplicaRepair`'s
/// plan. Sealed segments only: an open segment's writer changes its own ensemble, and a
/// compare-and-set on the metadata it writes would depose it; its older fragments are
/// repaired once it is sealed.
public enum SegmentReplicator {
    public struct Configuration: Sendable {
        public var requestTimeoutMilliseconds: Int64 = 5_000
        /// Entries being copied at once for one segment.
        public var copiesInFlight = 16
        /// Attempts when the metadata changes between the plan and its commit.
        public var commitAttemptsMax = 4

        public init() {}
    }

    /// Repairs `segment`; returns what it repaired (empty: nothing to do, or not sealed).
    public static func repair(
        segment: UInt64, lostNodes: Set<NodeID>, liveNodes: [NodeID], transport: any StorageTransport, metadataStore: SegmentMetadataStore,
        configuration: Configuration = .init(), logger: Logger = Logger(label: "aqueduct.replica.repair")
    ) async throws(ReplicationError) -> [ReplicaRepair.Repair] {
        for _ in 0..<configuration.commitAttemptsMax {
            let (metadata, version) = try await metadataStore.load(segment)
            guard metadata.state == .sealed else { return [] }
            let repairs = ReplicaRepair.plan(
                shape: try metadata.shape, fragments: metadata.fragments, sealed: true, lastEntry: metadata.lastEntry ?? -1,
                lostNodes: lostNodes, liveNodes: liveNodes, spreadSeed: segment)
            guard !repairs.isEmpty else { return [] }
            for repair in repairs {
                try await copy(segment, repair, transport: transport, configuration: configuration)
            }
            var repaired = metadata
            for repair in repairs { repaired.fragments = ReplicaRepair.applying(repair, to: repaired.fragments) }
            do throws(ReplicationError) {
                _ = try await metadataStore.replace(segment, repaired, version: version)
            } catch .fenced {
                continue  // changed meanwhile (another repairer): plan again
            }
            for repair in repairs {
                logger.info("re-replicated a fragment", metadata: [
                    "segment": "\(segment)", "fragment": "\(repair.fragment)", "lost": "\(repair.lost)", "replacement": "\(repair.replacement)",
                ])
            }
            return repairs
        }
        throw .metadata("segment \(segment) kept changing during its repair")
    }

    private static func copy(
        _ segment: UInt64, _ repair: ReplicaRepair.Repair, transport: any StorageTransport, configuration: Configuration
    ) async throws(ReplicationError) {
        var entries = repair.entries.makeIterator()
        let failure: ReplicationError? = await withTaskGroup(of: ReplicationError?.self) { group in
            var running = 0
            while true {
                while running < configuration.copiesInFlight, let entry = entries.next() {
                    group.addTask { await copyEntry(segment, entry, repair, transport: transport, timeout: configuration.requestTimeoutMilliseconds) }
                    running += 1
                }
                guard running > 0, let outcome = await group.next() else { return nil }
                running -= 1
                if let outcome {
                    group.cancelAll()
                    return outcome
                }
            }
        }
        if let failure { throw failure }
    }

    /// One entry from the first source that has it to the replacement (a recovery add:
    /// the segment is sealed and its nodes fenced).
    private static func copyEntry(
        _ segment: UInt64, _ entry: Int64, _ repair: ReplicaRepair.Repair, transport: any StorageTransport, timeout: Int64
    ) async -> ReplicationError? {
        var why: [String] = []
        for source in repair.sources(of: entry) {
            let answer = await request(.read(segment: segment, entry: entry, fence: false), to: source, transport: transport, timeout: timeout)
            guard case .success(.read(.ok, let copy?)) = answer, copy.segment == segment, copy.entry == entry else {
                why.append("node \(source): \(answer)")
                continue
            }
            let written = await request(.add(copy, isRecovery: true), to: repair.replacement, transport: transport, timeout: timeout)
            guard case .success(.added(.ok)) = written else {
                return .unavailable("writing entry \(entry) of segment \(segment) to node \(repair.replacement): \(written)")
            }
            return nil
        }
        return .unavailable("no replica could give entry \(entry) of segment \(segment): \(why.joined(separator: "; "))")
    }

    private static func request(
        _ request: StorageProtocol.Request, to node: NodeID, transport: any StorageTransport, timeout: Int64
    ) async -> Result<StorageProtocol.Answer, StorageClientError> {
        await withCheckedContinuation { continuation in
            transport.send(request, to: node, timeoutMilliseconds: timeout) { continuation.resume(returning: $0) }
        }
    }
}

/// Finds segments that still name lost nodes and repairs them (BookKeeper's auditor
/// and replication workers in one). A node is lost once it has been missing from the
/// live set for `graceMilliseconds` (a restart is not a loss), or at once when removed
/// for good. Runs on one node of the cluster at a time (the cluster shell decides which).
public final class ReplicationAuditor: Sendable {
    public struct Configuration: Sendable {
        public var graceMilliseconds: Int64 = 60_000
        public var replicator = SegmentReplicator.Configuration()

        public init() {}
    }

    /// When each missing node was first seen missing, and the nodes removed for good.
    struct Liveness {
        var missingSince: [NodeID: Int64] = [:]
        var removed: Set<NodeID> = []
    }

    public let configuration: Configuration
    let transport: any StorageTransport
    let metadataStore: SegmentMetadataStore
    let logger: Logger
    let liveness = Mutex(Liveness())
    let underReplicated = Gauge(label: "aqueduct_replica_under_replicated_segments")

    public init(configuration: Configuration = .init(), transport: any StorageTransport, metadataStore: SegmentMetadataStore,
                logger: Logger = Logger(label: "aqueduct.replica.auditor")) {
        self.configuration = configuration
        self.transport = transport
        self.metadataStore = metadataStore
        self.logger = logger
    }

    /// `node` left the cluster for good (`cluster remove`): its copies are replaced now.
    public func nodeRemoved(_ node: NodeID) {
        liveness.withLock { _ = $0.removed.insert(node) }
    }

    public struct Report: Sendable, Equatable {
        /// Segments naming a lost node in a fragment with entries, before this pass.
        public var underReplicated: Int
        public var repaired: Int
        /// Segments that could not be repaired now (no replacement, replicas down).
        public var failed: Int
        public var lostNodes: Set<NodeID>

        public init(underReplicated: Int, repaired: Int, failed: Int, lostNodes: Set<NodeID>) {
            self.underReplicated = underReplicated
            self.repaired = repaired
            self.failed = failed
            self.lostNodes = lostNodes
        }
    }

    /// One pass: every segment's metadata read, the lost nodes' copies replaced.
    public func audit(liveNodes: [NodeID], nowMilliseconds: Int64) async throws -> Report {
        let live = Set(liveNodes)
        let stored = try await metadataStore.store.list(prefix: SegmentMetadataStore.prefix)
        var segments: [(UInt64, SegmentMetadata)] = []
        for (key, value) in stored {
            guard let id = UInt64(key.dropFirst(SegmentMetadataStore.prefix.count)),
                  let metadata = try? JSONDecoder().decode(SegmentMetadata.self, from: Data(value.value))
            else { continue }
            segments.append((id, metadata))
        }
        let referenced = Set(segments.flatMap { $0.1.fragments.flatMap(\.ensemble) })
        let lost = liveness.withLock { liveness -> Set<NodeID> in
            for node in referenced.union(liveness.missingSince.keys) {
                if live.contains(node) {
                    liveness.missingSince[node] = nil
                } else if liveness.missingSince[node] == nil {
                    liveness.missingSince[node] = nowMilliseconds
                }
            }
            let expired = liveness.missingSince.filter { nowMilliseconds - $0.value >= configuration.graceMilliseconds }.keys
            return Set(expired).union(liveness.removed.subtracting(live))
        }
        var report = Report(underReplicated: 0, repaired: 0, failed: 0, lostNodes: lost)
        for (id, metadata) in segments
        where ReplicaRepair.isUnderReplicated(fragments: metadata.fragments, sealed: metadata.state == .sealed,
                                              lastEntry: metadata.lastEntry ?? -1, lostNodes: lost)
        {
            report.underReplicated += 1
            do {
                let repairs = try await SegmentReplicator.repair(
                    segment: id, lostNodes: lost, liveNodes: liveNodes, transport: transport, metadataStore: metadataStore,
                    configuration: configuration.replicator, logger: logger)
                if !repairs.isEmpty { report.repaired += 1 }
            } catch {
                report.failed += 1
                logger.warning("cannot re-replicate a segment now", metadata: ["segment": "\(id)", "error": "\(error)"])
            }
        }
        underReplicated.record(report.underReplicated - report.repaired)
        return report
    }
}

/// A storage node's garbage: segments it holds that no metadata names any more (their
/// log deleted them: retention, truncation, a deleted topic). BookKeeper's bookies
/// collect the same way, comparing their ledgers with the metadata's list.
public enum ReplicaGarbage {
    /// Deletes, through `delete`, the segments of `nodeSegments` that have no metadata;
    /// returns them. The node's list is taken **before** the metadata is read: a
    /// segment created meanwhile is then never taken for garbage, since its metadata is
    /// written before its first entry.
    public static func collect(
        nodeSegments: () -> [UInt64], metadataStore: SegmentMetadataStore, delete: ([UInt64]) throws -> Void
    ) async throws -> [UInt64] {
        let held = nodeSegments()
        guard !held.isEmpty else { return [] }
        let named = Set(try await metadataStore.store.list(prefix: SegmentMetadataStore.prefix).compactMap {
            UInt64($0.key.dropFirst(SegmentMetadataStore.prefix.count))
        })
        let garbage = held.filter { !named.contains($0) }
        if !garbage.isEmpty { try delete(garbage) }
        return garbage
    }
}
