import AqueductAPI
import AqueductGroups
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductRecords
import Foundation
import Hummingbird
import NIOCore

/// A `BrokerError` as an HTTP response: status from its code, JSON body with code,
/// message and hint.
struct APIError: HTTPResponseError {
    let error: BrokerError

    init(_ error: BrokerError) { self.error = error }

    var status: HTTPResponse.Status {
        switch error.code {
        case .topicNotFound, .partitionNotFound, .groupNotFound: .notFound
        case .topicExists: .conflict
        case .recordTooLarge: .contentTooLarge
        case .offsetOutOfRange: .rangeNotSatisfiable
        case .invalidTopicName, .invalidPartitions, .invalidConfig, .invalidRecord, .invalidRequest, .invalidReplicationFactor,
            .invalidReplicaAssignment: .badRequest
        case .notWritable, .unavailable: .serviceUnavailable
        case .corruptData, .storageError, .internalError: .internalServerError
        case .unauthorized: .unauthorized
        case .forbidden, .programNotAllowed: .forbidden
        case .limitReached: HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = ErrorBody(error: .init(code: error.code.rawValue, message: error.message, hint: error.hint))
        return try HTTPAPI.json(body, status: status)
    }
}

/// Bounds on what HTTP clients make the server hold (`http.*` settings).
public struct HTTPLimits: Sendable {
    /// Largest JSON request body, in bytes.
    public var requestBytesMax = 16 << 20
    /// Bytes of JSON bodies being read at once, over all requests; more wait their turn.
    /// Decoding holds about five times a body's size (text, records, the batch).
    public var bodyBytesInFlightMax = 64 << 20
    /// Open connections; more wait in the listen backlog until one closes.
    public var connectionsMax = 1_024
    /// Open connections from one address; more are closed at once.
    public var connectionsPerAddressMax = 256
    /// A connection idle this long is closed, in milliseconds (longer than the longest
    /// long poll, 60 s).
    public var idleTimeoutMilliseconds = 120_000

    public init() {}
}

/// The budget of request bodies being read.
public final class BodyBudget: Sendable {
    let pool: WeightedSemaphore
    let requestBytesMax: Int

    init(_ limits: HTTPLimits) {
        pool = WeightedSemaphore(capacity: max(limits.bodyBytesInFlightMax, limits.requestBytesMax))
        requestBytesMax = limits.requestBytesMax
    }

    func tooLarge() -> BrokerError {
        BrokerError(.recordTooLarge, "the request body exceeds \(requestBytesMax) bytes (http.requestBytesMax)", hint: "send fewer records per request")
    }
}

/// The HTTP/JSON API: topics, produce, fetch with long-poll, health and metrics.
/// Routes are listed in docs/HTTP-API.md.
public enum HTTPAPI {
    /// Longest a fetch may wait for new records, in milliseconds.
    public static let fetchWaitMillisecondsMax = 60_000
    /// Most bytes of batches one fetch reads.
    public static let fetchBytesMax = 16 << 20
    /// Most records one fetch returns.
    public static let fetchRecordsMax = 10_000

    public static func router(
        broker: Broker, groups: (any GroupDirectory)? = nil, topologies: (any TopologyDirectory)? = nil, cluster: (any ClusterDirectory)? = nil,
        access: HTTPAccess = HTTPAccess(),
        limits: HTTPLimits = HTTPLimits(), metricsText: @escaping @Sendable () -> String
    ) -> Router<BasicRequestContext> {
        let bodies = BodyBudget(limits)
        let router = Router()
        router.middlewares.add(ErrorTranslation())
        router.middlewares.add(AccessControl(access: access))
        let forwarder = Forwarder(bodies: bodies)
        if let cluster { router.middlewares.add(ClusterForwarding(cluster: cluster, forwarder: forwarder)) }

        router.get("/health") { _, _ in
            try json(["status": "ok"])
        }
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metricsText())))
        }

        router.get("/v1/topics") { _, _ in
            var entries: [TopicList.Entry] = []
            for name in broker.topicNames() {
                guard let description = try? broker.describeTopic(name) else { continue }
                entries.append(.init(name: name, partitions: description.partitions.count, endOffsets: description.partitions.map(\.endOffset)))
            }
            return try json(TopicList(topics: entries))
        }
        router.post("/v1/topics") { request, context in
            let body: CreateTopicRequest = try await decodeBody(request, context: context, bodies: bodies)
            let created = try await broker.createTopic(body.name, partitions: body.partitions ?? 1, settings: body.config ?? TopicSettings())
            return try json(created, status: .created)
        }
        router.get("/v1/topics/:topic") { _, context in
            try json(try broker.describeTopic(try topicParameter(context)))
        }
        router.delete("/v1/topics/:topic") { _, context in
            try await broker.deleteTopic(try topicParameter(context))
            return Response(status: .noContent)
        }

        router.post("/v1/topics/:topic/records") { request, context in
            try await produce(broker: broker, request: request, context: context, partition: nil, bodies: bodies,
                              cluster: Forwarder.wasForwarded(request) ? nil : cluster.map { ($0, forwarder) })
        }
        router.post("/v1/topics/:topic/partitions/:partition/records") { request, context in
            try await produce(broker: broker, request: request, context: context, partition: try partitionParameter(context), bodies: bodies)
        }
        router.get("/v1/topics/:topic/partitions/:partition/records") { request, context in
            try await fetch(broker: broker, request: request, context: context)
        }
        router.get("/v1/topics/:topic/partitions/:partition/offsets") { _, context in
            let partition = try partitionParameter(context)
            let offsets = try broker.offsets(topic: try topicParameter(context), partition: partition)
            return try json(OffsetsResponse(partition: partition, startOffset: offsets.start, endOffset: offsets.end))
        }

        router.get("/v1/cluster") { _, _ in
            if let cluster { return try json(try await cluster.status()) }
            let partitions = broker.topicNames().flatMap { topic in
                (0..<((try? broker.partitionCount(topic)) ?? 0)).map { ClusterStatusJSON.Partition(topic: topic, partition: $0, owner: 0) }
            }
            return try json(ClusterStatusJSON(
                mode: "single", nodeID: 0, nodes: [.init(id: 0, storage: nil, kafka: nil, http: nil, live: true)], partitions: partitions,
                underReplicatedSegments: 0))
        }
        router.post("/v1/cluster/nodes/:node/drain") { request, context in
            guard let cluster else { throw BrokerError(.invalidRequest, "this server is one node, not a cluster", hint: "start nodes with --cluster") }
            guard let node = context.parameters.get("node").flatMap(Int.init) else { throw BrokerError(.invalidRequest, "a node id is a number") }
            let undo = request.uri.queryParameters.get("undo") == "true"
            try await cluster.setDraining(node, !undo)
            return try json(try await cluster.status())
        }
        router.post("/v1/cluster/nodes/:node/remove") { _, context in
            guard let cluster else { throw BrokerError(.invalidRequest, "this server is one node, not a cluster", hint: "start nodes with --cluster") }
            guard let node = context.parameters.get("node").flatMap(Int.init) else { throw BrokerError(.invalidRequest, "a node id is a number") }
            try await cluster.remove(node)
            return try json(try await cluster.status())
        }
        router.get("/v1/groups") { request, _ in
            var summaries = groups?.groupSummaries() ?? []
            // Cluster mode: each node knows the groups it coordinates; ask the others.
            if let cluster, !Forwarder.wasForwarded(request) {
                summaries += try await forwarder.gather(GroupList.self, path: "/v1/groups", what: "groups", request: request, from: cluster).flatMap(\.groups)
                summaries.sort { $0.name < $1.name }
            }
            return try json(GroupList(groups: summaries))
        }
        router.get("/v1/groups/:group") { _, context in
            let name = context.parameters.get("group") ?? ""
            guard let description = groups?.describeGroup(name) else {
                throw BrokerError(.groupNotFound, "consumer group '\(name)' does not exist (no members, no committed offsets)",
                    hint: "list the groups with `aqueduct group list`")
            }
            return try json(description)
        }
        @Sendable func master() throws(BrokerError) -> any TopologyDirectory {
            guard let topologies else { throw BrokerError(.unavailable, "topologies are not enabled on this server") }
            return topologies
        }
        router.post("/v1/topologies") { request, context in
            let body: TopologySubmitRequest = try await decodeBody(request, context: context, bodies: bodies)
            return try json(try await master().submit(body), status: .created)
        }
        router.get("/v1/topologies") { request, _ in
            var listed = topologies?.list() ?? []
            // Cluster mode: each node reports the topologies it runs; ask the others.
            if let cluster, !Forwarder.wasForwarded(request) {
                listed += try await forwarder.gather(TopologyList.self, path: "/v1/topologies", what: "topologies", request: request, from: cluster)
                    .flatMap(\.topologies)
            }
            return try json(TopologyList(topologies: TopologyList.merged(listed)))
        }
        router.get("/v1/topologies/:name") { _, context in
            try json(try master().status(context.parameters.get("name") ?? ""))
        }
        router.delete("/v1/topologies/:name") { _, context in
            try master().kill(context.parameters.get("name") ?? "")
            return Response(status: .noContent)
        }
        router.post("/v1/topologies/:name/activate") { _, context in
            let name = context.parameters.get("name") ?? ""
            try master().setActive(name, true)
            return try json(try master().status(name))
        }
        router.post("/v1/topologies/:name/deactivate") { _, context in
            let name = context.parameters.get("name") ?? ""
            try master().setActive(name, false)
            return try json(try master().status(name))
        }
        router.post("/v1/topologies/:name/parallelism") { request, context in
            let body: TopologyUpdateRequest = try await decodeBody(request, context: context, bodies: bodies)
            return try json(try await master().update(context.parameters.get("name") ?? "", parallelism: body.parallelism))
        }
        router.get("/v1/programs") { _, _ in
            try json(ProgramList(programs: try master().listPrograms()))
        }
        router.get("/v1/programs/:program") { _, context in
            try downloadProgram(try master(), name: context.parameters.get("program") ?? "")
        }
        router.put("/v1/programs/:program") { request, context in
            try await uploadProgram(try master(), name: context.parameters.get("program") ?? "", request: request)
        }
        router.post("/v1/groups/:group/offsets") { request, context in
            let name = context.parameters.get("group") ?? ""
            guard let groups else { throw BrokerError(.unavailable, "consumer groups are not enabled on this server") }
            let body: GroupOffsets = try await decodeBody(request, context: context, bodies: bodies)
            var offsets: [Int: Int64] = [:]
            for entry in body.offsets { offsets[entry.partition] = entry.offset }
            try await groups.commitOffsets(group: name, topic: body.topic, offsets: offsets)
            return try json(body)
        }
        router.get("/v1/groups/:group/offsets") { request, context in
            let name = context.parameters.get("group") ?? ""
            guard let topic = request.uri.queryParameters["topic"].map(String.init), !topic.isEmpty else {
                throw BrokerError(.invalidRequest, "name the topic: /v1/groups/\(name)/offsets?topic=<topic>")
            }
            let committed = groups?.committedOffsets(group: name, topic: topic) ?? [:]
            return try json(GroupOffsets(topic: topic, offsets: committed.sorted { $0.key < $1.key }.map { GroupOffsets.Entry(partition: $0.key, offset: $0.value) }))
        }
        return router
    }

    /// Streams a program's bytes (cluster nodes copy uploaded programs from each other).
    static func downloadProgram(_ master: any TopologyDirectory, name: String) throws -> Response {
        try TopologyNames.validate(name, what: "program")
        let path = master.programsDirectory + "/" + name
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int else {
            throw BrokerError(.invalidRequest, "no program named \(name) on this node", hint: "list programs with `aqueduct topology programs`")
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        let body = ResponseBody(contentLength: size) { writer in
            guard let handle = FileHandle(forReadingAtPath: path) else { throw BrokerError(.storageError, "cannot read the program \(name)") }
            defer { try? handle.close() }
            while true {
                let chunk = try handle.read(upToCount: programChunkBytes) ?? Data()
                if chunk.isEmpty { break }
                try await writer.write(ByteBuffer(bytes: chunk))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// Bytes read from a program file per write when serving it.
    public static let programChunkBytes = 1 << 20

    /// Streams an uploaded program into the programs directory (never all in memory),
    /// up to the configured size, then installs it under `name`.
    static func uploadProgram(_ master: any TopologyDirectory, name: String, request: Request) async throws -> Response {
        try TopologyNames.validate(name, what: "program")
        let temporary = master.programsDirectory + "/.upload-" + UUID().uuidString
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw BrokerError(.storageError, "cannot write into the programs directory \(master.programsDirectory)")
        }
        var written = 0
        do {
            defer { try? handle.close() }
            for try await chunk in request.body {
                written += chunk.readableBytes
                guard written <= master.programBytesMax else {
                    throw BrokerError(.recordTooLarge, "the program is larger than \(master.programBytesMax) bytes (topologies.programBytesMax)",
                        hint: "build it in release mode, or raise topologies.programBytesMax")
                }
                try handle.write(contentsOf: Data(chunk.readableBytesView))
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        guard written > 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw BrokerError(.invalidRequest, "the upload is empty; send the program's bytes as the request body")
        }
        do {
            return try json(try await master.installProgram(name: name, uploadedFile: temporary), status: .created)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    static func produce(
        broker: Broker, request: Request, context: BasicRequestContext, partition: Int?, bodies: BodyBudget,
        cluster: (directory: any ClusterDirectory, forwarder: Forwarder)? = nil
    ) async throws -> Response {
        let topic = try topicParameter(context)
        let body: ProduceRequest = try await decodeBody(request, context: context, bodies: bodies)
        if let cluster, partition == nil {
            return try await produceAcrossNodes(broker: broker, topic: topic, body: body, headers: request.headers, cluster: cluster)
        }
        let encoding = body.encoding ?? .utf8
        var records: [ProduceRecord] = []
        records.reserveCapacity(body.records.count)
        for (index, record) in body.records.enumerated() {
            if let partition, let own = record.partition, own != partition {
                throw BrokerError(.invalidRequest, "record \(index) names partition \(own) but the URL names \(partition)")
            }
            records.append(try produceRecord(record, index: index, encoding: encoding, partition: partition ?? record.partition))
        }
        let produced = try await broker.produce(topic: topic, records: records)
        return try json(ProduceResponse(offsets: produced))
    }

    /// A record of a produce request, its key, value and headers decoded; `index` names
    /// it in errors.
    static func produceRecord(_ record: ProduceRecordJSON, index: Int, encoding: PayloadEncoding, partition: Int?) throws -> ProduceRecord {
        var headers: [RecordHeader] = []
        for header in record.headers ?? [] {
            headers.append(RecordHeader(key: header.key, value: try encoding.decode(header.value, field: "records[\(index)].headers.\(header.key)")))
        }
        return ProduceRecord(
            key: try encoding.decode(record.key, field: "records[\(index)].key"),
            value: try encoding.decode(record.value, field: "records[\(index)].value"),
            headers: headers, timestamp: record.timestamp, partition: partition)
    }

    /// Cluster mode: records for partitions other nodes write are sent on to them, one
    /// request per partition, the rest appended here; offsets come back in request
    /// order. Records without key or partition go to a partition this node writes
    /// when it writes one. Partitions succeed or fail on their own (as in Kafka): an
    /// error names the first that failed; others may have been appended.
    static func produceAcrossNodes(
        broker: Broker, topic: String, body: ProduceRequest, headers: HTTPFields, cluster: (directory: any ClusterDirectory, forwarder: Forwarder)
    ) async throws -> Response {
        let partitions = try broker.partitionCount(topic)
        let encoding = body.encoding ?? .utf8
        let local = (0..<partitions).filter { cluster.directory.httpAddress(topic: topic, partition: $0) == nil }
        let unkeyed = local.isEmpty ? Int.random(in: 0..<partitions) : local[Int.random(in: 0..<local.count)]
        var byPartition: [Int: [Int]] = [:]
        for (index, record) in body.records.enumerated() {
            let target: Int
            if let explicit = record.partition {
                guard explicit >= 0, explicit < partitions else {
                    throw BrokerError(.partitionNotFound, "topic '\(topic)' has partitions 0 to \(partitions - 1), not \(explicit)")
                }
                target = explicit
            } else if let key = try encoding.decode(record.key, field: "records[\(index)].key") {
                target = Partitioner.partition(forKey: key, partitions: partitions)
            } else {
                target = unkeyed
            }
            byPartition[target, default: []].append(index)
        }
        var produced = [ProducedRecord?](repeating: nil, count: body.records.count)
        for (target, indexes) in byPartition.sorted(by: { $0.key < $1.key }) {
            var part = ProduceRequest(records: indexes.map { body.records[$0] }, encoding: body.encoding)
            for index in part.records.indices { part.records[index].partition = nil }
            let offsets: [ProducedRecord]
            let path = "/v1/topics/\(topic.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? topic)/partitions/\(target)/records"
            if let address = cluster.directory.httpAddress(topic: topic, partition: target) {
                var fields = headers
                fields[.contentType] = "application/json"
                let answer = try await cluster.forwarder.send(
                    method: "POST", pathAndQuery: path, headers: fields, body: ByteBuffer(bytes: try JSONEncoder().encode(part)), to: address)
                guard answer.status / 100 == 2 else {
                    var fields = HTTPFields()
                    if let type = answer.contentType { fields[.contentType] = type }
                    return Response(status: .init(code: answer.status), headers: fields, body: ResponseBody(byteBuffer: answer.body))
                }
                offsets = try JSONDecoder().decode(ProduceResponse.self, from: Data(answer.body.readableBytesView)).offsets
            } else {
                var records: [ProduceRecord] = []
                for (index, record) in zip(indexes, part.records) {
                    records.append(try produceRecord(record, index: index, encoding: encoding, partition: target))
                }
                offsets = try await broker.produce(topic: topic, records: records)
            }
            guard offsets.count == indexes.count else { throw BrokerError(.unavailable, "partition \(target) answered \(offsets.count) offsets for \(indexes.count) records") }
            for (index, offset) in zip(indexes, offsets) { produced[index] = offset }
        }
        return try json(ProduceResponse(offsets: produced.compactMap { $0 }))
    }

    static func fetch(broker: Broker, request: Request, context: BasicRequestContext) async throws -> Response {
        let topic = try topicParameter(context)
        let partition = try partitionParameter(context)
        let query = request.uri.queryParameters
        let encoding = try query["encoding"].map { text throws(BrokerError) -> PayloadEncoding in
            guard let encoding = PayloadEncoding(rawValue: String(text)) else {
                throw BrokerError(.invalidRequest, "encoding must be utf8 or base64, not '\(text)'")
            }
            return encoding
        } ?? .utf8
        let bounds = try broker.offsets(topic: topic, partition: partition)
        let offset: Int64
        switch query["offset"].map(String.init) {
        case nil, "earliest", "beginning": offset = bounds.start
        case "latest", "end": offset = bounds.end
        case let text?:
            guard let number = Int64(text) else {
                throw BrokerError(.invalidRequest, "offset must be a number, 'earliest' or 'latest', not '\(text)'")
            }
            offset = number
        }
        let maxBytes = try integer(query, "maxBytes", default: 1 << 20, range: 1...fetchBytesMax)
        let maxWait = try integer(query, "maxWaitMs", default: 0, range: 0...fetchWaitMillisecondsMax)
        let maxRecords = try integer(query, "maxRecords", default: 1_000, range: 1...fetchRecordsMax)
        let read = try await broker.fetch(topic: topic, partition: partition, offset: offset, maxBytes: maxBytes, maxWaitMilliseconds: maxWait)
        var records: [FetchedRecordJSON] = []
        var next = offset
        decoding: for batch in read.batches {
            let decoded: [Record]
            do { decoded = try RecordBatch.records(of: batch) } catch {
                if case .compressedRecords = error {
                    throw BrokerError(.unavailable, "records at offset \(next): \(error)",
                        hint: "install the library on the server's machine, or read this partition with a Kafka client")
                }
                throw BrokerError(.corruptData, "record batch at offset \(next): \(error)")
            }
            let header = RecordBatchHeader(from: batch)!
            for record in decoded where record.offset >= next {
                if records.count == maxRecords { break decoding }
                records.append(FetchedRecordJSON(
                    partition: partition, offset: record.offset, timestamp: record.timestamp,
                    key: encoding.encode(record.key), value: encoding.encode(record.value),
                    headers: record.headers.map { HeaderJSON(key: $0.key, value: encoding.encode($0.value)) }))
                next = record.offset + 1
            }
            next = max(next, header.lastOffset + 1)
        }
        if records.count == maxRecords, let last = records.last { next = last.offset + 1 }
        return try json(FetchResponse(records: records, nextOffset: max(next, offset), startOffset: read.startOffset, endOffset: read.endOffset))
    }

    static func integer(_ query: Parameters, _ name: String, default value: Int, range: ClosedRange<Int>) throws(BrokerError) -> Int {
        guard let text = query[Substring(name)] else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw BrokerError(.invalidRequest, "\(name) must be a number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return number
    }

    static func topicParameter(_ context: BasicRequestContext) throws(BrokerError) -> String {
        guard let topic = context.parameters.get("topic") else { throw BrokerError(.invalidRequest, "missing topic in the path") }
        return topic
    }

    static func partitionParameter(_ context: BasicRequestContext) throws(BrokerError) -> Int {
        guard let text = context.parameters.get("partition"), let partition = Int(text) else {
            throw BrokerError(.partitionNotFound, "partition must be a number, not '\(context.parameters.get("partition") ?? "")'")
        }
        return partition
    }

    static func decodeBody<T: Decodable>(_ request: Request, context: BasicRequestContext, bodies: BodyBudget) async throws -> T {
        // A body takes its declared length (or the most a body may take, when it
        // declares none) from the budget of all bodies being read, before it is read.
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > bodies.requestBytesMax { throw bodies.tooLarge() }
        let reserved = await bodies.pool.acquire(declared ?? bodies.requestBytesMax)
        defer { bodies.pool.release(reserved) }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: min(bodies.requestBytesMax, reserved))
        } catch {
            throw bodies.tooLarge()
        }
        guard buffer.readableBytes > 0 else { throw BrokerError(.invalidRequest, "the request body is empty; JSON was expected") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw BrokerError(.invalidRequest, "malformed JSON: \(describe(error))", hint: "see docs/HTTP-API.md for the request format")
        } catch {
            throw BrokerError(.invalidRequest, "malformed JSON: \(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let joined = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return joined.isEmpty ? "the body" : String(joined.drop { $0 == "." })
        }
        switch error {
        case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context): return "\(path(context)).\(key.stringValue) is missing".replacingOccurrences(of: "the body.", with: "")
        case .typeMismatch(let type, let context): return "\(path(context)) should be \(type)"
        case .valueNotFound(let type, let context): return "\(path(context)) should be \(type), not null"
        @unknown default: return "\(error)"
        }
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}

/// Turns `BrokerError`s thrown by handlers into JSON error responses, and anything
/// else into INTERNAL_ERROR (never a dropped connection).
struct ErrorTranslation: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as BrokerError {
            throw APIError(error)
        } catch let error as any HTTPResponseError {
            throw error
        } catch {
            throw APIError(BrokerError.from(error))
        }
    }
}
