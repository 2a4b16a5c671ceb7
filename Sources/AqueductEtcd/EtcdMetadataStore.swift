import AqueductMetadata
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// The cluster's metadata in etcd (3.4 or later), behind the same `MetadataStore`
/// interface as the embedded store, over etcd's v3 JSON gateway: range for reads,
/// txn for atomic compare-and-set commits, watch (a streamed POST) for changes, and
/// leases for liveness. Our versions are etcd's revisions (a key's mod_revision), so
/// a compare-and-set is a txn comparing it.
///
/// Every key lives under `namespace` (default `/aqueduct/`), so one etcd can hold
/// several clusters, and tests can share one etcd.
///
/// etcd unreachable: calls fail with `MetadataError.io` after `requestTimeoutMilliseconds`
/// (callers refuse metadata changes with that error and retry); watches reconnect on
/// their own and resume after the last revision they delivered.
public final class EtcdMetadataStore: MetadataStore {
    public struct Configuration: Sendable {
        /// `http://host:port` of an etcd client URL.
        public var endpoint: String
        public var namespace = "/aqueduct/"
        public var requestTimeoutMilliseconds: Int64 = 5_000
        /// One answer's bytes (a range over many keys); a larger one is an error.
        public var answerBytesMax = 64 << 20
        /// Events a watcher may have unread before it is cut off with `watchLagged`.
        public var watchEventsBufferMax = 4_096
        /// Wait before a watch that lost its connection tries again.
        public var watchRetryMilliseconds: Int64 = 500

        public init(endpoint: String) {
            self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        }
    }

    public let configuration: Configuration
    private let client: HTTPClient
    private let logger: Logger

    public init(configuration: Configuration, client: HTTPClient = .shared, logger: Logger = Logger(label: "aqueduct.etcd")) {
        self.configuration = configuration
        self.client = client
        self.logger = logger
    }

    /// Parses `etcd://host:port` (the `--cluster` flag) or `http://host:port`.
    public static func endpoint(fromClusterURL url: String) -> String? {
        for scheme in ["etcd://", "http://"] where url.hasPrefix(scheme) {
            let rest = url.dropFirst(scheme.count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
            return rest.isEmpty ? nil : "http://" + rest
        }
        return nil
    }

    // MARK: - MetadataStore

    public func get(_ key: String) async throws -> VersionedValue? {
        let answer = try await call("/v3/kv/range", EtcdWire.RangeRequest(key: EtcdWire.base64(full(key))), as: EtcdWire.RangeResponse.self)
        return try answer.kvs?.first.map { try versioned($0) }
    }

    public func list(prefix: String) async throws -> [(key: String, value: VersionedValue)] {
        let start = Array(full(prefix).utf8)
        let answer = try await call(
            "/v3/kv/range", EtcdWire.RangeRequest(key: EtcdWire.base64(start), range_end: EtcdWire.base64(EtcdWire.prefixEnd(start))),
            as: EtcdWire.RangeResponse.self)
        return try (answer.kvs ?? []).map { (try local($0.key), try versioned($0)) }
    }

    @discardableResult
    public func commit(_ operations: [MetadataOperation]) async throws -> UInt64 {
        try await commit(operations, lease: nil)
    }

    /// Commits with every put attached to `lease`: the keys go when the lease expires
    /// (a node's liveness, an owner's claim).
    @discardableResult
    public func commit(_ operations: [MetadataOperation], lease: Int64?) async throws -> UInt64 {
        var compares: [EtcdWire.Compare] = []
        var writes: [EtcdWire.RequestOp] = []
        var checked: [(key: String, expect: Expectation)] = []
        for operation in operations {
            let key = EtcdWire.base64(full(operation.key))
            switch operation.expectation {
            case .any: break
            case .absent: compares.append(EtcdWire.Compare(key: key, target: "CREATE", create_revision: "0"))
            case .version(let version): compares.append(EtcdWire.Compare(key: key, target: "MOD", mod_revision: String(version)))
            }
            if operation.expectation != .any { checked.append((operation.key, operation.expectation)) }
            switch operation {
            case .put(_, let value, _):
                writes.append(EtcdWire.RequestOp(request_put: EtcdWire.PutRequest(key: key, value: EtcdWire.base64(value), lease: lease.map(String.init))))
            case .delete:
                writes.append(EtcdWire.RequestOp(request_delete_range: EtcdWire.DeleteRangeRequest(key: key)))
            case .check:
                break
            }
        }
        // When a compare fails, the failure branch reads the compared keys, so the
        // conflict names the key and what was found.
        let reads = checked.map { EtcdWire.RequestOp(request_range: EtcdWire.RangeRequest(key: EtcdWire.base64(full($0.key)))) }
        let answer = try await call("/v3/kv/txn", EtcdWire.TxnRequest(compare: compares, success: writes, failure: reads), as: EtcdWire.TxnResponse.self)
        if answer.succeeded == true || compares.isEmpty {
            return try revision(answer.header)
        }
        for (index, check) in checked.enumerated() {
            let found = try answer.responses?[index].response_range?.kvs?.first.map { try versioned($0) }
            let holds = switch check.expect {
            case .any: true
            case .absent: found == nil
            case .version(let version): found?.version == version
            }
            if !holds { throw MetadataError.conflict(key: check.key, expected: check.expect, actualVersion: found?.version) }
        }
        throw MetadataError.conflict(key: checked.first?.key ?? "", expected: checked.first?.expect ?? .any, actualVersion: nil)
    }

    public func watch(prefix: String, afterRevision: UInt64?) -> AsyncThrowingStream<MetadataEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<MetadataEvent, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(configuration.watchEventsBufferMax))
        let task = Task { await self.runWatch(prefix: prefix, afterRevision: afterRevision, continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    public func currentRevision() async throws -> UInt64 {
        let answer = try await call("/v3/kv/range", EtcdWire.RangeRequest(key: EtcdWire.base64(full("")), count_only: true), as: EtcdWire.RangeResponse.self)
        return try revision(answer.header)
    }

    /// The HTTP client is shared; nothing to release.
    public func close() async throws {}

    // MARK: - Leases

    /// Grants a lease that expires `ttlSeconds` after its last keep-alive.
    public func grantLease(ttlSeconds: Int) async throws -> Int64 {
        let answer = try await call("/v3/lease/grant", EtcdWire.LeaseGrantRequest(TTL: String(ttlSeconds)), as: EtcdWire.LeaseGrantResponse.self)
        guard let id = answer.ID.flatMap(Int64.init) else { throw MetadataError.io("etcd granted no lease: \(answer.error ?? "no id")") }
        return id
    }

    /// Renews `lease`; returns its new time to live in seconds. Throws
    /// `EtcdLeaseExpired` when etcd no longer has it (it expired: whatever it held is gone).
    @discardableResult
    public func keepAlive(_ lease: Int64) async throws -> Int {
        let answer = try await call("/v3/lease/keepalive", EtcdWire.LeaseRequest(ID: String(lease)), as: EtcdWire.LeaseKeepAliveResponse.self)
        guard let ttl = answer.result?.TTL.flatMap(Int.init), ttl > 0 else { throw EtcdLeaseExpired(lease: lease) }
        return ttl
    }

    /// Ends `lease` now; its keys are deleted.
    public func revokeLease(_ lease: Int64) async throws {
        _ = try await call("/v3/lease/revoke", EtcdWire.LeaseRequest(ID: String(lease)), as: EtcdWire.RangeResponse.self)
    }

    // MARK: - Internals

    private func full(_ key: String) -> String { configuration.namespace + key }

    private func local(_ base64Key: String) throws -> String {
        guard let bytes = EtcdWire.decodeBase64(base64Key), let key = String(bytes: bytes, encoding: .utf8),
              key.hasPrefix(configuration.namespace)
        else { throw MetadataError.corrupt(path: base64Key, detail: "etcd returned a key outside \(configuration.namespace)") }
        return String(key.dropFirst(configuration.namespace.count))
    }

    private func versioned(_ kv: EtcdWire.KeyValue) throws -> VersionedValue {
        guard let value = EtcdWire.decodeBase64(kv.value), let version = kv.mod_revision.flatMap(UInt64.init),
              let created = kv.create_revision.flatMap(UInt64.init)
        else { throw MetadataError.corrupt(path: kv.key, detail: "etcd returned a key without revisions or with a bad value") }
        return VersionedValue(value: value, version: version, createdVersion: created)
    }

    private func revision(_ header: EtcdWire.Header?) throws -> UInt64 {
        guard let revision = header?.revision.flatMap(UInt64.init) else { throw MetadataError.io("etcd answered without a revision") }
        return revision
    }

    private func request(_ path: String, _ body: some Encodable) throws -> HTTPClientRequest {
        var request = HTTPClientRequest(url: configuration.endpoint + path)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body)))
        return request
    }

    private func call<Answer: Decodable>(_ path: String, _ body: some Encodable, as: Answer.Type) async throws -> Answer {
        let bytes: ByteBuffer
        let status: HTTPResponseStatus
        do {
            let response = try await client.execute(try request(path, body), timeout: .milliseconds(configuration.requestTimeoutMilliseconds))
            status = response.status
            bytes = try await response.body.collect(upTo: configuration.answerBytesMax)
        } catch {
            throw MetadataError.io("etcd at \(configuration.endpoint) did not answer \(path): \(error); is etcd running?")
        }
        let data = Data(bytes.readableBytesView)
        guard status == .ok else {
            let why = (try? JSONDecoder().decode(EtcdWire.ErrorBody.self, from: data)).flatMap { $0.message ?? $0.error } ?? "HTTP \(status.code)"
            if status == .notFound, path.hasPrefix("/v3/lease/") { throw EtcdLeaseExpired(lease: 0) }
            throw MetadataError.io("etcd refused \(path): \(why)")
        }
        do {
            return try JSONDecoder().decode(Answer.self, from: data)
        } catch {
            throw MetadataError.io("etcd's answer to \(path) could not be read: \(error)")
        }
    }

    /// Streams events until cancelled, reconnecting after the last delivered revision.
    private func runWatch(prefix: String, afterRevision: UInt64?, _ continuation: AsyncThrowingStream<MetadataEvent, any Error>.Continuation) async {
        let start = Array(full(prefix).utf8)
        var next: UInt64? = afterRevision.map { $0 + 1 }
        while !Task.isCancelled {
            do {
                let create = EtcdWire.WatchCreate(create_request: .init(
                    key: EtcdWire.base64(start), range_end: EtcdWire.base64(EtcdWire.prefixEnd(start)), start_revision: next.map(String.init)))
                let response = try await client.execute(try request("/v3/watch", create), deadline: .distantFuture)
                var pending: [UInt8] = []
                for try await chunk in response.body {
                    pending.append(contentsOf: chunk.readableBytesView)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = Data(pending[..<newline])
                        pending.removeSubrange(...newline)
                        let message = try JSONDecoder().decode(EtcdWire.WatchMessage.self, from: line)
                        if let error = message.error {
                            throw MetadataError.io("etcd watch: \(error.message ?? error.error ?? "error")")
                        }
                        guard let result = message.result else { continue }
                        if result.canceled == true {
                            if result.compact_revision != nil {
                                // History before our position is gone: the caller reads again.
                                continuation.finish(throwing: MetadataError.watchLagged(prefix: prefix))
                                return
                            }
                            throw MetadataError.io("etcd cancelled the watch: \(result.cancel_reason ?? "no reason")")
                        }
                        if result.created == true, next == nil, let revision = result.header?.revision.flatMap(UInt64.init) {
                            next = revision + 1
                        }
                        for event in result.events ?? [] {
                            let revision = event.kv.mod_revision.flatMap(UInt64.init) ?? 0
                            let kind: MetadataEvent.Kind = event.type == "DELETE" ? .delete : .put(try versioned(event.kv))
                            let delivered = MetadataEvent(key: try local(event.kv.key), kind: kind, revision: revision)
                            if case .dropped = continuation.yield(delivered) {
                                continuation.finish(throwing: MetadataError.watchLagged(prefix: prefix))
                                return
                            }
                            next = revision + 1
                        }
                    }
                }
            } catch let error as MetadataError where error == .watchLagged(prefix: prefix) {
                continuation.finish(throwing: error)
                return
            } catch {
                if Task.isCancelled { break }
                logger.debug("etcd watch lost; reconnecting", metadata: ["prefix": "\(prefix)", "error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(configuration.watchRetryMilliseconds))
        }
        continuation.finish()
    }
}

/// etcd no longer has the lease: it expired (or was revoked), and its keys are gone.
public struct EtcdLeaseExpired: Error, Sendable, CustomStringConvertible {
    public var lease: Int64
    public var description: String { "etcd lease \(lease) has expired" }
}
