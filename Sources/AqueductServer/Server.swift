import AqueductAPI
import AqueductGroups
import AqueductBroker
import AqueductCommon
import CAqueduct
import AqueductHTTP
import AqueductTopologyService
import AqueductKafka
import AqueductReplication
import AqueductLog
import AqueductMetadata
import AqueductStorage
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `aqueduct server`: opens storage, metadata, logs and topics from the data
/// directory, serves the HTTP API, runs retention, and on SIGINT/SIGTERM stops taking
/// requests, finishes those in flight, flushes entry storage and closes cleanly.
public enum Server {
    private static let metricsRegistry = Mutex<PrometheusCollectorRegistry?>(nil)

    /// Installs the Prometheus metrics backend once per process and returns its registry.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        metricsRegistry.withLock { registry in
            if let registry { return registry }
            let created = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: created)
            factory.durationHistogramBuckets["aqueduct_journal_fsync_seconds"] = [
                .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                .milliseconds(2), .milliseconds(4), .milliseconds(8), .milliseconds(16), .milliseconds(32),
                .milliseconds(64), .milliseconds(128), .milliseconds(256), .seconds(1),
            ]
            // Replication's stages (issue #12's latency target), with the same buckets.
            for name in ["aqueduct_replica_writer_handover_seconds", "aqueduct_replica_writer_confirm_seconds", "aqueduct_replica_add_seconds",
                         "aqueduct_replica_log_fsync_seconds", "aqueduct_replica_log_queue_seconds", "aqueduct_kafka_produce_seconds",
                         "aqueduct_replica_add_round_trip_seconds"] {
                factory.durationHistogramBuckets[name] = factory.durationHistogramBuckets["aqueduct_journal_fsync_seconds"]
            }
            factory.valueHistogramBuckets["aqueduct_journal_block_bytes"] = [
                1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
            ]
            factory.valueHistogramBuckets["aqueduct_journal_block_entries"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1_024]
            MetricsSystem.bootstrap(factory)
            registry = created
            return created
        }
    }

    /// The running pieces, for tests that drive a server in-process.
    public struct Components: Sendable {
        /// The local storage node (one node); nil in cluster mode.
        public let storage: StorageNode?
        /// Topics, logs and segments: the embedded store, or etcd in cluster mode.
        public let metadata: any MetadataStore
        /// This node's own metadata (topologies run where they were submitted); the
        /// embedded store itself on one node.
        public let localMetadata: EmbeddedMetadataStore
        public let logs: LogStore
        public let broker: Broker
        public let registry: PrometheusCollectorRegistry
        let cluster: ClusterNode?

        public func metricsText() -> String {
            // Live heap (not what the allocator keeps after frees), beside the RSS.
            Gauge(label: "aqueduct_heap_in_use_bytes").record(Int(aq_heap_in_use()))
            // End offsets are refreshed at scrape time so they are right after a restart too.
            for topic in broker.topicNames() {
                guard let description = try? broker.describeTopic(topic) else { continue }
                for partition in description.partitions {
                    Gauge(label: "aqueduct_partition_end_offset", dimensions: [("topic", topic), ("partition", String(partition.partition))])
                        .record(partition.endOffset)
                }
            }
            return registry.emitToString()
        }

        public func close() async {
            await storage?.close()
            await cluster?.stop()
            try? await localMetadata.close()
        }

        /// Ends long-polling reads at once (shutdown).
        func interruptWaits() {
            storage?.interruptWaits()
        }
    }

    /// Opens everything under the data directory (running recovery).
    public static func open(_ configuration: ServerConfiguration, logger: Logger) async throws -> Components {
        let registry = bootstrapMetrics()
        try FileSystem.createDirectory(configuration.dataDirectory)
        if let settings = configuration.cluster {
            let node = try await ClusterNode.open(settings, nodeID: NodeID(configuration.kafka.nodeID), dataDirectory: configuration.dataDirectory, logger: logger)
            let local = try EmbeddedMetadataStore(directory: configuration.metadataDirectory, logger: logger)
            let logs = LogStore(storage: node.segments, metadata: node.etcd, logger: logger)
            try await logs.open()
            // New topics record the cluster's replication shape as theirs (DescribeConfigs
            // shows it; changing the cluster's later leaves existing topics as they are).
            var topicDefaults = configuration.topicDefaults
            topicDefaults.replicationEnsemble = settings.shape.ensembleSize
            topicDefaults.replicationWrite = settings.shape.writeQuorumSize
            topicDefaults.replicationAck = settings.shape.ackQuorumSize
            let broker = Broker(
                logs: logs, defaults: topicDefaults, partitionsMax: configuration.partitionsMax, writers: .owned, logger: logger)
            try await broker.start()
            logger.info("cluster mode", metadata: [
                "etcd": "\(settings.etcdEndpoint)", "node": "\(configuration.kafka.nodeID)", "storage": "\(node.storageAddress)",
                "replication": "\(settings.shape)",
            ])
            return Components(storage: nil, metadata: node.etcd, localMetadata: local, logs: logs, broker: broker, registry: registry, cluster: node)
        }
        let storage = try StorageNode(configuration: configuration.storageConfiguration, logger: logger)
        let report = storage.recoveryReport
        if report.corruptJournalBlocks > 0 || !report.damagedSegments.isEmpty {
            logger.critical("storage recovered with damage: affected offsets are refused to readers", metadata: ["report": "\(report)"])
        } else {
            logger.info("storage recovered", metadata: ["report": "\(report)"])
        }
        let metadata = try EmbeddedMetadataStore(directory: configuration.metadataDirectory, logger: logger)
        let logs = LogStore(storage: storage, metadata: metadata, logger: logger)
        try await logs.open()
        let broker = Broker(logs: logs, defaults: configuration.topicDefaults, partitionsMax: configuration.partitionsMax, logger: logger)
        try await broker.start()
        return Components(storage: storage, metadata: metadata, localMetadata: metadata, logs: logs, broker: broker, registry: registry, cluster: nil)
    }

    /// Runs until SIGINT or SIGTERM. `onListening` gets the bound HTTP port.
    public static func run(_ configuration: ServerConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let components = try await open(configuration, logger: logger)
        // Groups belong to the broker: HTTP clients and topology spouts commit offsets
        // whether or not the Kafka listener is on.
        let groups: GroupShards
        if let cluster = components.cluster {
            groups = try await cluster.openGroups(logs: components.logs, limits: configuration.groups)
            try await cluster.join(broker: components.broker)
            await cluster.storageNodesAtStart()
        } else {
            let offsets = try await OffsetStore.open(logs: components.logs, offsetsMax: configuration.groups.offsetsMax, logger: logger)
            groups = GroupShards(single: GroupCoordinator(offsets: offsets, limits: configuration.groups, logger: logger))
        }
        var kafkaServer: KafkaServer?
        if configuration.kafkaEnabled {
            let handler = KafkaRequestHandler(
                broker: components.broker, groups: groups, listener: configuration.kafka, clusterID: components.broker.clusterID,
                producerStatesMax: configuration.producerStatesMax, producerIDExpirationMilliseconds: configuration.producerIDExpirationMilliseconds,
                cluster: components.cluster.map { ClusterKafkaView(node: $0, broker: components.broker) }, logger: logger)
            do {
                kafkaServer = try await KafkaServer.bind(configuration: configuration.kafka, handler: handler, logger: logger)
            } catch {
                await components.close()
                throw ConfigurationError(message: "cannot listen for Kafka clients on \(configuration.kafka.host):\(configuration.kafka.port): \(error); "
                    + "free the port, or set kafka.listen (or kafka.enabled: false)")
            }
        }
        let kafkaPort = kafkaServer?.boundPort
        let directory = CoordinatorGroupDirectory(groups: groups, broker: components.broker)
        // With tokens, topology containers get one of their own (write: produce,
        // fetch, commit), made anew at each start.
        var access = configuration.httpAccess
        var containerToken: String?
        var nodeToken: String?
        if !access.isOpen {
            var random = SystemRandomNumberGenerator()
            let token = (0..<4).map { _ in String(random.next() as UInt64, radix: 16) }.joined()
            access.add(token: token, role: .write)
            containerToken = token
            if let cluster = components.cluster {
                nodeToken = try await cluster.clusterHTTPToken()
                access.add(token: nodeToken!, role: .admin)
            }
        }
        // Topology records live where every node reads them: etcd in a cluster.
        let topologies = TopologyMaster(
            runDirectory: configuration.dataDirectory + "/topologies", programsDirectory: configuration.programsDirectory,
            programBytesMax: configuration.programBytesMax, containerToken: containerToken,
            store: MetadataTopologyRegistry(metadata: components.cluster.map { $0.etcd } ?? components.localMetadata, logger: logger),
            nodeID: components.cluster?.nodeID, logger: logger)
        let clusterTopologies = components.cluster.map { $0.makeTopologies(master: topologies, token: nodeToken, logs: components.logs) }
        let router = HTTPAPI.router(
            broker: components.broker, groups: directory, topologies: clusterTopologies ?? topologies,
            cluster: components.cluster.map { ClusterStatusSource(node: $0, broker: components.broker) }, access: access,
            limits: configuration.httpLimits, metricsText: {
            Self.recordGroupMetrics(directory)
            return components.metricsText() + topologies.prometheusText()
        })
        let httpConnections = ConnectionLimiter(
            total: configuration.httpLimits.connectionsMax, perAddress: configuration.httpLimits.connectionsPerAddressMax)
        let application = Application(
            router: router,
            server: .http1(configuration: .init(
                additionalChannelHandlers: [HTTPConnectionLimitHandler(limiter: httpConnections)],
                idleTimeout: .milliseconds(Int64(configuration.httpLimits.idleTimeoutMilliseconds)))),
            configuration: .init(
                address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "aqueduct",
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.httpLimits.connectionsMax)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.httpPort
                if let cluster = components.cluster {
                    let advertised = configuration.kafka.advertised
                    let kafka = kafkaPort.map { "\(advertised.host):\(configuration.kafka.advertisedPort ?? $0)" }
                    do {
                        try await cluster.publish(kafka: kafka, http: "\(configuration.httpHost):\(port)")
                    } catch {
                        logger.error("cannot publish this node's listeners to the cluster", metadata: ["error": "\(error)"])
                    }
                }
                topologies.setServerURL("http://\(configuration.httpHost == "0.0.0.0" ? "127.0.0.1" : configuration.httpHost):\(port)")
                if let cluster = components.cluster, let clusterTopologies {
                    cluster.attach(clusterTopologies)  // the cluster says which to run here
                } else {
                    Task { await topologies.resume() }
                }
                logger.info("aqueduct is serving", metadata: [
                    "http": "\(configuration.httpHost):\(port)",
                    "kafka": "\(kafkaPort.map { "\(configuration.kafka.host):\($0)" } ?? "off")",
                    "data": "\(configuration.dataDirectory)", "durability": "\(configuration.durability)",
                ])
                await onListening(port)
            },
            logger: logger)
        let retention = RetentionService(broker: components.broker, intervalMilliseconds: configuration.retentionCheckIntervalMilliseconds, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: application),
                    .init(service: GroupService(groups: groups)),
                ] + (kafkaServer.map { [ServiceGroupConfiguration.ServiceConfiguration(service: KafkaService(server: $0))] } ?? []) + [
                    .init(service: retention),
                    .init(service: TopologyService(master: topologies)),
                    .init(service: DrainOnShutdown(components: components), successTerminationBehavior: .ignore),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            logger.error("server stopped with an error", metadata: ["error": "\(error)"])
            await components.close()
            throw error
        }
        logger.info("shutting down: flushing entry storage and closing")
        await components.close()
        logger.info("aqueduct stopped cleanly")
    }
}

extension Server {
    /// Per group and partition lag, and members per group, refreshed at scrape time.
    static func recordGroupMetrics(_ directory: CoordinatorGroupDirectory) {
        for summary in directory.groupSummaries() {
            Gauge(label: "aqueduct_group_members", dimensions: [("group", summary.name)]).record(summary.members)
            guard let description = directory.describeGroup(summary.name) else { continue }
            for offset in description.offsets {
                Gauge(label: "aqueduct_group_lag", dimensions: [
                    ("group", summary.name), ("topic", offset.topic), ("partition", String(offset.partition)),
                ]).record(offset.lag)
            }
        }
    }
}

/// When shutdown begins, ends long-polling fetches at once (they answer with what they
/// have), so the HTTP server can finish its requests without waiting out their timeouts.
struct DrainOnShutdown: Service {
    let components: Server.Components

    func run() async throws {
        try? await gracefulShutdown()
        components.interruptWaits()
    }
}

/// Serves Kafka clients until shutdown begins, then closes the listener and its connections.
struct KafkaService: Service {
    let server: KafkaServer

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await server.run()
            }
        } catch is CancellationError {
            // Shutdown began: the listener stops taking connections.
        }
        await server.close()
    }
}

/// Expires group sessions and ends rebalances on time until shutdown.
struct GroupService: Service {
    let groups: GroupShards

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await groups.runTicker()
        }
    }
}

/// Restarts topology containers that exit; stops them all at shutdown.
struct TopologyService: Service {
    let master: TopologyMaster

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await master.run()
        }
        master.stopAll()
    }
}

/// Applies retention to every partition at a fixed interval until shutdown.
struct RetentionService: Service {
    let broker: Broker
    let intervalMilliseconds: Int
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await gracefulShutdownAwareSleep(milliseconds: intervalMilliseconds)
            } catch {
                return
            }
            let deleted = await broker.enforceRetention()
            if deleted > 0 { logger.info("retention pass", metadata: ["segmentsDeleted": "\(deleted)"]) }
        }
    }

    private func gracefulShutdownAwareSleep(milliseconds: Int) async throws {
        try await cancelWhenGracefulShutdown {
            try await Task.sleep(for: .milliseconds(milliseconds))
        }
    }
}
