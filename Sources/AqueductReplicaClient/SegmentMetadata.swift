import AqueductMetadata
import AqueductReplication
import Foundation

/// What the cluster knows of one replicated segment (BookKeeper's ledger metadata): its
/// quorum shape, its fragments (which ensemble holds which entries), who writes it, and
/// once sealed its last entry. Every change is a compare-and-set on the key's version,
/// so a writer that lost the segment learns it from its next change.
public struct SegmentMetadata: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
        /// Its writer is appending.
        case open
        /// A new owner claimed it and is fencing and recovering it.
        case recovering
        /// Ends at `lastEntry` for good.
        case sealed
    }

    public var ensembleSize: Int
    public var writeQuorumSize: Int
    public var ackQuorumSize: Int
    public var fragments: [Fragment]
    public var state: State
    /// Who writes (or recovers) the segment: an owner's name and epoch, for operators.
    public var owner: String
    /// The last entry, once sealed (-1 for an empty segment).
    public var lastEntry: Int64?
    /// What the segment's user records with it (BookKeeper's custom metadata): the log
    /// keeps the segment's first offset here.
    public var properties: [String: String]?

    public init(shape: QuorumShape, ensemble: [NodeID], owner: String, firstEntry: Int64 = 0) {
        ensembleSize = shape.ensembleSize
        writeQuorumSize = shape.writeQuorumSize
        ackQuorumSize = shape.ackQuorumSize
        fragments = [Fragment(firstEntry: firstEntry, ensemble: ensemble)]
        state = .open
        self.owner = owner
    }

    public var shape: QuorumShape {
        get throws(ReplicationError) {
            do {
                return try QuorumShape(ensemble: ensembleSize, write: writeQuorumSize, ack: ackQuorumSize)
            } catch {
                throw .metadata("segment metadata with an invalid quorum: \(error)")
            }
        }
    }

    /// The ensemble holding `entry` (the last fragment starting at or before it).
    public func ensemble(of entry: Int64) -> [NodeID] {
        (fragments.last { $0.firstEntry <= entry } ?? fragments[0]).ensemble
    }
}

/// Why a replicated operation did not happen.
public enum ReplicationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Another writer took the segment over (a node answered "fenced", or the metadata
    /// moved on): this writer's unconfirmed entries may or may not be in the segment.
    case fenced(segment: UInt64)
    /// The writer is closing or closed: no more appends.
    case closed(segment: UInt64)
    /// More entries or bytes wait for acknowledgement than the writer may hold.
    case backlogFull(entries: Int, bytes: Int)
    /// No metadata names the segment (never created, or deleted).
    case noSuchSegment(UInt64)
    /// The segment's metadata is unreadable, or the store refused a change.
    case metadata(String)
    /// Recovery could not decide the segment's end now (too many nodes unreachable); retry.
    case recoveryFailed(segment: UInt64, String)
    /// No replica of the entry answered it.
    case unavailable(String)
    /// The entry is past the segment's end or past what is confirmed.
    case noSuchEntry(segment: UInt64, entry: Int64)

    public var description: String {
        switch self {
        case .fenced(let segment): "segment \(segment) was taken over by another writer"
        case .closed(let segment): "segment \(segment) is closed for appends"
        case .backlogFull(let entries, let bytes): "the writer holds \(entries) entries (\(bytes) bytes) not yet acknowledged; retry when they are"
        case .noSuchSegment(let segment): "segment \(segment) does not exist"
        case .metadata(let why): "segment metadata: \(why)"
        case .recoveryFailed(let segment, let why): "recovery of segment \(segment) failed (\(why)); it is retried when more nodes answer"
        case .unavailable(let why): "no replica answered: \(why)"
        case .noSuchEntry(let segment, let entry): "entry \(entry) of segment \(segment) does not exist or is not confirmed yet"
        }
    }
}

/// Segment metadata at `replication/segments/<id>` in a MetadataStore (etcd in cluster
/// mode), as JSON, with its version for compare-and-set.
public struct SegmentMetadataStore: Sendable {
    public let store: any MetadataStore
    public static let prefix = "replication/segments/"

    public init(_ store: any MetadataStore) {
        self.store = store
    }

    public static func key(_ segment: UInt64) -> String {
        let digits = String(segment)
        return prefix + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Creates the segment's metadata; fails when it exists.
    public func create(_ segment: UInt64, _ metadata: SegmentMetadata) async throws(ReplicationError) -> UInt64 {
        try await commit(segment, metadata, expect: .absent)
    }

    public func load(_ segment: UInt64) async throws(ReplicationError) -> (metadata: SegmentMetadata, version: UInt64) {
        do {
            guard let found = try await store.getJSON(SegmentMetadata.self, Self.key(segment)) else {
                throw ReplicationError.noSuchSegment(segment)
            }
            return (found.value, found.version)
        } catch let error as ReplicationError {
            throw error
        } catch {
            throw .metadata("reading segment \(segment): \(error)")
        }
    }

    /// Removes the segment's metadata (its entries are then garbage on the nodes).
    public func delete(_ segment: UInt64) async throws(ReplicationError) {
        do {
            try await store.delete(Self.key(segment))
        } catch {
            throw .metadata("deleting segment \(segment): \(error)")
        }
    }

    /// Replaces the metadata if its version is still `version`; returns the new version.
    /// A conflict is `ReplicationError.fenced` (someone else changed the segment).
    public func replace(_ segment: UInt64, _ metadata: SegmentMetadata, version: UInt64) async throws(ReplicationError) -> UInt64 {
        try await commit(segment, metadata, expect: .version(version))
    }

    private func commit(_ segment: UInt64, _ metadata: SegmentMetadata, expect: Expectation) async throws(ReplicationError) -> UInt64 {
        do {
            let bytes = try EmbeddedMetadataStore.encodeJSON(metadata)
            return try await store.put(Self.key(segment), bytes, expect: expect)
        } catch MetadataError.conflict {
            throw .fenced(segment: segment)
        } catch {
            throw .metadata("writing segment \(segment): \(error)")
        }
    }
}
