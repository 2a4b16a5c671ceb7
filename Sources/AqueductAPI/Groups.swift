/// Consumer groups as clients see them (`GET /v1/groups`, `aqueduct group`).

public struct GroupSummary: Codable, Equatable, Sendable {
    public var name: String
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead (Kafka's names).
    public var state: String
    public var members: Int
    /// Records not yet consumed, over every partition with a committed offset.
    public var lag: Int64

    public init(name: String, state: String, members: Int, lag: Int64) {
        self.name = name
        self.state = state
        self.members = members
        self.lag = lag
    }
}

public struct GroupDescription: Codable, Equatable, Sendable {
    public struct Member: Codable, Equatable, Sendable {
        public var memberID: String
        public var instanceID: String?
        public var clientID: String
        public var clientHost: String
        /// Topic → partitions, as the group's leader assigned them (consumer protocol).
        public var assignment: [String: [Int]]

        public init(memberID: String, instanceID: String?, clientID: String, clientHost: String, assignment: [String: [Int]]) {
            self.memberID = memberID
            self.instanceID = instanceID
            self.clientID = clientID
            self.clientHost = clientHost
            self.assignment = assignment
        }
    }

    public struct PartitionOffset: Codable, Equatable, Sendable {
        public var topic: String
        public var partition: Int
        public var committedOffset: Int64
        public var endOffset: Int64
        public var lag: Int64
        public var metadata: String?
        /// The member consuming the partition now, if any.
        public var memberID: String?

        public init(topic: String, partition: Int, committedOffset: Int64, endOffset: Int64, lag: Int64, metadata: String?, memberID: String?) {
            self.topic = topic
            self.partition = partition
            self.committedOffset = committedOffset
            self.endOffset = endOffset
            self.lag = lag
            self.metadata = metadata
            self.memberID = memberID
        }
    }

    public var name: String
    public var state: String
    public var protocolType: String
    /// The assignment strategy chosen (range, roundrobin, cooperative-sticky, ...).
    public var assignmentProtocol: String
    public var generation: Int32
    public var members: [Member]
    public var offsets: [PartitionOffset]

    public init(
        name: String, state: String, protocolType: String, assignmentProtocol: String, generation: Int32, members: [Member],
        offsets: [PartitionOffset]
    ) {
        self.name = name
        self.state = state
        self.protocolType = protocolType
        self.assignmentProtocol = assignmentProtocol
        self.generation = generation
        self.members = members
        self.offsets = offsets
    }

    public var lag: Int64 { offsets.reduce(0) { $0 + $1.lag } }
}
