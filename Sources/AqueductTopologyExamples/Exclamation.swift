import AqueductTopology

/// Storm's ExclamationTopology: words → "!!!" → "!!!" again.
public enum ExclamationTopology {
    /// Emits words from a fixed list, each with a message id, forever (or `limit` times).
    public struct WordSpout: Spout {
        public static let words: [String] = ["nathan", "mike", "jackson", "golda", "bertels"]
        let limit: Int?
        var next = 0
        var collector: SpoutCollector?

        public init(limit: Int? = nil) { self.limit = limit }

        public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["word"]) }

        public mutating func open(context: TopologyContext, collector: SpoutCollector) throws { self.collector = collector }

        public mutating func nextTuple() {
            if let limit, next >= limit { return }
            let word = Self.words[next % Self.words.count]
            collector?.emit([.string(word)], messageID: .int(Int64(next)))
            next += 1
        }
    }

    public struct ExclamationBolt: Bolt {
        var collector: BoltCollector?
        public init() {}

        public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["word"]) }

        public mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }

        public mutating func execute(_ tuple: Tuple) {
            collector?.emit([.string((tuple.string("word") ?? "") + "!!!")], anchor: tuple)
            collector?.ack(tuple)
        }
    }

    /// words (spout, 1) → exclaim1 (3, shuffle) → exclaim2 (2, shuffle) → `sink`.
    public static func build<Sink: Bolt & SendableMetatype>(wordLimit: Int? = nil, sink: @autoclosure @escaping @Sendable () -> Sink,
                                         config: TopologyConfig = TopologyConfig()) throws(TopologyError) -> Topology {
        let builder = TopologyBuilder()
        builder.setSpout("word", WordSpout(limit: wordLimit))
        builder.setBolt("exclaim1", ExclamationBolt(), parallelism: 3).shuffleGrouping("word")
        builder.setBolt("exclaim2", ExclamationBolt(), parallelism: 2).shuffleGrouping("exclaim1")
        builder.setBolt("sink", sink()).shuffleGrouping("exclaim2")
        return try builder.build(name: "exclamation", config: config)
    }
}
