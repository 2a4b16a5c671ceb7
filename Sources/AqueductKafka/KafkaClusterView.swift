/// What Kafka clients must learn of a cluster (cluster mode): its nodes' Kafka
/// listeners, who leads (owns) each partition, which node coordinates groups. On one
/// node there is none, and the listener answers for itself.
public protocol KafkaClusterView: Sendable {
    /// Every live node's Kafka listener.
    func brokers() -> [(id: Int32, host: String, port: Int32)]
    /// The node writing the partition now; nil while it moves.
    func leader(topic: String, partition: Int) -> Int32?
    /// The node coordinating the consumer group; nil while its shard moves.
    func coordinator(group: String) -> Int32?
}
