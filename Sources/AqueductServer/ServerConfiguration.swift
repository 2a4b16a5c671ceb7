import AqueductAPI
import AqueductBroker
import AqueductGroups
import AqueductHTTP
import AqueductKafka
import AqueductLog
import AqueductStorage
import Configuration
import AqueductEtcd
import AqueductReplication
import Foundation
import Logging
import SystemPackage

/// Everything `aqueduct server` can be told. Each setting comes from, in order of
/// precedence: a command-line flag, an `AQUEDUCT_*` environment variable, the config
/// file (YAML or JSON, `--config`), the default here. Keys are listed in
/// docs/CONFIGURATION.md; `topic.retentionMs` is `AQUEDUCT_TOPIC_RETENTION_MS` and
/// `topic: {retentionMs: ...}` in the file.
public struct ServerConfiguration: Sendable {
    public var dataDirectory = "./aqueduct-data"
    public var httpHost = "127.0.0.1"
    public var httpPort = 8092
    /// The Kafka listener; `kafka.enabled: false` turns it off.
    public var kafka = KafkaListenerConfiguration()
    public var kafkaEnabled = true
    public var durability: DurabilityMode = .fsync
    public var logLevel: Logger.Level = .info
    public var storage = StorageConfiguration(directory: "")
    public var topicDefaults = LogConfiguration()
    /// How often retention runs, in milliseconds.
    public var retentionCheckIntervalMilliseconds = 60_000
    /// Partitions of all topics together (`topics.partitionsMax`).
    public var partitionsMax = 20_000
    /// Bounds on what clients make the group coordinator keep (`groups.*`, `offsets.*`).
    public var groups = GroupLimits()
    /// Idempotent producers: states kept, and how long an idle one is (`kafka.producer*`).
    public var producerStatesMax = 200_000
    public var producerIDExpirationMilliseconds: Int64 = 86_400_000
    /// Tokens for the HTTP API (`http.tokens`: role:token,...); none means open, which
    /// only a loopback listener may be.
    public var httpAccess = HTTPAccess()
    /// Bounds on HTTP clients (`http.requestBytesMax`, `http.bodyBytesInFlightMax`,
    /// `http.connectionsMax`, `http.idleTimeoutMs`).
    public var httpLimits = HTTPLimits()
    /// Where topology programs run from (`topologies.programsDirectory`; default
    /// `<data>/topologies/programs`), and the largest upload (`topologies.programBytesMax`).
    public var programsDirectory: String?
    public var programBytesMax = 512 << 20
    /// Cluster mode (`cluster.etcd`, the --cluster flag: etcd://HOST:PORT); nil runs one
    /// node with embedded metadata.
    public var cluster: ClusterSettings?

    public init() {}

    /// Whether a listen host is reachable from this machine only.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// The storage node's configuration, placed under the data directory.
    public var storageConfiguration: StorageConfiguration {
        var configuration = storage
        configuration.directory = dataDirectory + "/storage"
        configuration.durability = durability
        return configuration
    }

    public var metadataDirectory: String { dataDirectory + "/metadata" }
}

/// A configuration problem, said so that the user knows what to change.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension ServerConfiguration {
    /// Environment variables with this prefix configure the server.
    public static let environmentPrefix = "AQUEDUCT_"

    /// Builds the configuration from flags (`overrides`, keyed like the file), the
    /// environment and an optional file.
    public static func load(
        overrides: [String: String], environment: [String: String] = ProcessInfo.processInfo.environment, file: String?
    ) async throws -> ServerConfiguration {
        var stripped: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix(environmentPrefix) {
            stripped[String(name.dropFirst(environmentPrefix.count))] = value
        }
        var providers: [any ConfigProvider] = [
            InMemoryProvider(
                name: "flags",
                values: Dictionary(uniqueKeysWithValues: overrides.map { key, value in
                    (AbsoluteConfigKey(key.split(separator: ".").map(String.init), context: [:]), ConfigValue(.string(value), isSecret: false))
                })),
            EnvironmentVariablesProvider(environmentVariables: stripped),
        ]
        if let file {
            guard FileManager.default.fileExists(atPath: file) else {
                throw ConfigurationError(message: "config file \(file) does not exist; check the --config path")
            }
            do {
                if file.hasSuffix(".json") {
                    providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(file)))
                } else {
                    providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
                }
            } catch {
                throw ConfigurationError(message: "config file \(file) could not be read: \(error)")
            }
        }
        let reader = ConfigReader(providers: providers)
        return try from(reader)
    }

    static func from(_ config: ConfigReader) throws -> ServerConfiguration {
        var result = ServerConfiguration()
        result.dataDirectory = config.string(forKey: "data.directory", default: result.dataDirectory)
        func hostAndPort(_ key: String, _ text: String, example: String) throws -> (String, Int) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port),
                colon > text.startIndex
            else {
                throw ConfigurationError(message: "\(key) must be HOST:PORT (for example \(example)), not '\(text)'")
            }
            return (String(text[..<colon]), port)
        }
        (result.httpHost, result.httpPort) = try hostAndPort(
            "http.listen", config.string(forKey: "http.listen", default: "\(result.httpHost):\(result.httpPort)"), example: "127.0.0.1:8092")
        result.kafkaEnabled = config.bool(forKey: "kafka.enabled", default: true)
        (result.kafka.host, result.kafka.port) = try hostAndPort(
            "kafka.listen", config.string(forKey: "kafka.listen", default: "\(result.kafka.host):\(result.kafka.port)"), example: "127.0.0.1:9092")
        if let advertised = config.string(forKey: "kafka.advertised") {
            let (host, port) = try hostAndPort("kafka.advertised", advertised, example: "broker.example.com:9092")
            result.kafka.advertisedHost = host
            result.kafka.advertisedPort = port
        }
        let durability = config.string(forKey: "durability", default: "fsync")
        guard let mode = DurabilityMode(parsing: durability) else {
            throw ConfigurationError(message: "durability must be 'fsync' or 'interval:<milliseconds>' (1 to 60000), not '\(durability)'")
        }
        result.durability = mode
        let level = config.string(forKey: "log.level", default: "info")
        guard let logLevel = Logger.Level(rawValue: level) else {
            throw ConfigurationError(message: "log.level must be one of trace, debug, info, notice, warning, error, critical; not '\(level)'")
        }
        result.logLevel = logLevel

        func integer(_ key: String, _ value: Int, range: ClosedRange<Int>) throws -> Int {
            guard let text = config.string(forKey: ConfigKey(key)) else { return value }
            guard let number = Int(text), range.contains(number) else {
                throw ConfigurationError(message: "\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
            }
            return number
        }
        var storage = result.storage
        storage.journalDirectory = config.string(forKey: "journal.directory")
        storage.journalBatchBytesMax = try integer("journal.batchBytesMax", storage.journalBatchBytesMax, range: 4_096...(64 << 20))
        storage.journalBatchWaitMicroseconds = try integer("journal.batchWaitMicroseconds", storage.journalBatchWaitMicroseconds, range: 0...100_000)
        storage.journalFileBytesMax = Int64(try integer("journal.fileBytesMax", Int(storage.journalFileBytesMax), range: (1 << 20)...(1 << 32)))
        storage.journalWritesInFlightMax = try integer("journal.writesInFlightMax", storage.journalWritesInFlightMax, range: 1...4)
        storage.writeCacheBytesMax = try integer("storage.writeCacheBytesMax", storage.writeCacheBytesMax, range: (1 << 20)...(1 << 34))
        storage.flushIntervalMilliseconds = try integer("storage.flushIntervalMilliseconds", storage.flushIntervalMilliseconds, range: 10...600_000)
        storage.tailCacheBytesMax = try integer("storage.tailCacheBytesMax", storage.tailCacheBytesMax, range: 0...(1 << 36))
        storage.readThreads = try integer("storage.readThreads", storage.readThreads, range: 1...64)
        storage.readsInFlightMax = try integer("storage.readsInFlightMax", storage.readsInFlightMax, range: 1...1_024)
        storage.readAheadChunksMax = try integer("storage.readAheadChunks", storage.readAheadChunksMax, range: 0...64)
        result.kafka.nodeID = Int32(try integer("node.id", Int(result.kafka.nodeID), range: 0...Int(Int32.max)))
        result.kafka.autoCreatePartitions = try integer("kafka.autoCreatePartitions", result.kafka.autoCreatePartitions, range: 0...Broker.partitionsPerTopicMax)
        result.kafka.frameBytesMax = try integer("kafka.frameBytesMax", result.kafka.frameBytesMax, range: (64 << 10)...(1 << 30))
        result.storage = storage

        var topic = result.topicDefaults
        topic.segmentBytes = Int64(try integer("topic.segmentBytes", Int(topic.segmentBytes), range: 1_024...Int(StorageConfiguration.segmentBytesLimit)))
        topic.segmentMilliseconds = Int64(try integer("topic.segmentMs", Int(topic.segmentMilliseconds), range: 1...Int.max))
        let retentionMs = try integer("topic.retentionMs", Int(topic.retentionMilliseconds ?? -1), range: -1...Int.max)
        topic.retentionMilliseconds = retentionMs < 0 ? nil : Int64(retentionMs)
        let retentionBytes = try integer("topic.retentionBytes", Int(topic.retentionBytes ?? -1), range: -1...Int.max)
        topic.retentionBytes = retentionBytes < 0 ? nil : Int64(retentionBytes)
        topic.batchBytesMax = try integer("topic.maxMessageBytes", topic.batchBytesMax, range: 1_024...(64 << 20))
        result.topicDefaults = topic
        result.storage.entryBytesMax = max(result.storage.entryBytesMax, topic.batchBytesMax)
        if result.storage.writeCacheBytesMax < 2 * result.storage.entryBytesMax {
            throw ConfigurationError(message: "storage.writeCacheBytesMax must be at least twice topic.maxMessageBytes")
        }
        result.retentionCheckIntervalMilliseconds = try integer("retention.checkIntervalMs", result.retentionCheckIntervalMilliseconds, range: 100...86_400_000)

        result.partitionsMax = try integer("topics.partitionsMax", result.partitionsMax, range: 1...10_000_000)

        if let url = config.string(forKey: "cluster.etcd") {
            guard let endpoint = EtcdMetadataStore.endpoint(fromClusterURL: url) else {
                throw ConfigurationError(message: "cluster.etcd (--cluster) must be etcd://HOST:PORT (an etcd client URL), not '\(url)'")
            }
            var cluster = ClusterSettings(etcdEndpoint: endpoint)
            (cluster.storageHost, cluster.storagePort) = try hostAndPort(
                "storage.listen", config.string(forKey: "storage.listen", default: "\(result.kafka.host):0"), example: "127.0.0.1:7092")
            cluster.namespace = config.string(forKey: "cluster.namespace", default: cluster.namespace)
            guard cluster.namespace.hasPrefix("/"), cluster.namespace.hasSuffix("/") else {
                throw ConfigurationError(message: "cluster.namespace must start and end with '/', not '\(cluster.namespace)'")
            }
            cluster.leaseSeconds = try integer("cluster.leaseSeconds", cluster.leaseSeconds, range: 2...300)
            cluster.groupShards = try integer("cluster.groupShards", cluster.groupShards, range: 1...256)
            cluster.auditSeconds = try integer("cluster.auditSeconds", cluster.auditSeconds, range: 1...3_600)
            let ensemble = try integer("replication.ensemble", 3, range: 1...16)
            let write = try integer("replication.write", min(3, ensemble), range: 1...16)
            let ack = try integer("replication.ack", min(2, write), range: 1...16)
            do {
                cluster.shape = try QuorumShape(ensemble: ensemble, write: write, ack: ack)
            } catch {
                throw ConfigurationError(message: "replication.ensemble/write/ack: \(error)")
            }
            guard result.kafka.nodeID > 0 else {
                throw ConfigurationError(message: "cluster mode needs a node id of 1 or more, unique in the cluster: set --node-id")
            }
            result.cluster = cluster
        }

        // Kafka listener bounds.
        result.kafka.queuedBytesMax = try integer("kafka.queuedBytesMax", result.kafka.queuedBytesMax, range: (1 << 20)...(1 << 40))
        if result.kafka.queuedBytesMax < result.kafka.frameBytesMax + 4 {
            throw ConfigurationError(message: "kafka.queuedBytesMax must be larger than kafka.frameBytesMax")
        }
        result.kafka.connectionsMax = try integer("kafka.connectionsMax", result.kafka.connectionsMax, range: 1...1_000_000)
        result.kafka.frameReadTimeoutMilliseconds = try integer("kafka.frameReadTimeoutMs", result.kafka.frameReadTimeoutMilliseconds, range: 1_000...3_600_000)
        result.kafka.connectionAnswerBytesMax = try integer("kafka.connectionAnswerBytesMax", result.kafka.connectionAnswerBytesMax, range: (64 << 10)...(1 << 34))
        result.kafka.writeStallTimeoutMilliseconds = try integer("kafka.writeStallTimeoutMs", result.kafka.writeStallTimeoutMilliseconds, range: 1_000...86_400_000)
        result.kafka.writeStallUnderPressureMilliseconds = try integer(
            "kafka.writeStallUnderPressureMs", result.kafka.writeStallUnderPressureMilliseconds, range: 100...86_400_000)
        result.kafka.connectionsPerAddressMax = try integer("kafka.connectionsPerAddressMax", result.kafka.connectionsPerAddressMax, range: 1...1_000_000)
        result.kafka.autoCreateTopicsMax = try integer("kafka.autoCreateTopicsMax", result.kafka.autoCreateTopicsMax, range: 0...1_000_000)
        result.kafka.fetchWaitMillisecondsMax = try integer("kafka.fetchWaitMsMax", result.kafka.fetchWaitMillisecondsMax, range: 0...3_600_000)
        result.kafka.fetchBytesMax = try integer("kafka.fetchBytesMax", result.kafka.fetchBytesMax, range: 1_024...(1 << 30))
        result.kafka.fetchBytesInFlightMax = try integer("kafka.fetchBytesInFlightMax", result.kafka.fetchBytesInFlightMax, range: (1 << 20)...(1 << 40))
        result.producerStatesMax = try integer("kafka.producerStatesMax", result.producerStatesMax, range: 1...100_000_000)
        result.producerIDExpirationMilliseconds = Int64(try integer(
            "kafka.producerIdExpirationMs", Int(result.producerIDExpirationMilliseconds), range: 1_000...(365 * 86_400_000)))

        // Consumer groups and committed offsets.
        var groups = result.groups
        groups.groupsMax = try integer("groups.max", groups.groupsMax, range: 1...10_000_000)
        groups.membersMax = try integer("groups.membersMax", groups.membersMax, range: 1...1_000_000)
        groups.stateBytesMax = try integer("groups.stateBytesMax", groups.stateBytesMax, range: (1 << 20)...(1 << 40))
        groups.identifierBytesMax = try integer("groups.identifierBytesMax", groups.identifierBytesMax, range: 16...Int(Int16.max))
        groups.memberMetadataBytesMax = try integer("groups.memberMetadataBytesMax", groups.memberMetadataBytesMax, range: 1_024...(1 << 30))
        let minSession = try integer("groups.minSessionTimeoutMs", Int(groups.sessionTimeoutMilliseconds.lowerBound), range: 1...86_400_000)
        let maxSession = try integer("groups.maxSessionTimeoutMs", Int(groups.sessionTimeoutMilliseconds.upperBound), range: minSession...86_400_000)
        groups.sessionTimeoutMilliseconds = Int64(minSession)...Int64(maxSession)
        groups.initialRebalanceDelayMilliseconds = Int64(try integer(
            "groups.initialRebalanceDelayMs", Int(groups.initialRebalanceDelayMilliseconds), range: 0...300_000))
        groups.offsetsRetentionMilliseconds = Int64(try integer(
            "offsets.retentionMs", Int(groups.offsetsRetentionMilliseconds), range: 60_000...(3_650 * 86_400_000)))
        groups.offsetMetadataBytesMax = try integer("offsets.metadataBytesMax", groups.offsetMetadataBytesMax, range: 0...(1 << 20))
        groups.offsetsMax = try integer("offsets.max", groups.offsetsMax, range: 1...100_000_000)
        result.groups = groups

        // HTTP bounds.
        var http = result.httpLimits
        http.requestBytesMax = try integer("http.requestBytesMax", http.requestBytesMax, range: (64 << 10)...(1 << 30))
        http.bodyBytesInFlightMax = try integer("http.bodyBytesInFlightMax", http.bodyBytesInFlightMax, range: (1 << 20)...(1 << 40))
        http.connectionsMax = try integer("http.connectionsMax", http.connectionsMax, range: 1...1_000_000)
        http.connectionsPerAddressMax = try integer("http.connectionsPerAddressMax", http.connectionsPerAddressMax, range: 1...1_000_000)
        http.idleTimeoutMilliseconds = try integer("http.idleTimeoutMs", http.idleTimeoutMilliseconds, range: 61_000...86_400_000)
        result.httpLimits = http

        // Access to the HTTP API, and the programs it may run.
        if let tokens = config.string(forKey: "http.tokens", isSecret: true) {
            do { result.httpAccess = try HTTPAccess.parse(tokens) } catch { throw ConfigurationError(message: error.description) }
        }
        if result.httpAccess.isOpen && !isLoopback(result.httpHost) {
            throw ConfigurationError(message: "http.listen \(result.httpHost):\(result.httpPort) is reachable from other machines, and no http.tokens are set: "
                + "anyone could produce, delete topics and run programs. Set http.tokens (e.g. AQUEDUCT_HTTP_TOKENS=admin:$(openssl rand -hex 24)), "
                + "or listen on 127.0.0.1")
        }
        result.programsDirectory = config.string(forKey: "topologies.programsDirectory")
        result.programBytesMax = try integer("topologies.programBytesMax", result.programBytesMax, range: (1 << 20)...(1 << 34))
        return result
    }
}

/// Cluster mode's settings (docs/CONFIGURATION.md, "Cluster").
public struct ClusterSettings: Sendable {
    /// etcd's client URL, `http://host:port`.
    public var etcdEndpoint: String
    /// Where this node's storage listener (replication) listens; port 0 picks one, which
    /// the node registers for the others.
    public var storageHost = "127.0.0.1"
    public var storagePort = 0
    /// Keys in etcd live under this prefix (several clusters can share an etcd).
    public var namespace = "/aqueduct/"
    /// A node that stops renewing its lease this long is gone for the others.
    public var leaseSeconds = 10
    /// Consumer groups are split over this many offsets logs (Kafka's
    /// offsets.topic.num.partitions), each coordinated by the node owning it; fixed
    /// when the cluster is created.
    public var groupShards = 6
    /// How often each node rolls the segments it writes that name a lost node, and the
    /// lowest live node re-replicates sealed segments that lost a copy.
    public var auditSeconds = 30
    /// Quorums of new segments: ensemble, write, ack (3/3/2 by default).
    public var shape = try! QuorumShape(ensemble: 3, write: 3, ack: 2)

    public init(etcdEndpoint: String) {
        self.etcdEndpoint = etcdEndpoint
    }
}
