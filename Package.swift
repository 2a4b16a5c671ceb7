// swift-tools-version:6.2
// Aqueduct: one binary that is a durable log, Kafka-compatible pub/sub and a stream
// processing engine. Targets are layered; each depends only on those above it in
// this list (see docs/ARCHITECTURE.md).
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "aqueduct",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "aqueduct", targets: ["aqueduct"]),
        .executable(name: "aqueduct-bench", targets: ["aqueduct-bench"]),
        .executable(name: "aqueduct-examples", targets: ["aqueduct-examples"]),
        // What users' topology programs depend on.
        .library(name: "AqueductTopology", targets: ["AqueductTopology", "AqueductTopologyTopics"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C helpers: CRC-32C with the SSE4.2 instruction when the CPU has it (checked at
        // run time with cpuid), a slicing-by-8 table otherwise (Swift has no intrinsic
        // for it and a Swift table loop is ~4x slower); memmem for recovery's scans.
        // Also: decompression of record batches (zlib, zstd and lz4 loaded from the
        // system's shared libraries with dlopen, so no -dev packages are needed to build;
        // snappy decoded here).
        .target(name: "CAqueduct", linkerSettings: [.linkedLibrary("dl", .when(platforms: [.linux]))]),

        // Shared primitives: checksums, clocks, file I/O, limits.
        .target(
            name: "AqueductCommon",
            dependencies: [
                "CAqueduct",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict),

        // What the server and its clients share: the HTTP API's JSON bodies, the
        // documented error codes, topic and group descriptions. No server code: a
        // user's topology program links this, not the broker.
        .target(name: "AqueductAPI", swiftSettings: strict),

        // Kafka RecordBatch v2: the one record format on disk, on the wire and in the log.
        .target(name: "AqueductRecords", dependencies: ["AqueductCommon", "CAqueduct"], swiftSettings: strict),

        // Versioned keys with compare-and-set and watches; embedded durable store.
        .target(
            name: "AqueductMetadata",
            dependencies: [
                "AqueductCommon",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // The cluster's metadata in etcd, behind MetadataStore (v3 JSON gateway: range,
        // txn, watch, leases), over AsyncHTTPClient.
        .target(
            name: "AqueductEtcd",
            dependencies: [
                "AqueductMetadata",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // The storage node (BookKeeper's bookie): journal + entry storage + recovery.
        .target(
            name: "AqueductStorage",
            dependencies: [
                "AqueductCommon", "AqueductRecords", "CAqueduct",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict),

        // The log (DistributedLog): segments, epochs and fencing, offsets, retention.
        .target(
            name: "AqueductLog",
            dependencies: [
                "AqueductStorage", "AqueductMetadata", "AqueductRecords",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),

        // Replication across nodes (BookKeeper's protocol): quorum rules, the segment
        // writer, fencing and recovery as pure state machines, the storage nodes' wire
        // format; no I/O.
        .target(
            name: "AqueductReplication",
            dependencies: ["AqueductCommon", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),

        // Replication's storage node: the replica store (a write-once entry log with
        // group commit) and the storage listener (SwiftNIO).
        .target(
            name: "AqueductReplicaNode",
            dependencies: [
                "AqueductReplication", "AqueductCommon",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict),

        // Replication's client side (BookKeeper's client): connections to storage nodes,
        // the segment writer, recovery and replica reads driving AqueductReplication's
        // machines, segment metadata kept with compare-and-set in a MetadataStore.
        .target(
            name: "AqueductReplicaClient",
            dependencies: [
                "AqueductReplication", "AqueductMetadata", "AqueductCommon",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict),

        // A log's segments replicated over storage nodes (cluster mode): SegmentStorage
        // on AqueductReplicaClient's writer, recovery and replica reads.
        .target(
            name: "AqueductReplicatedLog",
            dependencies: [
                "AqueductStorage", "AqueductReplicaClient", "AqueductReplication", "AqueductRecords", "AqueductCommon",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict),

        // Cluster mode's coordination on etcd: membership under leases, who owns (writes)
        // each log (OwnershipPlan, pure; OwnershipAgent, its shell), draining.
        .target(
            name: "AqueductCluster",
            dependencies: [
                "AqueductEtcd", "AqueductMetadata", "AqueductReplication",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // Topics and partitions on logs: the model every front end (HTTP, Kafka) shares.
        .target(
            name: "AqueductBroker",
            dependencies: [
                "AqueductAPI", "AqueductLog",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // Consumer groups, whichever front end asks (Kafka, HTTP, topology spouts): the
        // group protocol as a pure state machine, its coordinator, committed offsets
        // kept in an internal log.
        .target(
            name: "AqueductGroups",
            dependencies: [
                "AqueductAPI", "AqueductBroker", "AqueductLog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),

        // The Kafka wire protocol on SwiftNIO: generated message codecs (from Kafka's
        // own definitions, scripts/kafka-codegen.py), the listener, request handlers.
        .target(
            name: "AqueductKafka",
            dependencies: [
                "AqueductAPI", "AqueductBroker", "AqueductGroups", "AqueductLog", "AqueductRecords",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            exclude: ["Schemas"],
            swiftSettings: strict),

        // The HTTP/JSON API (Hummingbird).
        .target(
            name: "AqueductHTTP",
            dependencies: [
                "AqueductAPI", "AqueductBroker", "AqueductGroups", "AqueductCommon",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                // Cluster mode forwards requests to the node that serves them.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),

        // Configuration, wiring and lifecycle of `aqueduct server`.
        .target(
            name: "AqueductServer",
            dependencies: [
                "AqueductAPI", "AqueductHTTP", "AqueductKafka", "AqueductGroups", "AqueductTopologyService", "CAqueduct",
                "AqueductCluster", "AqueductEtcd", "AqueductReplicatedLog", "AqueductReplicaNode", "AqueductReplicaClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
            ],
            swiftSettings: strict),

        // Stream processing in Storm's and Heron's shape: the topology API users build
        // with (spouts, bolts, groupings, builder validation), XOR tuple-tree tracking,
        // and the runtime (task threads, bounded batched queues, backpressure, local mode).
        .target(
            name: "AqueductTopology",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict),

        // Example topologies (Storm's ExclamationTopology and WordCount), run by the tests.
        .target(name: "AqueductTopologyExamples", dependencies: ["AqueductTopology"], swiftSettings: strict),
        // The examples as a topology program (local mode, --describe, one container).
        .executableTarget(
            name: "aqueduct-examples", dependencies: ["AqueductTopology", "AqueductTopologyExamples", "AqueductTopologyTopics"],
            swiftSettings: strict),

        // Topologies in the service: the local scheduler's decisions (ContainerSupervisor,
        // pure), the topology master and the process shell to come.
        .target(
            name: "AqueductTopologyService",
            dependencies: ["AqueductTopology", "AqueductAPI", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),

        // The client side of the HTTP API, used by the CLI and the topic spout and sink.
        .target(
            name: "AqueductClient",
            dependencies: [
                "AqueductAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),

        // Topics as topology sources and sinks (TopicSpout, TopicSink), over the HTTP API.
        .target(name: "AqueductTopologyTopics", dependencies: ["AqueductTopology", "AqueductClient", "AqueductAPI"], swiftSettings: strict),

        // The one binary: flag parsing and subcommands only.
        .executableTarget(
            name: "aqueduct",
            dependencies: [
                "AqueductServer", "AqueductClient", "AqueductAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // Benchmarks: programs that print ratios against references measured in the same run.
        .executableTarget(
            name: "aqueduct-bench",
            dependencies: [
                "AqueductLog", "CAqueduct", "AqueductTopology", "AqueductTopologyExamples",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict),

        // Helpers shared by the test targets (scratch directories, seeded randomness).
        .target(name: "AqueductTestSupport", dependencies: ["AqueductCommon"], path: "Tests/AqueductTestSupport", swiftSettings: strict),
        .testTarget(name: "AqueductCommonTests", dependencies: ["AqueductCommon", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductRecordsTests", dependencies: ["AqueductRecords", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductMetadataTests", dependencies: ["AqueductMetadata", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductStorageTests", dependencies: ["AqueductStorage", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductLogTests", dependencies: ["AqueductLog", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "AqueductReplicationTests",
            dependencies: ["AqueductReplication", "AqueductTestSupport", .product(name: "HeapModule", package: "swift-collections")],
            swiftSettings: strict),
        .testTarget(name: "AqueductReplicaNodeTests", dependencies: ["AqueductReplicaNode", "AqueductReplicaClient", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductClusterTests", dependencies: ["AqueductCluster", "AqueductEtcd", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductEtcdTests", dependencies: ["AqueductEtcd", "AqueductMetadata", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "AqueductReplicatedLogTests",
            dependencies: [
                "AqueductReplicatedLog", "AqueductLog", "AqueductBroker", "AqueductAPI", "AqueductReplicaClient", "AqueductReplicaNode", "AqueductMetadata",
                "AqueductRecords", "AqueductTestSupport",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "AqueductReplicaClientTests",
            dependencies: ["AqueductReplicaClient", "AqueductReplicaNode", "AqueductMetadata", "AqueductEtcd", "AqueductTestSupport"],
            swiftSettings: strict),
        .testTarget(name: "AqueductBrokerTests", dependencies: ["AqueductBroker", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(name: "AqueductGroupsTests", dependencies: ["AqueductGroups", "AqueductAPI", "AqueductTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "AqueductKafkaTests",
            dependencies: [
                "AqueductKafka", "AqueductTestSupport",
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "AqueductHTTPTests",
            dependencies: [
                "AqueductHTTP", "AqueductServer", "AqueductTestSupport", "AqueductTopologyService",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "AqueductTopologyServiceTests", dependencies: ["AqueductTopologyService"], swiftSettings: strict),
        .testTarget(name: "AqueductTopologyTests", dependencies: ["AqueductTopology", "AqueductTopologyExamples"], swiftSettings: strict),
        // Runs the real `aqueduct` binary (built by `swift build`) as a child process.
        .testTarget(
            name: "IntegrationTests", dependencies: ["AqueductAPI", "AqueductClient", "AqueductTestSupport", "AqueductTopologyTopics", "AqueductTopologyExamples", "AqueductTopologyService"],
            swiftSettings: strict),
    ]
)
