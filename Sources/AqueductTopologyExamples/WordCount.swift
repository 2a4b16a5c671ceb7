import AqueductTopology

/// Storm's WordCount: sentences → split into words → count per word (fields grouping).
public enum WordCountTopology {
    public static let sentences: [String] = [
        "the cow jumped over the moon",
        "an apple a day keeps the doctor away",
        "four score and seven years ago",
        "snow white and the seven dwarfs",
        "i am at two with nature",
    ]

    /// Emits `sentences` in turn, `limit` sentences in all (nil: forever), each with
    /// its sequence number as message id; replays failed ones.
    public struct SentenceSpout: Spout {
        let limit: Int?
        var next = 0
        var replay: [Int64] = []
        var collector: SpoutCollector?

        public init(limit: Int? = nil) { self.limit = limit }

        public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["sentence", "seq"]) }

        public mutating func open(context: TopologyContext, collector: SpoutCollector) throws { self.collector = collector }

        public mutating func nextTuple() {
            let seq: Int64
            if let failed = replay.popLast() {
                seq = failed
            } else {
                if let limit, next >= limit { return }
                seq = Int64(next)
                next += 1
            }
            let sentence = WordCountTopology.sentences[Int(seq) % WordCountTopology.sentences.count]
            collector?.emit([.string(sentence), .int(seq)], messageID: .int(seq))
        }

        public mutating func fail(_ messageID: TupleValue) {
            if let seq = messageID.intValue { replay.append(seq) }
        }
    }

    public struct SplitSentence: BasicBolt {
        let field: String
        public init(field: String = "sentence") { self.field = field }
        public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["word"]) }
        public mutating func execute(_ tuple: Tuple, collector: BasicCollector) throws {
            // Split at space bytes (UTF-8 never has 0x20 inside a character): no
            // grapheme breaking per character.
            for word in (tuple.string(field) ?? "").utf8.split(separator: UInt8(ascii: " ")) {
                collector.emit([.string(String(Substring(word)))])
            }
        }
    }

    /// Counts words; emits (word, count) on every update.
    public struct WordCount: BasicBolt {
        var counts: [String: Int64] = [:]
        public init() {}
        public func declareOutputFields(_ declarer: inout OutputDeclarer) { declarer.declare(["word", "count"]) }
        public mutating func execute(_ tuple: Tuple, collector: BasicCollector) throws {
            guard let word = tuple.string("word") else { return }
            let count = counts[word, default: 0] + 1
            counts[word] = count
            collector.emit([.string(word), .int(count)])
        }
    }

    /// sentences (spout) → split (2, shuffle) → count (4, fields "word") → `sink` (global).
    public static func build<Sink: Bolt & SendableMetatype>(sentenceLimit: Int? = nil, sink: @autoclosure @escaping @Sendable () -> Sink,
                                         config: TopologyConfig = TopologyConfig()) throws(TopologyError) -> Topology {
        try build(name: "word-count", sentences: SentenceSpout(limit: sentenceLimit), sentenceField: "sentence", sink: sink(), config: config)
    }

    /// The same with any sentence source: `sentenceField` names its text field (a
    /// topic spout's is "value").
    public static func build<Source: Spout & SendableMetatype, Sink: Bolt & SendableMetatype>(
        name: String, sentences: @autoclosure @escaping @Sendable () -> Source, sentenceField: String, spoutParallelism: Int = 1,
        sink: @autoclosure @escaping @Sendable () -> Sink, sinkParallelism: Int = 1, config: TopologyConfig = TopologyConfig()
    ) throws(TopologyError) -> Topology {
        let builder = TopologyBuilder()
        builder.setSpout("sentences", sentences(), parallelism: spoutParallelism)
        builder.setBolt("split", SplitSentence(field: sentenceField), parallelism: 2).shuffleGrouping("sentences")
        builder.setBolt("count", WordCount(), parallelism: 4).fieldsGrouping("split", ["word"])
        builder.setBolt("sink", sink(), parallelism: sinkParallelism).fieldsGrouping("count", ["word"])
        return try builder.build(name: name, config: config)
    }
}
