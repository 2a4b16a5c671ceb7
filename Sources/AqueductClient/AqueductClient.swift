import AqueductAPI
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Why a call to the server failed, said so the user knows what to do next.
public enum ClientError: Error, CustomStringConvertible {
    /// The server answered with an error body.
    case server(status: Int, code: String, message: String, hint: String?)
    /// No server answered at the address.
    case unreachable(url: String, underlying: String)
    /// The server answered something that is not the API's JSON.
    case unexpectedResponse(status: Int, body: String)

    public var description: String {
        switch self {
        case .server(_, let code, let message, let hint):
            "error \(code): \(message)" + (hint.map { "\n  hint: \($0)" } ?? "")
        case .unreachable(let url, let underlying):
            "cannot reach the Aqueduct server at \(url) (\(underlying))\n"
                + "  hint: start one with `aqueduct server`, or point --server / AQUEDUCT_SERVER at a running one"
        case .unexpectedResponse(let status, let body):
            "unexpected response (HTTP \(status)): \(body.prefix(300))"
        }
    }

    /// The documented error code, when the server gave one.
    public var code: String? {
        if case .server(_, let code, _, _) = self { return code }
        return nil
    }
}

/// The HTTP API from the client side (the CLI uses it).
public struct AqueductClient: Sendable {
    public let baseURL: String
    /// Largest response body read, in bytes.
    public static let responseBytesMax = 64 << 20
    private let http: HTTPClient

    /// A client that fails at once when nothing listens (the shared client retries a
    /// refused connection until its 90 s connect timeout: a CLI run against a stopped
    /// server would hang). Process-wide, never shut down.
    public static let defaultHTTPClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Sent as `Authorization: Bearer <token>` when the server wants tokens.
    public let token: String?

    /// `token` defaults to `$AQUEDUCT_TOKEN` (what the server gives topology containers).
    public init(baseURL: String, token: String? = ProcessInfo.processInfo.environment["AQUEDUCT_TOKEN"], http: HTTPClient = AqueductClient.defaultHTTPClient) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token.flatMap { $0.isEmpty ? nil : $0 }
        self.http = http
    }

    public func health() async throws -> Bool {
        struct Health: Decodable { var status: String }
        let health: Health = try await call(.GET, "/health")
        return health.status == "ok"
    }

    public func createTopic(_ name: String, partitions: Int, settings: TopicSettings = TopicSettings()) async throws -> TopicDescription {
        try await call(.POST, "/v1/topics", body: CreateTopicRequest(name: name, partitions: partitions, config: settings))
    }

    public func listTopics() async throws -> TopicList {
        try await call(.GET, "/v1/topics")
    }

    public func describeTopic(_ name: String) async throws -> TopicDescription {
        try await call(.GET, "/v1/topics/\(escape(name))")
    }

    public func clusterStatus() async throws -> ClusterStatusJSON {
        try await call(.GET, "/v1/cluster")
    }

    public func drainNode(_ node: Int, undo: Bool = false) async throws -> ClusterStatusJSON {
        try await call(.POST, "/v1/cluster/nodes/\(node)/drain\(undo ? "?undo=true" : "")")
    }

    public func removeNode(_ node: Int) async throws -> ClusterStatusJSON {
        try await call(.POST, "/v1/cluster/nodes/\(node)/remove")
    }

    public func listGroups() async throws -> GroupList {
        try await call(.GET, "/v1/groups")
    }

    public func describeGroup(_ name: String) async throws -> GroupDescription {
        try await call(.GET, "/v1/groups/\(escape(name))")
    }

    public func deleteTopic(_ name: String) async throws {
        let _: Empty = try await call(.DELETE, "/v1/topics/\(escape(name))")
    }

    public func produce(_ topic: String, records: [ProduceRecordJSON], encoding: PayloadEncoding = .utf8) async throws -> ProduceResponse {
        try await call(.POST, "/v1/topics/\(escape(topic))/records", body: ProduceRequest(records: records, encoding: encoding))
    }

    public func fetch(
        _ topic: String, partition: Int, offset: String, maxWaitMilliseconds: Int = 0, maxRecords: Int = 1_000,
        maxBytes: Int = 1 << 20, encoding: PayloadEncoding = .utf8
    ) async throws -> FetchResponse {
        try await call(.GET, "/v1/topics/\(escape(topic))/partitions/\(partition)/records?offset=\(offset)&maxWaitMs=\(maxWaitMilliseconds)&maxRecords=\(maxRecords)&maxBytes=\(maxBytes)&encoding=\(encoding.rawValue)")
    }

    public func submitTopology(_ request: TopologySubmitRequest) async throws -> TopologyStatusJSON {
        try await call(.POST, "/v1/topologies", body: request)
    }

    /// Uploads a program file as `name` into the server's programs directory, in
    /// chunks; `progress` gets the bytes sent so far and the total.
    public func uploadProgram(path: String, name: String, progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) async throws -> ProgramJSON {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ClientError.unexpectedResponse(status: 0, body: "cannot read \(path); check the path of the program to upload")
        }
        let size = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
        let chunks = AsyncStream<ByteBuffer> { continuation in
            var sent = 0
            while let data = try? handle.read(upToCount: 1 << 20), !data.isEmpty {
                sent += data.count
                continuation.yield(ByteBuffer(bytes: data))
                progress(sent, size)
            }
            try? handle.close()
            continuation.finish()
        }
        var request = HTTPClientRequest(url: baseURL + "/v1/programs/\(escape(name))")
        request.method = .PUT
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.body = .stream(chunks, length: .known(Int64(size)))
        return try await send(request)
    }

    public func listPrograms() async throws -> ProgramList {
        try await call(.GET, "/v1/programs")
    }

    public func listTopologies() async throws -> TopologyList {
        try await call(.GET, "/v1/topologies")
    }

    public func topologyStatus(_ name: String) async throws -> TopologyStatusJSON {
        try await call(.GET, "/v1/topologies/\(escape(name))")
    }

    public func killTopology(_ name: String) async throws {
        let _: Empty = try await call(.DELETE, "/v1/topologies/\(escape(name))")
    }

    public func setTopologyActive(_ name: String, _ active: Bool) async throws -> TopologyStatusJSON {
        try await call(.POST, "/v1/topologies/\(escape(name))/\(active ? "activate" : "deactivate")")
    }

    public func updateTopology(_ name: String, parallelism: [String: Int]) async throws -> TopologyStatusJSON {
        try await call(.POST, "/v1/topologies/\(escape(name))/parallelism", body: TopologyUpdateRequest(parallelism: parallelism))
    }

    /// Commits the next offsets to consume of `topic` for a group without members.
    public func commitOffsets(group: String, topic: String, offsets: [Int: Int64]) async throws {
        let body = GroupOffsets(topic: topic, offsets: offsets.sorted { $0.key < $1.key }.map { GroupOffsets.Entry(partition: $0.key, offset: $0.value) })
        let _: GroupOffsets = try await call(.POST, "/v1/groups/\(escape(group))/offsets", body: body)
    }

    /// The group's committed offsets of `topic`, by partition.
    public func committedOffsets(group: String, topic: String) async throws -> [Int: Int64] {
        let answer: GroupOffsets = try await call(.GET, "/v1/groups/\(escape(group))/offsets?topic=\(escape(topic))")
        var offsets: [Int: Int64] = [:]
        for entry in answer.offsets { offsets[entry.partition] = entry.offset }
        return offsets
    }

    public func offsets(_ topic: String, partition: Int) async throws -> OffsetsResponse {
        try await call(.GET, "/v1/topics/\(escape(topic))/partitions/\(partition)/offsets")
    }

    private struct Empty: Decodable {}
    private struct NoBody: Encodable {}

    private func escape(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? segment
    }

    private func call<Response: Decodable>(_ method: HTTPMethod, _ path: String) async throws -> Response {
        try await call(method, path, body: Optional<NoBody>.none)
    }

    private func call<Body: Encodable, Response: Decodable>(_ method: HTTPMethod, _ path: String, body: Body?) async throws -> Response {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body)))
        }
        return try await send(request)
    }

    private func send<Response: Decodable>(_ request: HTTPClientRequest) async throws -> Response {
        var request = request
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(120))
        } catch {
            throw ClientError.unreachable(url: baseURL, underlying: "\(error)")
        }
        let bytes = try await response.body.collect(upTo: Self.responseBytesMax)
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let error = try? JSONDecoder().decode(ErrorBody.self, from: data) {
                throw ClientError.server(status: Int(response.status.code), code: error.error.code, message: error.error.message, hint: error.error.hint)
            }
            throw ClientError.unexpectedResponse(status: Int(response.status.code), body: String(decoding: data, as: UTF8.self))
        }
        if Response.self == Empty.self { return Empty() as! Response }
        do {
            return try JSONDecoder().decode(Response.self, from: data)
        } catch {
            throw ClientError.unexpectedResponse(status: Int(response.status.code), body: String(decoding: data, as: UTF8.self))
        }
    }
}
