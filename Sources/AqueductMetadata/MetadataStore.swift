import Foundation

/// A key's value and the store revisions that created and last modified it (etcd's
/// create_revision and mod_revision).
public struct VersionedValue: Equatable, Sendable {
    public var value: [UInt8]
    /// Revision of the commit that last wrote the key; what compare-and-set compares.
    public var version: UInt64
    /// Revision of the commit that created the key.
    public var createdVersion: UInt64

    public init(value: [UInt8], version: UInt64, createdVersion: UInt64) {
        self.value = value
        self.version = version
        self.createdVersion = createdVersion
    }
}

/// What a write expects to find, checked atomically with the write.
public enum Expectation: Equatable, Sendable {
    /// No condition.
    case any
    /// The key must not exist.
    case absent
    /// The key must exist with exactly this version.
    case version(UInt64)
}

public enum MetadataOperation: Equatable, Sendable {
    case put(key: String, value: [UInt8], expect: Expectation)
    case delete(key: String, expect: Expectation)
    /// A condition on a key that is not written (etcd's compare without a put).
    case check(key: String, expect: Expectation)

    public var key: String {
        switch self {
        case .put(let key, _, _), .delete(let key, _), .check(let key, _): key
        }
    }

    public var expectation: Expectation {
        switch self {
        case .put(_, _, let expect), .delete(_, let expect), .check(_, let expect): expect
        }
    }
}

public struct MetadataEvent: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case put(VersionedValue)
        case delete
    }
    public var key: String
    public var kind: Kind
    public var revision: UInt64

    public init(key: String, kind: Kind, revision: UInt64) {
        self.key = key
        self.kind = kind
        self.revision = revision
    }
}

public enum MetadataError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A compare-and-set condition failed: someone else changed the key first.
    case conflict(key: String, expected: Expectation, actualVersion: UInt64?)
    /// The store was closed.
    case closed
    /// Stored metadata failed its checksum or could not be parsed: nothing was guessed.
    case corrupt(path: String, detail: String)
    /// A key or value over the limits.
    case invalidArgument(String)
    /// A watcher fell too far behind and was cut off; read again, then watch again.
    case watchLagged(prefix: String)
    /// Disk or network failure underneath.
    case io(String)

    public var description: String {
        switch self {
        case .conflict(let key, let expected, let actual):
            "metadata conflict on \(key): expected \(expected), found \(actual.map { "version \($0)" } ?? "no key")"
        case .closed: "metadata store is closed"
        case .corrupt(let path, let detail):
            "metadata at \(path) is corrupt (\(detail)); restore it from a backup or remove the data directory"
        case .invalidArgument(let why): "invalid metadata request: \(why)"
        case .watchLagged(let prefix): "watch on \(prefix) fell behind and was cancelled; read again and re-watch"
        case .io(let why): "metadata I/O failed: \(why)"
        }
    }
}

/// Versioned keys with compare-and-set, atomic multi-key commits and watches: the one
/// interface for cluster state. The embedded store (a durable local file) is the
/// default; cluster mode puts etcd behind the same interface.
public protocol MetadataStore: Sendable {
    func get(_ key: String) async throws -> VersionedValue?
    /// All keys starting with `prefix`, sorted by key.
    func list(prefix: String) async throws -> [(key: String, value: VersionedValue)]
    /// Applies all `operations` atomically if every expectation holds, and returns the
    /// new store revision; throws `MetadataError.conflict` (and changes nothing) if one
    /// does not. Durable when it returns.
    @discardableResult
    func commit(_ operations: [MetadataOperation]) async throws -> UInt64
    /// Changes to keys under `prefix` in commit order: those after revision
    /// `afterRevision`, or with nil those made once the watch is established. A
    /// revision whose history the store no longer has ends the stream with
    /// `watchLagged` (read again, then watch after the revision read).
    func watch(prefix: String, afterRevision: UInt64?) -> AsyncThrowingStream<MetadataEvent, any Error>
    /// The revision of the last commit.
    func currentRevision() async throws -> UInt64
    func close() async throws
}

extension MetadataStore {
    /// Changes to keys under `prefix` made after this call, in commit order.
    public func watch(prefix: String) -> AsyncThrowingStream<MetadataEvent, any Error> {
        watch(prefix: prefix, afterRevision: nil)
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8], expect: Expectation = .any) async throws -> UInt64 {
        try await commit([.put(key: key, value: value, expect: expect)])
    }

    @discardableResult
    public func delete(_ key: String, expect: Expectation = .any) async throws -> UInt64 {
        try await commit([.delete(key: key, expect: expect)])
    }

    /// Decodes the JSON value at `key`, with its version.
    public func getJSON<T: Decodable>(_ type: T.Type, _ key: String) async throws -> (value: T, version: UInt64)? {
        guard let stored = try await get(key) else { return nil }
        do {
            return (try JSONDecoder().decode(T.self, from: Data(stored.value)), stored.version)
        } catch {
            throw MetadataError.corrupt(path: key, detail: "undecodable \(T.self): \(error)")
        }
    }

    /// Encodes `value` as JSON (sorted keys, so equal values give equal bytes).
    public static func encodeJSON<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(value))
    }

    @discardableResult
    public func putJSON<T: Encodable>(_ key: String, _ value: T, expect: Expectation = .any) async throws -> UInt64 {
        try await put(key, Self.encodeJSON(value), expect: expect)
    }
}
