import Foundation

/// JSON bodies of the HTTP API (docs/HTTP-API.md). Keys, values and header values are
/// UTF-8 text unless the request says `"encoding": "base64"`.
public enum PayloadEncoding: String, Codable, Sendable {
    case utf8
    case base64

    public func decode(_ text: String?, field: String) throws(BrokerError) -> [UInt8]? {
        guard let text else { return nil }
        switch self {
        case .utf8: return Array(text.utf8)
        case .base64:
            guard let data = Data(base64Encoded: text) else {
                throw BrokerError(.invalidRequest, "\(field) is not valid base64", hint: "encode it, or send \"encoding\": \"utf8\"")
            }
            return Array(data)
        }
    }

    public func encode(_ bytes: [UInt8]?) -> String? {
        guard let bytes else { return nil }
        switch self {
        case .utf8: return String(decoding: bytes, as: UTF8.self)
        case .base64: return Data(bytes).base64EncodedString()
        }
    }
}

public struct CreateTopicRequest: Codable, Sendable {
    public var name: String
    public var partitions: Int?
    public var config: TopicSettings?

    public init(name: String, partitions: Int? = nil, config: TopicSettings? = nil) {
        self.name = name
        self.partitions = partitions
        self.config = config
    }
}

public struct TopicList: Codable, Sendable {
    public struct Entry: Codable, Sendable {
        public var name: String
        public var partitions: Int
        public var endOffsets: [Int64]

        public init(name: String, partitions: Int, endOffsets: [Int64]) {
            self.name = name
            self.partitions = partitions
            self.endOffsets = endOffsets
        }
    }
    public var topics: [Entry]

    public init(topics: [Entry]) {
        self.topics = topics
    }
}

public struct HeaderJSON: Codable, Sendable, Equatable {
    public var key: String
    public var value: String?

    public init(key: String, value: String?) {
        self.key = key
        self.value = value
    }
}

/// A record in a produce request. Headers are a list of {key, value} (duplicates and
/// order kept, as in Kafka) or, for convenience, an object.
public struct ProduceRecordJSON: Codable, Sendable {
    public var key: String?
    public var value: String?
    public var headers: [HeaderJSON]?
    public var partition: Int?
    public var timestamp: Int64?

    public init(key: String? = nil, value: String?, headers: [HeaderJSON]? = nil, partition: Int? = nil, timestamp: Int64? = nil) {
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey { case key, value, headers, partition, timestamp }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        key = try container.decodeIfPresent(String.self, forKey: .key)
        value = try container.decodeIfPresent(String.self, forKey: .value)
        partition = try container.decodeIfPresent(Int.self, forKey: .partition)
        timestamp = try container.decodeIfPresent(Int64.self, forKey: .timestamp)
        if let list = try? container.decodeIfPresent([HeaderJSON].self, forKey: .headers) {
            headers = list
        } else if let object = try container.decodeIfPresent([String: String?].self, forKey: .headers) {
            headers = object.sorted { $0.key < $1.key }.map { HeaderJSON(key: $0.key, value: $0.value) }
        } else {
            headers = nil
        }
    }
}

/// A produce request: `{"records": [...]}`, or one record's fields at the top level.
public struct ProduceRequest: Codable, Sendable {
    public var records: [ProduceRecordJSON]
    public var encoding: PayloadEncoding?

    public init(records: [ProduceRecordJSON], encoding: PayloadEncoding? = nil) {
        self.records = records
        self.encoding = encoding
    }

    enum CodingKeys: String, CodingKey { case records, encoding }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        encoding = try container.decodeIfPresent(PayloadEncoding.self, forKey: .encoding)
        if container.contains(.records) {
            records = try container.decode([ProduceRecordJSON].self, forKey: .records)
        } else {
            records = [try ProduceRecordJSON(from: decoder)]
        }
    }
}

public struct ProduceResponse: Codable, Sendable {
    public var offsets: [ProducedRecord]

    public init(offsets: [ProducedRecord]) {
        self.offsets = offsets
    }
}

public struct FetchedRecordJSON: Codable, Sendable, Equatable {
    public var partition: Int
    public var offset: Int64
    public var timestamp: Int64
    public var key: String?
    public var value: String?
    public var headers: [HeaderJSON]

    public init(partition: Int, offset: Int64, timestamp: Int64, key: String?, value: String?, headers: [HeaderJSON]) {
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }
}

public struct FetchResponse: Codable, Sendable {
    public var records: [FetchedRecordJSON]
    /// The offset to fetch next.
    public var nextOffset: Int64
    public var startOffset: Int64
    /// One past the last acknowledged offset (Kafka's high watermark).
    public var endOffset: Int64

    public init(records: [FetchedRecordJSON], nextOffset: Int64, startOffset: Int64, endOffset: Int64) {
        self.records = records
        self.nextOffset = nextOffset
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

public struct OffsetsResponse: Codable, Sendable {
    public var partition: Int
    public var startOffset: Int64
    public var endOffset: Int64

    public init(partition: Int, startOffset: Int64, endOffset: Int64) {
        self.partition = partition
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

/// `{"error": {"code", "message", "hint"}}`, the body of every failed request.
public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var hint: String?

        public init(code: String, message: String, hint: String?) {
            self.code = code
            self.message = message
            self.hint = hint
        }
    }
    public var error: Detail

    public init(error: Detail) {
        self.error = error
    }
}

/// `GET /v1/groups`.
public struct GroupList: Codable, Sendable {
    public var groups: [GroupSummary]

    public init(groups: [GroupSummary]) {
        self.groups = groups
    }
}

/// `POST /v1/groups/{group}/offsets` and the answer of `GET` on it: the next offset
/// to consume per partition of one topic.
public struct GroupOffsets: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var partition: Int
        public var offset: Int64
        public init(partition: Int, offset: Int64) {
            self.partition = partition
            self.offset = offset
        }
    }
    public var topic: String
    public var offsets: [Entry]
    public init(topic: String, offsets: [Entry]) {
        self.topic = topic
        self.offsets = offsets
    }
}

/// `POST /v1/topologies`: run a topology program in the service.
public struct TopologySubmitRequest: Codable, Sendable {
    /// The program, built against AqueductTopology: the name of one uploaded with
    /// `PUT /v1/programs/{name}`, or a path inside the server's programs directory.
    /// Anything else is refused (PROGRAM_NOT_ALLOWED).
    public var executable: String
    public var arguments: [String]
    /// Registers the topology under this name instead of the program's.
    public var name: String?

    public init(executable: String, arguments: [String] = [], name: String? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.name = name
    }
}

/// `POST /v1/topologies/{name}/parallelism`: `{"parallelism": {"count": 4}}`.
public struct TopologyUpdateRequest: Codable, Sendable {
    public var parallelism: [String: Int]
    public init(parallelism: [String: Int]) { self.parallelism = parallelism }
}

/// A running topology: its plan, its container processes and its metrics.
public struct TopologyStatusJSON: Codable, Sendable, Equatable {
    public struct Container: Codable, Sendable, Equatable {
        public var index: Int
        public var pid: Int32?
        public var restarts: Int
        public var lastExitStatus: Int32?
        public var log: String
        public init(index: Int, pid: Int32?, restarts: Int, lastExitStatus: Int32?, log: String) {
            self.index = index
            self.pid = pid
            self.restarts = restarts
            self.lastExitStatus = lastExitStatus
            self.log = log
        }
    }

    public struct Component: Codable, Sendable, Equatable {
        public var id: String
        public var spout: Bool
        public var parallelism: Int
        public var emitted: Int
        public var executed: Int
        public var acked: Int
        public var failed: Int
        public var timedOut: Int
        public var executeLatencyMicros: Double
        public var completeLatencyP50Micros: Double
        public var completeLatencyP99Micros: Double
        public var queueDepth: Int
        public var backpressureMillis: Double
        public init(id: String, spout: Bool, parallelism: Int, emitted: Int = 0, executed: Int = 0, acked: Int = 0, failed: Int = 0,
                    timedOut: Int = 0, executeLatencyMicros: Double = 0, completeLatencyP50Micros: Double = 0,
                    completeLatencyP99Micros: Double = 0, queueDepth: Int = 0, backpressureMillis: Double = 0) {
            self.id = id
            self.spout = spout
            self.parallelism = parallelism
            self.emitted = emitted
            self.executed = executed
            self.acked = acked
            self.failed = failed
            self.timedOut = timedOut
            self.executeLatencyMicros = executeLatencyMicros
            self.completeLatencyP50Micros = completeLatencyP50Micros
            self.completeLatencyP99Micros = completeLatencyP99Micros
            self.queueDepth = queueDepth
            self.backpressureMillis = backpressureMillis
        }
    }

    public var name: String
    /// running, deactivated or killing; in cluster mode also scheduled (waiting for a
    /// node to start it).
    public var state: String
    public var executable: String
    public var arguments: [String]
    public var generation: Int
    public var containers: [Container]
    public var components: [Component]
    /// Cluster mode: the node running it (nil while it is scheduled or moves).
    public var node: Int?

    public init(name: String, state: String, executable: String, arguments: [String], generation: Int, containers: [Container], components: [Component], node: Int? = nil) {
        self.name = name
        self.state = state
        self.executable = executable
        self.arguments = arguments
        self.generation = generation
        self.containers = containers
        self.components = components
        self.node = node
    }
}

public struct TopologyList: Codable, Sendable {
    public var topologies: [TopologyStatusJSON]
    public init(topologies: [TopologyStatusJSON]) { self.topologies = topologies }

    /// Lists of several cluster nodes as one, by name: the node running a topology
    /// speaks for it over nodes that only know it is scheduled (to it or to nobody yet).
    public static func merged(_ listed: [TopologyStatusJSON]) -> [TopologyStatusJSON] {
        var byName: [String: TopologyStatusJSON] = [:]
        for topology in listed {
            if let seen = byName[topology.name], seen.state != "scheduled", topology.state == "scheduled" { continue }
            byName[topology.name] = topology
        }
        return byName.values.sorted { $0.name < $1.name }
    }
}
