import AqueductAPI
import AqueductCommon
import AqueductLog
import AqueductMetadata
import AqueductRecords
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// A topic as recorded at `/topics/<name>`: its partitions and the log behind each.
public struct TopicRecord: Codable, Equatable, Sendable {
    public var name: String
    /// A stable identity (Kafka's topic id), so a re-created topic is a different topic.
    public var id: String
    public var partitionLogIDs: [UInt64]
    public var createdAtMilliseconds: Int64
    public var configuration: LogConfiguration
    /// Kafka topic configs set on the topic, by name (TopicConfigs), those Aqueduct
    /// applies and those it only keeps; nil in records from before they were kept.
    public var configs: [String: String]?

    static func key(_ name: String) -> String { "/topics/\(name)" }
    static let prefix = "/topics/"
}

extension TopicSettings {
    /// `defaults` with these settings applied. A negative retention means unlimited.
    public func applied(to defaults: LogConfiguration) -> LogConfiguration {
        var configuration = defaults
        if let retentionMs { configuration.retentionMilliseconds = retentionMs < 0 ? nil : retentionMs }
        if let retentionBytes { configuration.retentionBytes = retentionBytes < 0 ? nil : retentionBytes }
        if let segmentBytes { configuration.segmentBytes = segmentBytes }
        if let segmentMs { configuration.segmentMilliseconds = segmentMs }
        if let maxMessageBytes { configuration.batchBytesMax = maxMessageBytes }
        // A smaller ensemble than the default's write quorum caps it, and the write
        // quorum caps the ack quorum, unless they are set too.
        if let replicationEnsemble {
            configuration.replicationEnsemble = replicationEnsemble
            if replicationWrite == nil, let write = configuration.replicationWrite { configuration.replicationWrite = min(write, replicationEnsemble) }
        }
        if let replicationWrite { configuration.replicationWrite = replicationWrite }
        if replicationEnsemble != nil || replicationWrite != nil, replicationAck == nil, let ack = configuration.replicationAck, let write = configuration.replicationWrite {
            configuration.replicationAck = min(ack, write)
        }
        if let replicationAck { configuration.replicationAck = replicationAck }
        return configuration
    }
}

extension TopicConfiguration {
    /// A log's settings as clients see them.
    public init(_ log: LogConfiguration) {
        self.init(
            segmentBytes: log.segmentBytes, segmentMilliseconds: log.segmentMilliseconds, retentionMilliseconds: log.retentionMilliseconds,
            retentionBytes: log.retentionBytes, batchBytesMax: log.batchBytesMax,
            replicationEnsemble: log.replicationEnsemble, replicationWrite: log.replicationWrite, replicationAck: log.replicationAck)
    }
}

/// One record to produce.
public struct ProduceRecord: Sendable, Equatable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]
    /// Milliseconds since the epoch; the server's clock when nil.
    public var timestamp: Int64?
    /// The target partition; chosen from the key (murmur2, as Kafka clients do) or
    /// round-robin per request when nil.
    public var partition: Int?

    public init(key: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64? = nil, partition: Int? = nil) {
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
        self.partition = partition
    }
}

/// Topics and partitions over logs: the model the HTTP API and the Kafka protocol
/// share. A produce or a fetch is a call here, whichever protocol it came in by.
public final class Broker: Sendable {
    /// Most partitions one topic may have.
    public static let partitionsPerTopicMax = 1_024
    /// Longest topic name, as in Kafka.
    public static let topicNameBytesMax = 249
    /// Most records one produce call may carry.
    public static let recordsPerProduceMax = 100_000

    struct Topic {
        var record: TopicRecord
        var logs: [Log]
        /// nil where this node does not write the partition (cluster mode: another node
        /// owns it, or its ownership is moving).
        var writers: [LogWriter?]
        /// Metric handles, made once: looking them up in the metrics backend on every
        /// produce and fetch would take its lock each time.
        var metrics: TopicMetrics

        init(record: TopicRecord, logs: [Log], writers: [LogWriter?]) {
            self.record = record
            self.logs = logs
            self.writers = writers
            self.metrics = TopicMetrics(topic: record.name, partitions: logs.count)
        }
    }

    struct TopicMetrics {
        let bytesIn: Counter
        let bytesOut: Counter
        let endOffsets: [Gauge]

        init(topic: String, partitions: Int) {
            bytesIn = Counter(label: "aqueduct_topic_bytes_in_total", dimensions: [("topic", topic)])
            bytesOut = Counter(label: "aqueduct_topic_bytes_out_total", dimensions: [("topic", topic)])
            endOffsets = (0..<partitions).map {
                Gauge(label: "aqueduct_partition_end_offset", dimensions: [("topic", topic), ("partition", String($0))])
            }
        }
    }

    public let logs: LogStore
    let metadata: any MetadataStore
    let clock: any WallClock
    let logger: Logger
    public let defaults: LogConfiguration
    private let topics = Mutex<[String: Topic]>([:])
    /// Serializes topic creation and deletion.
    private let adminLock = WeightedSemaphore(capacity: 1)
    private let roundRobin = Atomic<Int>(0)
    /// Wakes fetchers waiting on several partitions (Kafka Fetch) when one gets records.
    public let appends = AppendNotifier()

    /// Partitions of all topics together (`topics.partitionsMax`): each is a log with
    /// files and memory, and a client that may create topics must not exhaust them.
    public let partitionsMax: Int

    /// Which partitions this broker writes.
    public enum Writers: Sendable {
        /// Every partition (one node: today's path).
        case all
        /// Only those it is given with `acquire` (cluster mode: the ownership agent
        /// decides); the others answer "not the owner", which Kafka clients take as
        /// NOT_LEADER_OR_FOLLOWER and follow after a metadata refresh.
        case owned
    }

    public let writerPolicy: Writers
    /// Called when partitions appear or go (topics created, deleted, grown), so the
    /// ownership agent looks again.
    private let partitionsChanged = Mutex<(@Sendable () -> Void)?>(nil)

    public init(
        logs: LogStore, defaults: LogConfiguration, partitionsMax: Int = 20_000, clock: any WallClock = SystemWallClock(),
        writers: Writers = .all, logger: Logger = Logger(label: "aqueduct.broker")
    ) {
        self.writerPolicy = writers
        self.logs = logs
        self.metadata = logs.metadata
        self.defaults = defaults
        self.partitionsMax = partitionsMax
        self.clock = clock
        self.logger = logger
    }

    /// Loads topics and opens a writer on each partition (fencing any earlier one); with
    /// `.owned` writers, none is opened here.
    public func start() async throws {
        for (key, value) in try await metadata.list(prefix: TopicRecord.prefix) {
            let record: TopicRecord
            do { record = try JSONDecoder().decode(TopicRecord.self, from: Data(value.value)) } catch {
                throw BrokerError(.storageError, "topic record \(key) is undecodable: \(error)")
            }
            var partitionLogs: [Log] = []
            var writers: [LogWriter?] = []
            for logID in record.partitionLogIDs {
                guard let log = logs.log(logID) else {
                    throw BrokerError(.storageError, "topic \(record.name) lists log \(logID), which does not exist")
                }
                partitionLogs.append(log)
                writers.append(writerPolicy == .all ? try await log.openWriter() : nil)
            }
            topics.withLock { $0[record.name] = Topic(record: record, logs: partitionLogs, writers: writers) }
        }
        var id: String
        if let stored = try await metadata.get(Self.clusterIDKey) {
            id = String(decoding: stored.value, as: UTF8.self)
        } else {
            // Kafka's form: a UUID's 16 bytes in URL-safe base64 without padding (22 characters).
            let uuid = UUID().uuid
            let bytes = withUnsafeBytes(of: uuid) { Data($0) }
            id = bytes.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
            do {
                _ = try await metadata.put(Self.clusterIDKey, Array(id.utf8), expect: .absent)
            } catch MetadataError.conflict {
                // Cluster mode: another node made it first.
                guard let stored = try await metadata.get(Self.clusterIDKey) else { throw BrokerError(.storageError, "the cluster id vanished") }
                id = String(decoding: stored.value, as: UTF8.self)
            }
        }
        clusterIDValue.withLock { $0 = id }
    }

    static let clusterIDKey = "/cluster/id"
    private let clusterIDValue = Mutex("")
    /// This cluster's id (Kafka's cluster.id), made once and kept in metadata.
    public var clusterID: String { clusterIDValue.withLock { $0 } }

    // MARK: - Admin

    /// Kafka's rules: 1 to 249 of [a-zA-Z0-9._-], not "." or "..". Names starting
    /// with "__" are kept for internal topics.
    public static func validateTopicName(_ name: String) throws(BrokerError) {
        let hint = "use 1 to \(topicNameBytesMax) characters from a-z, A-Z, 0-9, '.', '_' and '-'"
        if name.isEmpty { throw BrokerError(.invalidTopicName, "the topic name is empty", hint: hint) }
        if name.utf8.count > topicNameBytesMax {
            throw BrokerError(.invalidTopicName, "the topic name is \(name.utf8.count) characters long", hint: hint)
        }
        if name == "." || name == ".." { throw BrokerError(.invalidTopicName, "'\(name)' is not a valid topic name", hint: hint) }
        for byte in name.utf8 {
            let ok = (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2e || byte == 0x5f || byte == 0x2d
            if !ok {
                throw BrokerError(.invalidTopicName, "the topic name '\(name)' contains '\(Character(Unicode.Scalar(byte)))'", hint: hint)
            }
        }
    }

    /// Creates a topic. With `topicsMax`, only while fewer topics exist (checked under
    /// the same lock as the creation: concurrent callers cannot overshoot it).
    public func createTopic(
        _ name: String, partitions: Int, settings: TopicSettings = TopicSettings(), configs: [String: String] = [:], topicsMax: Int? = nil
    ) async throws(BrokerError) -> TopicDescription {
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        let configuration = try checkNewTopic(name, partitions: partitions, settings: settings)
        if let topicsMax, topics.withLock({ $0.count }) >= topicsMax {
            throw BrokerError(.limitReached, "the server has \(topicsMax) topics, the most a client may create by naming one",
                hint: "create the topic explicitly, or raise kafka.autoCreateTopicsMax")
        }
        do {
            let ids = try await logs.allocateIDs(partitions)
            let record = TopicRecord(
                name: name, id: UUID().uuidString.lowercased(), partitionLogIDs: ids,
                createdAtMilliseconds: clock.nowMilliseconds(), configuration: configuration, configs: configs.isEmpty ? nil : configs)
            var operations: [MetadataOperation] = [
                .put(key: TopicRecord.key(name), value: try EmbeddedMetadataStore.encodeJSON(record), expect: .absent)
            ]
            for (partition, id) in ids.enumerated() {
                operations.append(try logs.newLogRecordOperation(id: id, name: "\(name)-\(partition)", configuration: configuration))
            }
            try await metadata.commit(operations)
            let partitionLogs = try await logs.adopt(ids: ids)
            var writers: [LogWriter?] = []
            for log in partitionLogs { writers.append(writerPolicy == .all ? try await log.openWriter() : nil) }
            topics.withLock { $0[name] = Topic(record: record, logs: partitionLogs, writers: writers) }
            notifyPartitionsChanged()
            logger.info("topic created", metadata: ["topic": "\(name)", "partitions": "\(partitions)"])
            return try describeTopic(name)
        } catch MetadataError.conflict {
            throw BrokerError(.topicExists, "topic '\(name)' already exists")
        } catch {
            throw BrokerError.from(error)
        }
    }

    /// Adds partitions to a topic, up to `count` in all (Kafka's CreatePartitions).
    /// Existing partitions keep their records; keys map to partitions by the new count
    /// from now on, as in Kafka.
    public func addPartitions(_ name: String, count: Int, validateOnly: Bool = false) async throws(BrokerError) -> TopicDescription {
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        let current = topic.logs.count
        guard count > current else {
            throw BrokerError(.invalidPartitions, "topic '\(name)' has \(current) partitions; the new count must be larger, not \(count)",
                hint: "partitions can be added, never removed")
        }
        guard count <= Self.partitionsPerTopicMax else {
            throw BrokerError(.invalidPartitions, "a topic has at most \(Self.partitionsPerTopicMax) partitions, not \(count)")
        }
        try checkPartitionRoom(adding: count - current)
        if validateOnly { return try describeTopic(name) }
        do {
            let ids = try await logs.allocateIDs(count - current)
            var record = topic.record
            record.partitionLogIDs += ids
            var operations: [MetadataOperation] = [
                .put(key: TopicRecord.key(name), value: try EmbeddedMetadataStore.encodeJSON(record), expect: .any)
            ]
            for (index, id) in ids.enumerated() {
                operations.append(try logs.newLogRecordOperation(id: id, name: "\(name)-\(current + index)", configuration: record.configuration))
            }
            try await metadata.commit(operations)
            let added = try await logs.adopt(ids: ids)
            var writers: [LogWriter?] = []
            for log in added { writers.append(writerPolicy == .all ? try await log.openWriter() : nil) }
            topics.withLock { $0[name] = Topic(record: record, logs: topic.logs + added, writers: topic.writers + writers) }
            notifyPartitionsChanged()
            logger.info("partitions added", metadata: ["topic": "\(name)", "partitions": "\(count)"])
            return try describeTopic(name)
        } catch {
            throw BrokerError.from(error)
        }
    }

    /// A topic's Kafka configs as set, and the settings in effect.
    public func topicConfigs(_ name: String) throws(BrokerError) -> (overrides: [String: String], configuration: LogConfiguration) {
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        return (topic.record.configs ?? [:], topic.record.configuration)
    }

    /// Replaces a topic's Kafka configs (AlterConfigs; IncrementalAlterConfigs computes
    /// the whole set first). Those Aqueduct applies take effect on every partition:
    /// appends are checked against them at once, retention at its next pass. Each
    /// partition's log is updated, then the topic: a crash between leaves partitions
    /// with the new settings under the old record, which the same alter, retried,
    /// completes.
    public func alterTopicConfigs(_ name: String, configs: [String: String], validateOnly: Bool = false) async throws(BrokerError) {
        let settings = try TopicConfigs.settings(from: configs)
        let configuration = settings.applied(to: defaults)
        if let problem = configuration.problem() { throw BrokerError(.invalidConfig, problem) }
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        if validateOnly { return }
        var record = topic.record
        record.configuration = configuration
        record.configs = configs.isEmpty ? nil : configs
        do {
            for log in topic.logs where log.configuration != configuration { try await log.setConfiguration(configuration) }
            try await metadata.commit([.put(key: TopicRecord.key(name), value: try EmbeddedMetadataStore.encodeJSON(record), expect: .any)])
        } catch {
            throw BrokerError.from(error)
        }
        topics.withLock { $0[name]?.record = record }
        logger.info("topic configs altered", metadata: ["topic": "\(name)", "configs": "\(configs.keys.sorted())"])
    }

    /// Every check `createTopic` makes, without creating it (CreateTopics' validateOnly).
    public func validateNewTopic(_ name: String, partitions: Int, settings: TopicSettings = TopicSettings()) async throws(BrokerError) {
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        _ = try checkNewTopic(name, partitions: partitions, settings: settings)
    }

    /// The checks of a topic to create; the caller holds `adminLock`.
    private func checkNewTopic(_ name: String, partitions: Int, settings: TopicSettings) throws(BrokerError) -> LogConfiguration {
        try Self.validateTopicName(name)
        if name.hasPrefix("__") {
            throw BrokerError(.invalidTopicName, "names starting with '__' are reserved for internal topics", hint: "choose another name")
        }
        guard partitions >= 1, partitions <= Self.partitionsPerTopicMax else {
            throw BrokerError(.invalidPartitions, "a topic needs 1 to \(Self.partitionsPerTopicMax) partitions, not \(partitions)")
        }
        let configuration = settings.applied(to: defaults)
        if let problem = configuration.problem() { throw BrokerError(.invalidConfig, problem) }
        if topics.withLock({ $0[name] != nil }) {
            throw BrokerError(.topicExists, "topic '\(name)' already exists", hint: "describe it, or delete it first")
        }
        try checkPartitionRoom(adding: partitions)
        return configuration
    }

    public func deleteTopic(_ name: String) async throws(BrokerError) {
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        do {
            var operations: [MetadataOperation] = [.delete(key: TopicRecord.key(name), expect: .any)]
            for log in topic.logs { operations.append(logs.deleteRecordOperation(log.id)) }
            try await metadata.commit(operations)
            topics.withLock { $0[name] = nil }
            for log in topic.logs { try await logs.forget(log.id) }
            notifyPartitionsChanged()
            logger.info("topic deleted", metadata: ["topic": "\(name)"])
        } catch {
            throw BrokerError.from(error)
        }
    }

    /// Partitions of all topics.
    public var partitionTotal: Int { topics.withLock { $0.values.reduce(0) { $0 + $1.logs.count } } }

    private func checkPartitionRoom(adding count: Int) throws(BrokerError) {
        let total = partitionTotal
        guard total + count <= partitionsMax else {
            throw BrokerError(.limitReached, "the server has \(total) partitions; \(count) more would pass its limit of \(partitionsMax)",
                hint: "delete topics you no longer need, or raise topics.partitionsMax")
        }
    }

    public func topicNames() -> [String] {
        topics.withLock { Array($0.keys) }.sorted()
    }

    public func describeTopic(_ name: String) throws(BrokerError) -> TopicDescription {
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        let partitions = topic.logs.enumerated().map { index, log in
            let info = log.info()
            return PartitionDescription(
                partition: index, startOffset: info.startOffset, endOffset: info.endOffset,
                sizeBytes: info.sizeBytes, segments: info.segments.count)
        }
        return TopicDescription(
            name: name, id: topic.record.id, partitions: partitions,
            createdAtMilliseconds: topic.record.createdAtMilliseconds, configuration: TopicConfiguration(topic.record.configuration))
    }

    static func unknownTopic(_ name: String) -> BrokerError {
        BrokerError(.topicNotFound, "topic '\(name)' does not exist", hint: "create it first, or list topics to check the name")
    }

    private func partition(_ name: String, _ partition: Int) throws(BrokerError) -> (log: Log, writer: LogWriter, metrics: TopicMetrics) {
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        guard partition >= 0, partition < topic.logs.count else {
            throw BrokerError(.partitionNotFound, "topic '\(name)' has partitions 0 to \(topic.logs.count - 1), not \(partition)")
        }
        guard let writer = topic.writers[partition] else {
            throw BrokerError(.unavailable, "this node does not own partition \(partition) of topic '\(name)' now",
                hint: "send it to the partition's owner (Kafka clients do after a metadata refresh); `aqueduct cluster status` shows owners")
        }
        return (topic.logs[partition], writer, topic.metrics)
    }

    // MARK: - Cluster mode

    /// Called when partitions appear or go.
    public func onPartitionsChanged(_ callback: @escaping @Sendable () -> Void) {
        partitionsChanged.withLock { $0 = callback }
    }

    private func notifyPartitionsChanged() {
        partitionsChanged.withLock { $0 }?()
    }

    /// Every partition's log id (what the ownership agent assigns).
    public func partitionLogIDs() -> [UInt64] {
        topics.withLock { $0.values.flatMap { $0.record.partitionLogIDs } }.sorted()
    }

    /// The topic and partition a log holds.
    public func partition(ofLog logID: UInt64) -> TopicPartition? {
        topics.withLock { topics in
            for (name, topic) in topics {
                if let index = topic.record.partitionLogIDs.firstIndex(of: logID) { return TopicPartition(name, index) }
            }
            return nil
        }
    }

    /// This node now owns the log: opens its writer (a takeover: the previous owner's
    /// writer is fenced). Topics created on other nodes are loaded first.
    public func acquire(logID: UInt64) async throws {
        if partition(ofLog: logID) == nil { try await refreshTopics() }
        guard let target = partition(ofLog: logID), let log = logs.log(logID) else { return }
        let writer = try await log.openWriter()
        topics.withLock { topics in
            guard topics[target.topic]?.record.partitionLogIDs[target.partition] == logID else { return }
            topics[target.topic]!.writers[target.partition] = writer
        }
        logger.info("now writing a partition", metadata: ["topic": "\(target.topic)", "partition": "\(target.partition)"])
    }

    /// This node no longer owns the log: appends to it are refused from now on.
    public func release(logID: UInt64) {
        guard let target = partition(ofLog: logID) else { return }
        topics.withLock { $0[target.topic]?.writers[target.partition] = nil }
        logger.info("no longer writing a partition", metadata: ["topic": "\(target.topic)", "partition": "\(target.partition)"])
    }

    /// The log holding a partition.
    public func logID(topic: String, partition: Int) -> UInt64? {
        topics.withLock { topics in
            guard let ids = topics[topic]?.record.partitionLogIDs, partition >= 0, partition < ids.count else { return nil }
            return ids[partition]
        }
    }

    /// Whether this node writes a partition now.
    public func owns(topic: String, partition: Int) -> Bool {
        topics.withLock { topics in
            guard let writers = topics[topic]?.writers, partition >= 0, partition < writers.count else { return false }
            return writers[partition] != nil
        }
    }

    /// Loads topics other nodes created or grew, and drops those they deleted
    /// (cluster mode: the metadata is shared).
    public func refreshTopics() async throws {
        await adminLock.acquire(1)
        defer { adminLock.release(1) }
        var stored: [String: TopicRecord] = [:]
        for (key, value) in try await metadata.list(prefix: TopicRecord.prefix) {
            guard let record = try? JSONDecoder().decode(TopicRecord.self, from: Data(value.value)) else {
                logger.warning("skipping an undecodable topic record", metadata: ["key": "\(key)"])
                continue
            }
            stored[record.name] = record
        }
        let known = topics.withLock { $0 }
        var changed = false
        for (name, record) in stored where known[name]?.record.partitionLogIDs != record.partitionLogIDs || known[name]?.record.id != record.id {
            let existing = known[name].flatMap { $0.record.id == record.id ? $0 : nil }
            let have = existing?.logs.count ?? 0
            let added = try await logs.adopt(ids: Array(record.partitionLogIDs.dropFirst(have)))
            let topic = Topic(
                record: record, logs: (existing?.logs ?? []) + added,
                writers: (existing?.writers ?? []) + Array(repeating: nil, count: added.count))
            topics.withLock { $0[name] = topic }
            changed = true
        }
        for (name, topic) in known where stored[name] == nil || stored[name]?.id != topic.record.id {
            if stored[name] == nil { topics.withLock { $0[name] = nil } }
            for log in topic.logs { try? await logs.forget(log.id) }
            changed = true
        }
        if changed { notifyPartitionsChanged() }
    }

    /// The largest record batch a topic takes (its max.message.bytes), cheaply.
    public func batchBytesMax(_ name: String) -> Int? {
        topics.withLock { $0[name]?.record.configuration.batchBytesMax }
    }

    public func partitionCount(_ name: String) throws(BrokerError) -> Int {
        guard let topic = topics.withLock({ $0[name] }) else { throw Self.unknownTopic(name) }
        return topic.logs.count
    }

    // MARK: - Produce and fetch

    /// Appends a client's record batch as it is (the Kafka path): validated, given
    /// offsets, stored byte for byte.
    public func appendBatch(topic: String, partition: Int, batch: ByteBuffer) async throws(BrokerError) -> AppendResult {
        let target = try self.partition(topic, partition)
        do {
            let result = try await target.writer.append(batch)
            target.metrics.bytesIn.increment(by: batch.readableBytes)
            target.metrics.endOffsets[partition].record(result.lastOffset + 1)
            appends.notify(TopicPartition(topic, partition))
            return result
        } catch {
            throw BrokerError.from(log: error)
        }
    }

    /// Queues a client's batch as `appendBatch` stores it, returning once it is queued
    /// (offsets assigned); `durable()` on the result waits for the journal. Batches
    /// queued one after another on a partition are stored in that order.
    public func submitBatch(topic: String, partition: Int, batch: ByteBuffer) async throws(BrokerError) -> QueuedBatch {
        let target = try self.partition(topic, partition)
        do {
            let pending = try await target.writer.submit(batch)
            return QueuedBatch(pending: pending, broker: self, partition: TopicPartition(topic, partition), metrics: target.metrics, bytes: batch.readableBytes)
        } catch {
            throw BrokerError.from(log: error)
        }
    }

    /// Queues a batch as `submitBatch` does if `admit`, called under the partition's
    /// log lock with the offset the batch would get, says so; nil when it did not.
    public func submitBatch(
        topic: String, partition: Int, batch: ByteBuffer, admit: (_ baseOffset: Int64) -> Bool
    ) async throws(BrokerError) -> QueuedBatch? {
        let target = try self.partition(topic, partition)
        do {
            guard let pending = try await target.writer.submit(batch, admit: admit) else { return nil }
            return QueuedBatch(pending: pending, broker: self, partition: TopicPartition(topic, partition), metrics: target.metrics, bytes: batch.readableBytes)
        } catch {
            throw BrokerError.from(log: error)
        }
    }

    /// A batch queued by `submitBatch`.
    public struct QueuedBatch: Sendable {
        let pending: PendingAppend
        let broker: Broker
        let partition: TopicPartition
        let metrics: TopicMetrics
        let bytes: Int

        /// The offsets the batch got (known as soon as it is queued).
        public var result: AppendResult { pending.result }

        /// Waits until the batch is durable.
        public func durable() async throws(BrokerError) -> AppendResult {
            do {
                let result = try await pending.durable()
                metrics.bytesIn.increment(by: bytes)
                metrics.endOffsets[partition.partition].record(result.lastOffset + 1)
                broker.appends.notify(partition)
                return result
            } catch {
                throw BrokerError.from(log: error)
            }
        }
    }

    /// Produces records: groups them by partition (explicit, by key, or round-robin),
    /// builds one batch per partition (more if one would exceed the topic's limit) and
    /// appends them all concurrently. Returns each record's partition and offset, in
    /// input order.
    public func produce(topic: String, records: [ProduceRecord]) async throws(BrokerError) -> [ProducedRecord] {
        guard !records.isEmpty else { throw BrokerError(.invalidRequest, "no records to produce") }
        guard records.count <= Self.recordsPerProduceMax else {
            throw BrokerError(.invalidRequest, "\(records.count) records in one request; the limit is \(Self.recordsPerProduceMax)",
                hint: "split the request")
        }
        guard let entry = topics.withLock({ $0[topic] }) else { throw Self.unknownTopic(topic) }
        let partitions = entry.logs.count
        let limit = entry.record.configuration.batchBytesMax
        let now = clock.nowMilliseconds()
        let unkeyedPartition = roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue % partitions
        var byPartition: [Int: [(index: Int, record: Record)]] = [:]
        for (index, record) in records.enumerated() {
            let target: Int
            if let explicit = record.partition {
                guard explicit >= 0, explicit < partitions else {
                    throw BrokerError(.partitionNotFound, "topic '\(topic)' has partitions 0 to \(partitions - 1), not \(explicit)")
                }
                target = explicit
            } else if let key = record.key {
                target = Partitioner.partition(forKey: key, partitions: partitions)
            } else {
                target = unkeyedPartition
            }
            byPartition[target, default: []].append((index, Record(
                timestamp: record.timestamp ?? now, key: record.key, value: record.value, headers: record.headers)))
        }
        // Split each partition's records into batches under the size limit.
        var jobs: [(partition: Int, indexes: [Int], batch: ByteBuffer)] = []
        for (partition, items) in byPartition.sorted(by: { $0.key < $1.key }) {
            var builder = RecordBatchBuilder()
            var indexes: [Int] = []
            for item in items {
                var single = RecordBatchBuilder()
                single.append(item.record)
                if single.estimatedSize > limit {
                    throw BrokerError(.recordTooLarge, "record \(item.index) takes \(single.estimatedSize) bytes; the topic's limit is \(limit) bytes",
                        hint: "send smaller records or raise the topic's maxMessageBytes")
                }
                var candidate = builder
                candidate.append(item.record)
                if !builder.isEmpty && candidate.estimatedSize > limit {
                    jobs.append((partition, indexes, builder.build()))
                    builder = RecordBatchBuilder()
                    indexes = []
                    builder.append(item.record)
                } else {
                    builder = candidate
                }
                indexes.append(item.index)
            }
            if !builder.isEmpty { jobs.append((partition, indexes, builder.build())) }
        }
        var results = [ProducedRecord](repeating: ProducedRecord(partition: 0, offset: 0), count: records.count)
        do {
            // Batches of one partition go in order; partitions proceed concurrently.
            let grouped = Dictionary(grouping: jobs, by: \.partition)
            try await withThrowingTaskGroup(of: [(Int, ProducedRecord)].self) { group in
                for (partition, partitionJobs) in grouped {
                    group.addTask {
                        var placed: [(Int, ProducedRecord)] = []
                        for job in partitionJobs {
                            let appended = try await self.appendBatch(topic: topic, partition: partition, batch: job.batch)
                            for (position, index) in job.indexes.enumerated() {
                                placed.append((index, ProducedRecord(partition: partition, offset: appended.baseOffset + Int64(position))))
                            }
                        }
                        return placed
                    }
                }
                for try await placed in group {
                    for (index, produced) in placed { results[index] = produced }
                }
            }
        } catch {
            throw BrokerError.from(error)
        }
        return results
    }

    /// Reads whole batches from `offset` of a partition, waiting up to
    /// `maxWaitMilliseconds` at the end for new ones.
    public func fetch(topic: String, partition: Int, offset: Int64, maxBytes: Int, maxWaitMilliseconds: Int) async throws(BrokerError) -> LogRead {
        let target = try self.partition(topic, partition)
        do {
            let read = try await target.log.read(
                from: offset, maxBytes: max(1, maxBytes), maxWaitNanoseconds: UInt64(max(0, maxWaitMilliseconds)) * 1_000_000)
            target.metrics.bytesOut.increment(by: read.bytes)
            return read
        } catch {
            throw BrokerError.from(log: error)
        }
    }

    /// The first and one-past-last offsets of a partition.
    public func offsets(topic: String, partition: Int) throws(BrokerError) -> (start: Int64, end: Int64) {
        let target = try self.partition(topic, partition)
        return (target.log.startOffset, target.log.endOffset)
    }

    /// The first offset whose record has a timestamp at or after `timestamp`, and
    /// that record's timestamp (Kafka's ListOffsets by time); nil when every record is
    /// older. Segments are skipped by their largest timestamp, then batches by theirs,
    /// then the batch's records are decoded (decompressed if need be).
    public func offset(forTimestamp timestamp: Int64, topic: String, partition: Int) async throws(BrokerError) -> (offset: Int64, timestamp: Int64)? {
        let target = try self.partition(topic, partition)
        let info = target.log.info()
        guard let first = info.segments.first(where: { $0.maxTimestamp >= timestamp && $0.endOffset > $0.baseOffset }) else {
            return nil
        }
        return try await firstRecord(in: target.log, from: max(first.baseOffset, info.startOffset), before: target.log.endOffset) {
            $0 >= timestamp
        }
    }

    /// The first record with the largest timestamp in a partition (Kafka's ListOffsets
    /// with timestamp -3, KIP-734), or nil when the partition is empty. Reads the one
    /// segment whose largest timestamp is the partition's.
    public func offsetOfMaxTimestamp(topic: String, partition: Int) async throws(BrokerError) -> (offset: Int64, timestamp: Int64)? {
        let target = try self.partition(topic, partition)
        let info = target.log.info()
        let candidates = info.segments.filter { $0.endOffset > max($0.baseOffset, info.startOffset) }
        guard let best = candidates.max(by: { $0.maxTimestamp < $1.maxTimestamp }) else { return nil }
        return try await firstRecord(in: target.log, from: max(best.baseOffset, info.startOffset), before: best.endOffset) {
            $0 == best.maxTimestamp
        }
    }

    /// The first record from `start` (before `end`) whose timestamp `matches`, looking
    /// into the batches whose largest timestamp matches. A batch whose records cannot be
    /// decoded (a codec library missing) answers for itself: its first offset from
    /// `start` on, its largest timestamp.
    private func firstRecord(
        in log: Log, from start: Int64, before end: Int64, where matches: (Int64) -> Bool
    ) async throws(BrokerError) -> (offset: Int64, timestamp: Int64)? {
        var offset = start
        while offset < end {
            let read: LogRead
            do { read = try await log.read(from: offset, maxBytes: 1 << 20) } catch { throw BrokerError.from(log: error) }
            if read.batches.isEmpty { break }
            for batch in read.batches {
                guard let header = RecordBatchHeader(from: batch), header.lastOffset >= offset, matches(header.maxTimestamp) else { continue }
                guard let records = try? RecordBatch.records(of: batch) else { return (max(header.baseOffset, offset), header.maxTimestamp) }
                for record in records where record.offset >= offset && matches(record.timestamp) {
                    return (record.offset, record.timestamp)
                }
            }
            offset = read.nextOffset
        }
        return nil
    }

    public func truncate(topic: String, partition: Int, before offset: Int64) async throws(BrokerError) {
        let target = try self.partition(topic, partition)
        do { try await target.log.truncate(before: offset) } catch { throw BrokerError.from(log: error) }
    }

    /// Applies retention to every partition; returns the number of segments deleted.
    @discardableResult
    public func enforceRetention() async -> Int {
        guard writerPolicy == .owned else { return await logs.enforceRetention() }
        // Cluster mode: a log's owner enforces its retention (it alone changes the
        // log's record; the others would only conflict with it).
        let owned = topics.withLock { topics in
            topics.values.flatMap { topic in zip(topic.logs, topic.writers).compactMap { $1 == nil ? nil : $0 } }
        }
        var deleted = 0
        for log in owned {
            do { deleted += try await log.enforceRetention() } catch {
                logger.error("retention failed", metadata: ["log": "\(log.name)", "error": "\(error)"])
            }
        }
        return deleted
    }
}
