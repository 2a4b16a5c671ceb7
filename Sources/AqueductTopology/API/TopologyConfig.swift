/// Topology-wide settings. Limits carry their unit in the name.
public struct TopologyConfig: Sendable {
    public enum Reliability: String, Sendable {
        /// No tuple tracking: spout tuples are acked when emitted (acking off).
        case atMostOnce = "at-most-once"
        /// Storm's XOR tracking of tuple trees: a spout tuple is acked when every tuple
        /// of its tree was acked, failed on any fail or after `messageTimeoutMilliseconds`.
        case atLeastOnce = "at-least-once"
    }

    public var reliability: Reliability = .atLeastOnce
    /// A spout tuple whose tree is not complete after this long is failed (Storm: 30 s).
    public var messageTimeoutMilliseconds: Int = 30_000
    /// Unacked spout tuples per spout task beyond which `nextTuple` is not called
    /// (nil: no limit other than backpressure).
    public var maxSpoutPending: Int? = nil
    /// Heron's backpressure: when a bolt instance's input queue holds this many tuples,
    /// every spout stops until it is back at `queueLowWatermarkTuples`.
    public var queueHighWatermarkTuples: Int = 8_192
    public var queueLowWatermarkTuples: Int = 4_096
    /// Hard bound of an input queue: an emitting bolt waits beyond it (the graph has no
    /// cycles, so the wait ends).
    public var queueCapacityTuples: Int = 16_384
    /// Tuples buffered per destination task before they are handed over together.
    public var emitBatchTuples: Int = 256
    /// Runs a bolt whose only input is a local-or-shuffle (or none) subscription to a
    /// component of the same parallelism on the upstream task's thread, called from
    /// its emit (Flink's operator chaining). Saves a queue and a thread hand-over per
    /// tuple; the chained bolts share their head task's thread, so a slow one slows
    /// the chain, and their execute latency and queue depth are not measured.
    public var chaining: Bool = false
    /// Containers (processes) the tasks are spread over in service mode.
    public var containers: Int = 1
    /// Seed of the instances' random choices (shuffle, tuple ids); nil: random.
    public var seed: UInt64? = nil
    /// Settings every component sees in its context (components may override).
    public var settings: [String: TupleValue] = [:]

    public init() {}

    var problems: [String] {
        var found: [String] = []
        if messageTimeoutMilliseconds < 1 { found.append("messageTimeoutMilliseconds must be at least 1 (is \(messageTimeoutMilliseconds))") }
        if let pending = maxSpoutPending, pending < 1 { found.append("maxSpoutPending must be at least 1 or nil (is \(pending))") }
        if queueLowWatermarkTuples < 0 || queueLowWatermarkTuples >= queueHighWatermarkTuples {
            found.append("queueLowWatermarkTuples (\(queueLowWatermarkTuples)) must be at least 0 and below queueHighWatermarkTuples (\(queueHighWatermarkTuples))")
        }
        if queueCapacityTuples < queueHighWatermarkTuples {
            found.append("queueCapacityTuples (\(queueCapacityTuples)) must be at least queueHighWatermarkTuples (\(queueHighWatermarkTuples))")
        }
        if emitBatchTuples < 1 { found.append("emitBatchTuples must be at least 1 (is \(emitBatchTuples))") }
        if containers < 1 { found.append("containers must be at least 1 (is \(containers))") }
        return found
    }
}

/// Settings of one component, set through the builder.
public struct ComponentConfig: Sendable {
    /// Seconds between tick tuples sent to the bolt (nil: none).
    public var tickFrequencySeconds: Double? = nil
    public var settings: [String: TupleValue] = [:]
}
