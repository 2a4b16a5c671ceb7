import AqueductAPI
import AqueductGroups
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductRecords
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// An answer: a response frame, or nil when the response could not be encoded in the
/// request's version (the connection then closes, as the client cannot be answered),
/// and what it holds until it is written (a fetch's read budget).
public struct KafkaAnswer: Sendable {
    public var frame: ByteBuffer?
    let holding: BudgetHold?

    init(_ frame: ByteBuffer?, holding: BudgetHold? = nil) {
        self.frame = frame
        self.holding = holding
    }
}

/// What a request gets: nothing (acks=0), an answer now, or an answer later.
public enum KafkaReply: Sendable {
    case none
    case ready(KafkaAnswer)
    case deferred(@Sendable () async -> KafkaAnswer)
}

/// Units of a `WeightedSemaphore`, given back when the last reference goes.
final class BudgetHold: Sendable {
    let semaphore: WeightedSemaphore
    let units: Int

    init(_ semaphore: WeightedSemaphore, units: Int) {
        self.semaphore = semaphore
        self.units = units
    }

    deinit { semaphore.release(units) }
}

/// Answers Kafka requests with the broker: decodes the header and body with the
/// generated codecs, runs the API, and encodes the response at the request's version.
public final class KafkaRequestHandler: Sendable {
    /// A produce request from its decoding to its answer (appended and, with acks,
    /// durable or replicated): the broker's share of a client's ack latency.
    static let produceTimer = Metrics.Timer(label: "aqueduct_kafka_produce_seconds")
    let broker: Broker
    let listener: KafkaListenerConfiguration
    let clusterID: String
    let logger: Logger
    var nodeID: Int32 { listener.nodeID }
    /// The cluster as Kafka clients see it (cluster mode); nil on one node.
    let cluster: (any KafkaClusterView)?
    /// Broker configs clients set (AlterConfigs on this node): kept and reported by
    /// DescribeConfigs, applied by none, not kept across a restart.
    let brokerConfigs = Mutex<[String: String]>([:])
    let producers: ProducerStateTable
    let groups: GroupShards
    /// Bytes fetches may be reading (and encoding) at once (`kafka.fetchBytesInFlightMax`).
    let fetchReads: WeightedSemaphore
    /// Requests per API (made once: a metrics lookup per request would take the
    /// backend's lock), and requests refused as unsupported or malformed.
    let requestCounters: [Int16: Counter]
    let refusedRequests = Counter(label: "aqueduct_kafka_requests_refused_total")
    /// Responses that could not be encoded (a value too long for its field in the
    /// request's version): a bug to report, answered by closing the connection.
    static let unencodableResponses = Counter(label: "aqueduct_kafka_responses_unencodable_total")
    /// Topics a client named that were not created because of `autoCreateTopicsMax`.
    static let autoCreateRefusals = Counter(label: "aqueduct_kafka_topics_autocreate_refused_total")

    public init(
        broker: Broker, groups: GroupShards, listener: KafkaListenerConfiguration, clusterID: String,
        producerStatesMax: Int = 200_000, producerIDExpirationMilliseconds: Int64 = 86_400_000, cluster: (any KafkaClusterView)? = nil,
        logger: Logger
    ) {
        self.cluster = cluster
        self.broker = broker
        self.groups = groups
        self.listener = listener
        self.clusterID = clusterID
        self.logger = logger
        self.producers = ProducerStateTable(limits: .init(statesMax: producerStatesMax, expirationMilliseconds: producerIDExpirationMilliseconds))
        self.fetchReads = WeightedSemaphore(capacity: max(listener.fetchBytesInFlightMax, listener.fetchBytesMax))
        self.requestCounters = Dictionary(uniqueKeysWithValues: KafkaAPIKey.allCases.map { key in
            (key.rawValue, Counter(label: "aqueduct_kafka_requests_total", dimensions: [("api", "\(key)")]))
        })
    }

    /// Handles a request to the end: the response frame (size prefix included), or nil
    /// when none is due (Produce with acks=0) or the connection must close
    /// (`session.closeAfterResponse`).
    public func handle(frame: ByteBuffer, session: inout KafkaSession) async -> ByteBuffer? {
        switch await dispatch(frame: frame, session: &session) {
        case .none: return nil
        case .ready(let answer): return answer.frame
        case .deferred(let later): return await later().frame
        }
    }

    /// Handles a request up to the point where it would wait (a fetch for records not
    /// there yet, a group join or sync waiting for the other members). The listener
    /// goes on with the connection's next requests meanwhile and still writes the
    /// answers in order: so a producer's request behind a consumer's long-poll on the
    /// same connection (sarama shares one) is not held up by it.
    public func dispatch(frame: ByteBuffer, session: inout KafkaSession) async -> KafkaReply {
        // The frame decoder lets through only frames with key, version and correlation id.
        guard let rawKey: Int16 = frame.getInteger(at: frame.readerIndex),
            let version: Int16 = frame.getInteger(at: frame.readerIndex + 2),
            let correlationID: Int32 = frame.getInteger(at: frame.readerIndex + 4)
        else {
            refusedRequests.increment()
            session.closeAfterResponse = true
            return .none
        }
        guard let key = KafkaAPIKey(rawValue: rawKey), let served = KafkaAPIVersions.served[key], served.contains(version) else {
            refusedRequests.increment()
            logger.debug("unsupported Kafka request", metadata: ["apiKey": "\(rawKey)", "version": "\(version)", "peer": "\(session.peer)"])
            if rawKey == KafkaAPIKey.apiVersions.rawValue {
                return .ready(KafkaAnswer(unsupportedApiVersions(correlationID: correlationID)))
            }
            // As Kafka does: a request it cannot read in its version is answered by
            // closing the connection. A bare error code is no answer either, since a
            // client reads the body in the shape of the version it sent.
            session.closeAfterResponse = true
            return .none
        }
        requestCounters[rawKey]?.increment()
        let flexible = KafkaAPIVersions.isFlexible(key, version)
        var reader = KafkaReader(frame)
        do throws(KafkaProtocolError) {
            let header = try RequestHeader(from: &reader, version: flexible ? 2 : 1)
            session.clientID = header.clientId
            // ApiVersions' response header stays v0 so any client can read it.
            let flexibleResponse = flexible && key != .apiVersions
            let logger = self.logger
            @Sendable func later(_ message: some KafkaMessage, holding: BudgetHold? = nil) -> KafkaAnswer {
                KafkaAnswer(
                    Self.frame(
                        message, key: key, version: version, correlationID: correlationID, flexibleHeader: flexibleResponse,
                        capacity: Self.capacity(for: message), logger: logger),
                    holding: holding)
            }
            func respond(_ message: some KafkaMessage) -> KafkaReply { .ready(later(message)) }
            switch key {
            case .apiVersions:
                _ = try ApiVersionsRequest(from: &reader, version: version)
                return respond(apiVersions(errorCode: KafkaErrorCode.none))
            case .metadata:
                return respond(await metadata(try MetadataRequest(from: &reader, version: version), version: version))
            case .produce:
                let received = monotonicNanoseconds()
                let request = try ProduceRequest(from: &reader, version: version)
                let queued = await queueProduce(request)
                if request.acks == 0 { return .none }
                return .deferred { [self] in
                    let response = await finishProduce(queued)
                    Self.produceTimer.recordNanoseconds(Int64(monotonicNanoseconds() &- received))
                    return later(response)
                }
            case .fetch:
                var request = try FetchRequest(from: &reader, version: version)
                // Waits and sizes are clamped to the configured maxima (a client cannot
                // park a fetch for 24 days, or ask for a 2 GiB answer).
                let waitMilliseconds = min(max(0, Int(request.maxWaitMs)), listener.fetchWaitMillisecondsMax)
                request.maxBytes = Int32(truncatingIfNeeded: request.maxBytes <= 0 ? listener.fetchBytesMax : min(Int(request.maxBytes), listener.fetchBytesMax))
                let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(waitMilliseconds) * 1_000_000
                // The read budget an answer took stays with it until it is written:
                // answers a client does not read hold it, and other fetches wait.
                let (response, ticket, reserved) = await fetchPass(request, deadline: deadline)
                guard let ticket else { return .ready(later(response, holding: BudgetHold(fetchReads, units: reserved))) }
                return .deferred { [self, request] in
                    let (response, reserved) = await fetchWaiting(request, ticket: ticket, deadline: deadline)
                    return later(response, holding: BudgetHold(fetchReads, units: reserved))
                }
            case .listOffsets:
                return respond(await listOffsets(try ListOffsetsRequest(from: &reader, version: version), version: version))
            case .findCoordinator:
                return respond(findCoordinator(try FindCoordinatorRequest(from: &reader, version: version)))
            case .createTopics:
                return respond(await createTopics(try CreateTopicsRequest(from: &reader, version: version)))
            case .deleteTopics:
                return respond(await deleteTopics(try DeleteTopicsRequest(from: &reader, version: version)))
            case .createPartitions:
                return respond(await createPartitions(try CreatePartitionsRequest(from: &reader, version: version)))
            case .initProducerId:
                return respond(initProducerID(try InitProducerIdRequest(from: &reader, version: version)))
            case .describeConfigs:
                return respond(describeConfigs(try DescribeConfigsRequest(from: &reader, version: version)))
            case .joinGroup:
                let request = try JoinGroupRequest(from: &reader, version: version)
                let client = session
                return .deferred { [self] in later(await joinGroup(request, version: version, session: client)) }
            case .syncGroup:
                let request = try SyncGroupRequest(from: &reader, version: version)
                return .deferred { [self] in later(await syncGroup(request)) }
            case .heartbeat:
                return respond(heartbeat(try HeartbeatRequest(from: &reader, version: version)))
            case .leaveGroup:
                return respond(leaveGroup(try LeaveGroupRequest(from: &reader, version: version), version: version))
            case .offsetCommit:
                return respond(await offsetCommit(try OffsetCommitRequest(from: &reader, version: version)))
            case .offsetFetch:
                return respond(offsetFetch(try OffsetFetchRequest(from: &reader, version: version), version: version))
            case .describeGroups:
                return respond(describeGroups(try DescribeGroupsRequest(from: &reader, version: version)))
            case .listGroups:
                return respond(listGroups(try ListGroupsRequest(from: &reader, version: version)))
            case .deleteGroups:
                return respond(await deleteGroups(try DeleteGroupsRequest(from: &reader, version: version)))
            case .alterConfigs:
                return respond(await alterConfigs(try AlterConfigsRequest(from: &reader, version: version)))
            case .incrementalAlterConfigs:
                return respond(await incrementalAlterConfigs(try IncrementalAlterConfigsRequest(from: &reader, version: version)))
            case .deleteRecords:
                return respond(await deleteRecords(try DeleteRecordsRequest(from: &reader, version: version)))
            case .offsetDelete:
                return respond(await offsetDelete(try OffsetDeleteRequest(from: &reader, version: version)))
            }
        } catch {
            // The stream is still framed, but this request cannot be answered in its
            // own format: Kafka closes the connection, and so does Aqueduct.
            logger.info("malformed Kafka request; closing the connection", metadata: [
                "apiKey": "\(rawKey)", "version": "\(version)", "peer": "\(session.peer)", "error": "\(error)",
            ])
            refusedRequests.increment()
            session.closeAfterResponse = true
            return .none
        }
    }

    /// Room for a response: fetches carry their record batches.
    static func capacity(for message: some KafkaMessage) -> Int {
        guard let fetch = message as? FetchResponse else { return 256 }
        return fetch.responses.reduce(256) { $0 + $1.partitions.reduce(0) { $0 + ($1.records?.readableBytes ?? 0) + 64 } }
    }

    /// A response frame: size, correlation id, tagged fields (flexible header), body.
    /// Nil when a value does not fit its field in this version (or the frame its 32-bit
    /// size): the request is then answered by closing the connection, never by a trap.
    static func frame(
        _ message: some KafkaMessage, key: KafkaAPIKey, version: Int16, correlationID: Int32, flexibleHeader: Bool, capacity: Int,
        logger: Logger
    ) -> ByteBuffer? {
        var writer = KafkaWriter(capacity: capacity)
        writer.writeInt32(0)
        writer.writeInt32(correlationID)
        if flexibleHeader { writer.writeUnsignedVarint(0) }
        message.encode(to: &writer, version: version)
        let size = writer.buffer.readableBytes - 4
        if let failure = writer.failure ?? (size > Int(Int32.max) ? KafkaEncodingError(kind: "response", length: size, limit: Int(Int32.max)) : nil) {
            unencodableResponses.increment()
            logger.error("a Kafka response could not be encoded; closing the connection (please report this)", metadata: [
                "api": "\(key)", "version": "\(version)", "reason": "\(failure)",
            ])
            return nil
        }
        writer.buffer.setInteger(Int32(truncatingIfNeeded: size), at: writer.buffer.readerIndex)
        return writer.buffer
    }

    /// UNSUPPORTED_VERSION for an ApiVersions version not served: a v0 response with
    /// the supported ranges (KIP-511), so the client can retry with a version it shares.
    func unsupportedApiVersions(correlationID: Int32) -> ByteBuffer {
        Self.frame(
            apiVersions(errorCode: KafkaErrorCode.unsupportedVersion), key: .apiVersions, version: 0, correlationID: correlationID,
            flexibleHeader: false, capacity: 256, logger: logger)!
    }

    // MARK: - ApiVersions and Metadata

    func apiVersions(errorCode: Int16) -> ApiVersionsResponse {
        var response = ApiVersionsResponse()
        response.errorCode = errorCode
        response.apiKeys = KafkaAPIKey.allCases.compactMap { key in
            KafkaAPIVersions.advertised(key).map {
                ApiVersionsResponse.ApiVersion(apiKey: key.rawValue, minVersion: $0.lowerBound, maxVersion: $0.upperBound)
            }
        }
        return response
    }

    var advertisedBroker: MetadataResponse.MetadataResponseBroker {
        let (host, port) = listener.advertised
        return MetadataResponse.MetadataResponseBroker(nodeId: nodeID, host: host, port: Int32(port), rack: nil)
    }

    func metadata(_ request: MetadataRequest, version: Int16) async -> MetadataResponse {
        var response = MetadataResponse()
        if let cluster {
            response.brokers = cluster.brokers().map {
                MetadataResponse.MetadataResponseBroker(nodeId: $0.id, host: $0.host, port: $0.port, rack: nil)
            }
        } else {
            response.brokers = [advertisedBroker]
        }
        response.clusterId = clusterID
        response.controllerId = nodeID
        // v0: an empty list means every topic; v1+: null means every topic.
        let requested: [String]?
        if let topics = request.topics, !(version == 0 && topics.isEmpty) {
            requested = topics.compactMap(\.name)
        } else {
            requested = nil
        }
        let autoCreate = (version < 4 || request.allowAutoTopicCreation) && listener.autoCreatePartitions > 0
        for name in requested ?? broker.topicNames() {
            var topic = MetadataResponse.MetadataResponseTopic()
            topic.name = name
            let description = try? broker.describeTopic(name)
            if description == nil && autoCreate && requested != nil, await autoCreateTopic(name) != nil {
                // As Kafka: the request that creates a topic learns LEADER_NOT_AVAILABLE
                // and no partitions; the client asks again and finds them.
                topic.errorCode = KafkaErrorCode.leaderNotAvailable
                response.topics.append(topic)
                continue
            }
            guard let description else {
                topic.errorCode = (try? Broker.validateTopicName(name)) == nil
                    ? KafkaErrorCode.invalidTopicException : KafkaErrorCode.unknownTopicOrPartition
                response.topics.append(topic)
                continue
            }
            topic.topicId = KafkaUUID(uuidString: description.id) ?? .zero
            topic.partitions = description.partitions.map { partition in
                // Cluster mode: the partition's owner leads it; while it moves, Kafka's
                // LEADER_NOT_AVAILABLE makes clients ask again.
                let leader = cluster.map { $0.leader(topic: name, partition: partition.partition) } ?? nodeID
                return MetadataResponse.MetadataResponsePartition(
                    errorCode: leader == nil ? KafkaErrorCode.leaderNotAvailable : 0, partitionIndex: Int32(partition.partition),
                    leaderId: leader ?? -1, leaderEpoch: 0, replicaNodes: leader.map { [$0] } ?? [], isrNodes: leader.map { [$0] } ?? [],
                    offlineReplicas: [])
            }
            response.topics.append(topic)
        }
        return response
    }

    /// Creates a topic a client names before it exists (Kafka's auto.create.topics.enable).
    /// At most `autoCreateTopicsMax` topics may exist for it to create one more, so a
    /// client naming random topics cannot fill the disk with empty logs.
    func autoCreateTopic(_ name: String) async -> TopicDescription? {
        guard broker.topicNames().count < listener.autoCreateTopicsMax else {
            Self.autoCreateRefusals.increment()
            logger.warning("topic not created automatically: the server has kafka.autoCreateTopicsMax topics", metadata: [
                "topic": "\(name.utf8Prefix(64))", "limit": "\(listener.autoCreateTopicsMax)",
            ])
            return nil
        }
        do {
            let created = try await broker.createTopic(name, partitions: listener.autoCreatePartitions, topicsMax: listener.autoCreateTopicsMax)
            logger.info("topic created on first use by a Kafka client", metadata: ["topic": "\(name)"])
            return created
        } catch {
            if error.code == .limitReached { Self.autoCreateRefusals.increment() }
            return try? broker.describeTopic(name)  // created meanwhile by another request
        }
    }

    func findCoordinator(_ request: FindCoordinatorRequest) -> FindCoordinatorResponse {
        var response = FindCoordinatorResponse()
        if let cluster {
            guard let coordinator = cluster.coordinator(group: request.key), let node = cluster.brokers().first(where: { $0.id == coordinator }) else {
                response.errorCode = KafkaErrorCode.coordinatorNotAvailable
                return response
            }
            response.nodeId = node.id
            response.host = node.host
            response.port = node.port
            return response
        }
        let (host, port) = listener.advertised
        response.nodeId = nodeID
        response.host = host
        response.port = Int32(port)
        return response
    }

    // MARK: - Produce

    /// A partition's part of a produce request once its batches are queued: the answer
    /// so far, and the batches whose durability it still waits for.
    struct QueuedPartition: Sendable {
        var result: ProduceResponse.PartitionProduceResponse
        /// Queued batches and their producer ids (-1: not idempotent).
        var queued: [(batch: Broker.QueuedBatch, producerID: Int64)] = []
    }

    /// Queues every batch of the request, partition after partition in request order
    /// (so the connection's next request is queued behind them), without waiting for
    /// the journal; `finishProduce` waits and builds the answer. Answering in two steps
    /// lets a client's next produce request join the same group commit.
    func queueProduce(_ request: ProduceRequest) async -> [(topic: String, partitions: [QueuedPartition])] {
        let validAcks = request.acks == 0 || request.acks == 1 || request.acks == -1
        var queued: [(topic: String, partitions: [QueuedPartition])] = []
        for topic in request.topicData {
            var partitions: [QueuedPartition] = []
            for partition in topic.partitionData {
                guard validAcks else {
                    partitions.append(QueuedPartition(result: .init(index: partition.index, errorCode: KafkaErrorCode.invalidRequiredAcks)))
                    continue
                }
                partitions.append(await queuePartition(topic: topic.name, partition: partition))
            }
            queued.append((topic.name, partitions))
        }
        return queued
    }

    /// Waits for the queued batches and answers.
    func finishProduce(_ queued: [(topic: String, partitions: [QueuedPartition])]) async -> ProduceResponse {
        var response = ProduceResponse()
        for (topic, partitions) in queued {
            var topicResponse = ProduceResponse.TopicProduceResponse()
            topicResponse.name = topic
            for var partition in partitions {
                for (batch, producerID) in partition.queued {
                    do throws(BrokerError) {
                        _ = try await batch.durable()
                    } catch {
                        // The storage node fails every write after a failed one: the
                        // producer's later batches are refused too, and it resends.
                        if partition.result.errorCode == 0 {
                            partition.result.errorCode = KafkaErrorCode.from(error)
                            partition.result.errorMessage = Self.shortened(error.message)
                        }
                        producers.forget(batch.result, producerID: producerID, partition: TopicPartition(topic, Int(partition.result.index)))
                    }
                }
                if partition.result.errorCode == 0 {
                    partition.result.logStartOffset = (try? broker.offsets(topic: topic, partition: Int(partition.result.index)).start) ?? -1
                }
                topicResponse.partitionResponses.append(partition.result)
            }
            response.responses.append(topicResponse)
        }
        return response
    }

    func queuePartition(topic: String, partition: ProduceRequest.PartitionProduceData) async -> QueuedPartition {
        var queued = QueuedPartition(result: ProduceResponse.PartitionProduceResponse(index: partition.index))
        guard let records = partition.records, records.readableBytes > 0 else {
            queued.result.errorCode = KafkaErrorCode.invalidRecord
            queued.result.errorMessage = "no record batch"
            return queued
        }
        let target = TopicPartition(topic, Int(partition.index))
        if (try? broker.partitionCount(topic)) == nil, listener.autoCreatePartitions > 0 {
            _ = await autoCreateTopic(topic)
        }
        do throws(BrokerError) {
            _ = try broker.offsets(topic: topic, partition: target.partition)
        } catch {
            queued.result.errorCode = KafkaErrorCode.from(error)
            queued.result.errorMessage = Self.shortened(error.message)
            return queued
        }
        // A request may carry several batches; each is validated and stored as sent.
        var index = records.readerIndex
        var first: Int64?
        while index < records.writerIndex {
            guard let header = RecordBatchHeader(from: records, at: index), header.totalSize <= records.writerIndex - index,
                header.totalSize >= RecordBatchHeader.size, let batch = records.getSlice(at: index, length: header.totalSize)
            else {
                queued.result.errorCode = KafkaErrorCode.corruptMessage
                queued.result.errorMessage = "the records do not hold whole record batches"
                return queued
            }
            guard header.magic == 2 else {
                queued.result.errorCode = KafkaErrorCode.unsupportedForMessageFormat
                queued.result.errorMessage = "message format v\(header.magic) is not supported; use a client that sends v2 record batches (Kafka 0.11+)"
                return queued
            }
            index += header.totalSize
            if header.producerId >= 0 { await producers.restoreIfNeeded(partition: target, broker: broker) }
            // The sequence check and the record of the batch happen under the log's
            // lock as its offsets are assigned: a batch retried on two connections at
            // once is stored once. Recorded when queued, so the producer's next batch
            // (maybe in the next request, before this one is durable) follows it;
            // forgotten if it fails.
            var verdict = ProducerStateTable.Verdict.append
            do throws(BrokerError) {
                let producers = self.producers
                let batchQueued = try await broker.submitBatch(topic: topic, partition: target.partition, batch: batch) { baseOffset in
                    verdict = producers.admit(header, partition: target, baseOffset: baseOffset)
                    return verdict == .append
                }
                if let batchQueued {
                    queued.queued.append((batchQueued, header.producerId))
                    first = first ?? batchQueued.result.baseOffset
                    continue
                }
            } catch {
                if verdict == .append, header.producerId >= 0 {
                    // Recorded, then refused by the storage node: forget it so a retry is stored.
                    producers.forgetLast(producerID: header.producerId, partition: target)
                }
                queued.result.errorCode = KafkaErrorCode.from(error)
                queued.result.errorMessage = Self.shortened(error.message)
                return queued
            }
            switch verdict {
            case .append:
                continue
            case .duplicate(let baseOffset):
                // A retry of a batch already stored: answer as the first time.
                first = first ?? baseOffset
            case .reject(let code, let message):
                queued.result.errorCode = code
                queued.result.errorMessage = message
                return queued
            }
        }
        queued.result.baseOffset = first ?? -1
        return queued
    }

    /// An error message in a response: the first `errorMessageBytesMax` bytes, so that
    /// a client's long name quoted in it cannot make the response unencodable.
    static func shortened(_ message: String) -> String {
        message.utf8Prefix(errorMessageBytesMax)
    }

    /// Longest error message in a response, in bytes.
    static let errorMessageBytesMax = 1_024

    // MARK: - Fetch

    /// Reads the requested partitions once. Returns a ticket to wait on when the answer
    /// should wait for more records (fewer than `min_bytes`, before the deadline); the
    /// ticket is registered before the read, so an append meanwhile is not missed.
    func fetchPass(_ request: FetchRequest, deadline: UInt64) async -> (FetchResponse, AppendNotifier.Ticket?, reserved: Int) {
        let partitions = request.topics.flatMap { topic in topic.partitions.map { TopicPartition(topic.topic, Int($0.partition)) } }
        let ticket = broker.appends.register(partitions)
        // The most this pass can read, taken from the budget of fetch reads in flight
        // before reading: many large fetches at once wait their turn instead of all
        // holding their answers (and the copies encoding makes) together.
        let reserved = await fetchReads.acquire(readEstimate(request))
        let response = await fetchOnce(request)
        let bytes = response.responses.reduce(0) { $0 + $1.partitions.reduce(0) { $0 + ($1.records?.readableBytes ?? 0) } }
        let errors = response.responses.contains { $0.partitions.contains { $0.errorCode != 0 } }
        if bytes >= max(1, Int(request.minBytes)) || errors || DispatchTime.now().uptimeNanoseconds >= deadline {
            broker.appends.cancel(ticket)
            return (response, nil, reserved)
        }
        fetchReads.release(reserved)
        return (response, ticket, 0)
    }

    /// An upper bound of what a fetch pass reads: for each partition with records past
    /// the fetch offset, its `partition_max_bytes` (at least one batch of the topic's
    /// largest size, which Kafka lets through), over all capped by `max_bytes`.
    /// Tailing fetches (nothing new yet) reserve nothing.
    func readEstimate(_ request: FetchRequest) -> Int {
        var total = 0
        for topic in request.topics {
            for partition in topic.partitions {
                guard let (_, end) = try? broker.offsets(topic: topic.topic, partition: Int(partition.partition)),
                    partition.fetchOffset < end
                else { continue }
                let batchMax = broker.batchBytesMax(topic.topic) ?? (1 << 20)
                total += max(Int(partition.partitionMaxBytes), batchMax)
                if total >= Int(request.maxBytes) { return max(Int(request.maxBytes), batchMax) }
            }
        }
        return total
    }

    /// Waits for appends to the fetched partitions until `min_bytes` are there or the
    /// deadline passes. Returns the answer and the read budget it holds.
    func fetchWaiting(_ request: FetchRequest, ticket: AppendNotifier.Ticket, deadline: UInt64) async -> (FetchResponse, reserved: Int) {
        var ticket = ticket
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            if now < deadline { _ = await broker.appends.wait(ticket, timeoutNanoseconds: deadline - now) } else { broker.appends.cancel(ticket) }
            // The connection closed: answer with what is there (nobody reads it) and
            // let go of everything at once.
            let (response, next, reserved) = await fetchPass(request, deadline: Task.isCancelled ? 0 : deadline)
            guard let next else { return (response, reserved) }
            ticket = next
        }
    }

    /// One pass over the requested partitions, without waiting.
    func fetchOnce(_ request: FetchRequest) async -> FetchResponse {
        var response = FetchResponse()
        var budget = request.maxBytes > 0 ? Int(request.maxBytes) : Int.max
        // Kafka's rule: until a partition has returned records, its first batch may
        // pass the limits (so a consumer always progresses); after that, nothing may.
        var minOneBatch = true
        for topic in request.topics {
            var topicResponse = FetchResponse.FetchableTopicResponse()
            topicResponse.topic = topic.topic
            for partition in topic.partitions {
                var data = FetchResponse.PartitionData()
                data.partitionIndex = partition.partition
                data.records = ByteBuffer()
                do {
                    let (start, end) = try broker.offsets(topic: topic.topic, partition: Int(partition.partition))
                    data.highWatermark = end
                    data.lastStableOffset = end
                    data.logStartOffset = start
                    let limit = min(Int(max(partition.partitionMaxBytes, 1)), budget)
                    if limit > 0 && partition.fetchOffset < end || partition.fetchOffset > end || partition.fetchOffset < start {
                        let read = try await broker.fetch(
                            topic: topic.topic, partition: Int(partition.partition), offset: partition.fetchOffset,
                            maxBytes: max(limit, 1), maxWaitMilliseconds: 0)
                        if minOneBatch || read.bytes <= limit {
                            data.records = Self.concatenate(read.batches)
                            budget -= read.bytes
                            if read.bytes > 0 { minOneBatch = false }
                        }
                        data.highWatermark = read.endOffset
                        data.lastStableOffset = read.endOffset
                        data.logStartOffset = read.startOffset
                    }
                } catch {
                    data.errorCode = KafkaErrorCode.from(error)
                }
                topicResponse.partitions.append(data)
            }
            response.responses.append(topicResponse)
        }
        return response
    }

    static func concatenate(_ batches: [ByteBuffer]) -> ByteBuffer {
        if batches.count == 1 { return batches[0] }
        var joined = ByteBufferAllocator().buffer(capacity: batches.reduce(0) { $0 + $1.readableBytes })
        for var batch in batches { joined.writeBuffer(&batch) }
        return joined
    }

    // MARK: - ListOffsets

    func listOffsets(_ request: ListOffsetsRequest, version: Int16) async -> ListOffsetsResponse {
        var response = ListOffsetsResponse()
        for topic in request.topics {
            var topicResponse = ListOffsetsResponse.ListOffsetsTopicResponse(name: topic.name)
            for partition in topic.partitions {
                var result = ListOffsetsResponse.ListOffsetsPartitionResponse(partitionIndex: partition.partitionIndex)
                do {
                    let (start, end) = try broker.offsets(topic: topic.name, partition: Int(partition.partitionIndex))
                    result.timestamp = -1
                    switch partition.timestamp {
                    case -1: result.offset = end  // latest
                    case -2: result.offset = start  // earliest
                    case -3:  // the record with the largest timestamp (v7+)
                        if let found = try await broker.offsetOfMaxTimestamp(topic: topic.name, partition: Int(partition.partitionIndex)) {
                            result.offset = found.offset
                            result.timestamp = found.timestamp
                        } else {
                            result.offset = -1
                        }
                    default:
                        if let found = try await broker.offset(forTimestamp: partition.timestamp, topic: topic.name, partition: Int(partition.partitionIndex)) {
                            result.offset = found.offset
                            result.timestamp = found.timestamp
                        } else {
                            result.offset = -1
                        }
                    }
                    result.leaderEpoch = 0
                } catch {
                    result.errorCode = KafkaErrorCode.from(error)
                    result.offset = -1
                }
                topicResponse.partitions.append(result)
            }
            response.topics.append(topicResponse)
        }
        return response
    }

    // MARK: - Topics

    func deleteTopics(_ request: DeleteTopicsRequest) async -> DeleteTopicsResponse {
        var response = DeleteTopicsResponse()
        let names = request.topicNames + request.topics.compactMap(\.name)
        for name in names {
            var result = DeleteTopicsResponse.DeletableTopicResult(name: name)
            do throws(BrokerError) {
                try await broker.deleteTopic(name)
            } catch {
                result.errorCode = KafkaErrorCode.from(error)
                result.errorMessage = Self.shortened(error.message)
            }
            response.responses.append(result)
        }
        return response
    }

    func createPartitions(_ request: CreatePartitionsRequest) async -> CreatePartitionsResponse {
        var response = CreatePartitionsResponse()
        for topic in request.topics {
            var result = CreatePartitionsResponse.CreatePartitionsTopicResult(name: topic.name)
            do throws(BrokerError) {
                // A manual assignment may name this node alone, one per new partition.
                if let assignments = topic.assignments, !assignments.isEmpty {
                    let current = try broker.partitionCount(topic.name)
                    guard assignments.count == Int(topic.count) - current else {
                        throw BrokerError(.invalidReplicaAssignment,
                            "the assignment names \(assignments.count) partitions; \(Int(topic.count) - current) are added")
                    }
                    for assignment in assignments where assignment.brokerIds != [nodeID] {
                        throw BrokerError(.invalidReplicaAssignment,
                            "a partition is assigned to nodes \(assignment.brokerIds.prefix(8)); this server is node \(nodeID) alone")
                    }
                }
                _ = try await broker.addPartitions(topic.name, count: Int(topic.count), validateOnly: request.validateOnly)
            } catch {
                result.errorCode = KafkaErrorCode.from(error)
                result.errorMessage = Self.shortened(error.message)
            }
            response.results.append(result)
        }
        return response
    }

    // MARK: - Idempotent producers

    func initProducerID(_ request: InitProducerIdRequest) -> InitProducerIdResponse {
        var response = InitProducerIdResponse()
        if let transactionalID = request.transactionalId, !transactionalID.isEmpty {
            response.errorCode = KafkaErrorCode.invalidRequest
            return response
        }
        let (id, epoch) = producers.allocate(existing: request.producerId, epoch: request.producerEpoch)
        response.producerId = id
        response.producerEpoch = epoch
        return response
    }
}
