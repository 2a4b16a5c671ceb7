/// `GET /v1/cluster`: the nodes, which node writes each partition, and what is left to
/// re-replicate (`aqueduct cluster status`). One node answers with itself alone.
public struct ClusterStatusJSON: Codable, Sendable, Equatable {
    public struct Node: Codable, Sendable, Equatable {
        public var id: Int
        public var storage: String?
        public var kafka: String?
        public var http: String?
        public var live: Bool

        public init(id: Int, storage: String?, kafka: String?, http: String?, live: Bool) {
            self.id = id
            self.storage = storage
            self.kafka = kafka
            self.http = http
            self.live = live
        }
    }

    public struct Partition: Codable, Sendable, Equatable {
        public var topic: String
        public var partition: Int
        /// The node writing it; nil while it moves.
        public var owner: Int?

        public init(topic: String, partition: Int, owner: Int?) {
            self.topic = topic
            self.partition = partition
            self.owner = owner
        }
    }

    /// `single` or `cluster`.
    public var mode: String
    /// The node that answered.
    public var nodeID: Int
    public var nodes: [Node]
    public var partitions: [Partition]
    /// Segments still naming a node that is not live (cluster mode).
    public var underReplicatedSegments: Int

    public init(mode: String, nodeID: Int, nodes: [Node], partitions: [Partition], underReplicatedSegments: Int) {
        self.mode = mode
        self.nodeID = nodeID
        self.nodes = nodes
        self.partitions = partitions
        self.underReplicatedSegments = underReplicatedSegments
    }
}

/// What the HTTP API asks of cluster mode (in the server).
public protocol ClusterDirectory: Sendable {
    func status() async throws(BrokerError) -> ClusterStatusJSON
    /// Moves every partition off `node` (or lets it take partitions again).
    func setDraining(_ node: Int, _ draining: Bool) async throws(BrokerError)
    /// `node` is gone for good: its copies are re-replicated now, without the grace period.
    func remove(_ node: Int) async throws(BrokerError)
    /// The HTTP listener (`host:port`) of the node writing the partition, when it is
    /// another node; nil when this node serves it (or nobody does now: then this node
    /// answers, with an error if it must).
    func httpAddress(topic: String, partition: Int) -> String?
    /// The HTTP listener of the node coordinating the group, when it is another node.
    func httpAddress(group: String) -> String?
    /// The HTTP listener of the node running the topology, when it is another node.
    func httpAddress(topology: String) -> String?
    /// The HTTP listeners of the other live nodes.
    func otherNodesHTTP() -> [String]
}

extension ClusterDirectory {
    public func httpAddress(topic: String, partition: Int) -> String? { nil }
    public func httpAddress(group: String) -> String? { nil }
    public func httpAddress(topology: String) -> String? { nil }
    public func otherNodesHTTP() -> [String] { [] }
}
