import AqueductTopology
import Synchronization

/// A Streamlet pipeline with a time window: words of generated sentences, counted per
/// word in sliding windows (by default 10 s long, one every 2 s).
public enum WindowedWordCounts {
    /// Hands out the words of `WordCountTopology.sentences` in turn, `limit` in all.
    final class Words: Sendable {
        private let next = Mutex(0)
        private let words = WordCountTopology.sentences.flatMap { $0.split(separator: " ").map(String.init) }
        private let limit: Int?
        init(limit: Int?) { self.limit = limit }
        func take() -> String? {
            next.withLock { next in
                if let limit, next >= limit { return nil }
                defer { next += 1 }
                return words[next % words.count]
            }
        }
    }

    public static func build(windowMilliseconds: Int64 = 10_000, slideMilliseconds: Int64 = 2_000, wordLimit: Int? = nil,
                             config: TopologyConfig = TopologyConfig(),
                             output: @escaping @Sendable (KeyValue<KeyedWindow<String>, Int64>) -> Void) throws(TopologyError) -> Topology {
        let words = Words(limit: wordLimit)
        let builder = StreamletBuilder()
        builder.source { words.take() }.setName("words")
            .countByKeyAndWindow(key: { $0 }, window: .slidingTime(milliseconds: windowMilliseconds, slideMilliseconds: slideMilliseconds))
            .setName("counts").setNumPartitions(2)
            .consume(output).setName("output")
        return try builder.build(name: "windowed-word-counts", config: config)
    }
}
