/// The metadata key space as a pure value: applying a commit checks its expectations
/// and returns the events it caused. Both the embedded store and its recovery drive
/// this same type, so replay cannot diverge from what was acknowledged.
public struct MetadataState: Sendable {
    public private(set) var entries: [String: VersionedValue] = [:]
    public private(set) var revision: UInt64 = 0

    /// Longest key accepted, in bytes.
    public static let keyBytesMax = 4_096
    /// Largest value accepted, in bytes (etcd's default request limit is 1.5 MiB).
    public static let valueBytesMax = 1 << 20
    /// Most operations in one commit.
    public static let operationsPerCommitMax = 1_024

    public init() {}

    init(entries: [String: VersionedValue], revision: UInt64) {
        self.entries = entries
        self.revision = revision
    }

    /// Checks limits and expectations without changing anything.
    public func validate(_ operations: [MetadataOperation]) throws(MetadataError) {
        guard !operations.isEmpty else { throw .invalidArgument("a commit needs at least one operation") }
        guard operations.count <= Self.operationsPerCommitMax else {
            throw .invalidArgument("\(operations.count) operations in one commit; the limit is \(Self.operationsPerCommitMax)")
        }
        for operation in operations {
            let key = operation.key
            guard !key.isEmpty, key.utf8.count <= Self.keyBytesMax else {
                throw .invalidArgument("key must be 1 to \(Self.keyBytesMax) bytes")
            }
            if case .put(_, let value, _) = operation, value.count > Self.valueBytesMax {
                throw .invalidArgument("value of \(key) is \(value.count) bytes; the limit is \(Self.valueBytesMax)")
            }
            let current = entries[key]
            switch operation.expectation {
            case .any: break
            case .absent:
                if current != nil { throw .conflict(key: key, expected: .absent, actualVersion: current?.version) }
            case .version(let version):
                if current?.version != version {
                    throw .conflict(key: key, expected: .version(version), actualVersion: current?.version)
                }
            }
        }
    }

    /// Applies a validated commit at the next revision; returns the events.
    @discardableResult
    public mutating func apply(_ operations: [MetadataOperation]) throws(MetadataError) -> [MetadataEvent] {
        try validate(operations)
        return applyValidated(operations, revision: revision + 1)
    }

    /// Applies operations that were validated (or read back from the log) at `revision`.
    @discardableResult
    mutating func applyValidated(_ operations: [MetadataOperation], revision newRevision: UInt64) -> [MetadataEvent] {
        precondition(newRevision == revision + 1, "metadata revisions must be dense")
        revision = newRevision
        var events: [MetadataEvent] = []
        for operation in operations {
            switch operation {
            case .put(let key, let value, _):
                let created = entries[key]?.createdVersion ?? newRevision
                let stored = VersionedValue(value: value, version: newRevision, createdVersion: created)
                entries[key] = stored
                events.append(MetadataEvent(key: key, kind: .put(stored), revision: newRevision))
            case .delete(let key, _):
                if entries.removeValue(forKey: key) != nil {
                    events.append(MetadataEvent(key: key, kind: .delete, revision: newRevision))
                }
            case .check:
                break
            }
        }
        return events
    }

    public func list(prefix: String) -> [(key: String, value: VersionedValue)] {
        entries.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}
