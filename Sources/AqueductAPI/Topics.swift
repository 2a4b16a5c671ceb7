/// Topics as clients see them: the settings a topic may override, its description,
/// where produced records went.

/// Settings a topic may override; nil keeps the server's default.
public struct TopicSettings: Codable, Equatable, Sendable {
    public var retentionMs: Int64?
    public var retentionBytes: Int64?
    public var segmentBytes: Int64?
    public var segmentMs: Int64?
    public var maxMessageBytes: Int?
    /// Cluster mode: copies per segment (E), per record (Qw), and acknowledgements a
    /// record waits for (Qa); unset ones follow the cluster's (write and ack capped by
    /// the ensemble).
    public var replicationEnsemble: Int?
    public var replicationWrite: Int?
    public var replicationAck: Int?

    public init(
        retentionMs: Int64? = nil, retentionBytes: Int64? = nil, segmentBytes: Int64? = nil, segmentMs: Int64? = nil, maxMessageBytes: Int? = nil,
        replicationEnsemble: Int? = nil, replicationWrite: Int? = nil, replicationAck: Int? = nil
    ) {
        self.retentionMs = retentionMs
        self.retentionBytes = retentionBytes
        self.segmentBytes = segmentBytes
        self.segmentMs = segmentMs
        self.maxMessageBytes = maxMessageBytes
        self.replicationEnsemble = replicationEnsemble
        self.replicationWrite = replicationWrite
        self.replicationAck = replicationAck
    }
}

/// A topic's settings in effect (the server's defaults with the topic's overrides).
public struct TopicConfiguration: Codable, Equatable, Sendable {
    /// A segment is sealed and a new one started once it would grow past this.
    public var segmentBytes: Int64
    /// ...or once its first entry is this old.
    public var segmentMilliseconds: Int64
    /// Sealed segments whose newest record is older than this are deleted; nil: never.
    public var retentionMilliseconds: Int64?
    /// Oldest sealed segments are deleted while the partition is larger than this; nil: no limit.
    public var retentionBytes: Int64?
    /// Largest record batch accepted (Kafka's max.message.bytes).
    public var batchBytesMax: Int
    /// Cluster mode: copies of each segment, of each record, and acknowledgements a
    /// record waits for (nil on one node).
    public var replicationEnsemble: Int?
    public var replicationWrite: Int?
    public var replicationAck: Int?

    public init(
        segmentBytes: Int64, segmentMilliseconds: Int64, retentionMilliseconds: Int64?, retentionBytes: Int64?, batchBytesMax: Int,
        replicationEnsemble: Int? = nil, replicationWrite: Int? = nil, replicationAck: Int? = nil
    ) {
        self.segmentBytes = segmentBytes
        self.segmentMilliseconds = segmentMilliseconds
        self.retentionMilliseconds = retentionMilliseconds
        self.retentionBytes = retentionBytes
        self.batchBytesMax = batchBytesMax
        self.replicationEnsemble = replicationEnsemble
        self.replicationWrite = replicationWrite
        self.replicationAck = replicationAck
    }
}

public struct ProducedRecord: Sendable, Equatable, Codable {
    public var partition: Int
    public var offset: Int64

    public init(partition: Int, offset: Int64) {
        self.partition = partition
        self.offset = offset
    }
}

public struct PartitionDescription: Sendable, Equatable, Codable {
    public var partition: Int
    public var startOffset: Int64
    public var endOffset: Int64
    public var sizeBytes: Int64
    public var segments: Int

    public init(partition: Int, startOffset: Int64, endOffset: Int64, sizeBytes: Int64, segments: Int) {
        self.partition = partition
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.sizeBytes = sizeBytes
        self.segments = segments
    }
}

public struct TopicDescription: Sendable, Equatable, Codable {
    public var name: String
    public var id: String
    public var partitions: [PartitionDescription]
    public var createdAtMilliseconds: Int64
    public var configuration: TopicConfiguration

    public init(name: String, id: String, partitions: [PartitionDescription], createdAtMilliseconds: Int64, configuration: TopicConfiguration) {
        self.name = name
        self.id = id
        self.partitions = partitions
        self.createdAtMilliseconds = createdAtMilliseconds
        self.configuration = configuration
    }
}

