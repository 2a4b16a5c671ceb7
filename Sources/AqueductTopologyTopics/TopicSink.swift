import AqueductClient
import AqueductAPI
import AqueductTopology
import Foundation

/// Produces each input tuple as a record of a topic, and acks the inputs only once the
/// server has stored them (so a topology reading a topic and writing one is
/// at-least-once end to end). Tuples are sent in batches: when `batchRecords` are
/// waiting, or on the next tick (every `flushIntervalSeconds`).
public struct TopicSink: Bolt {
    let topic: String
    let server: String
    let keyField: String?
    let valueField: String
    let batchRecords: Int
    let flushIntervalSeconds: Double
    var client: AqueductClient?
    var collector: BoltCollector?
    var waiting: [Tuple] = []

    public init(topic: String, keyField: String? = nil, valueField: String = "value", server: String = defaultServerURL(),
                batchRecords: Int = 500, flushIntervalSeconds: Double = 0.05) {
        self.topic = topic
        self.server = server
        self.keyField = keyField
        self.valueField = valueField
        self.batchRecords = batchRecords
        self.flushIntervalSeconds = flushIntervalSeconds
    }

    public var tickFrequencySeconds: Double? { flushIntervalSeconds }

    public mutating func prepare(context: TopologyContext, collector: BoltCollector) throws {
        self.collector = collector
        client = AqueductClient(baseURL: server)
    }

    public mutating func execute(_ tuple: Tuple) {
        if !tuple.isTick { waiting.append(tuple) }
        if waiting.count >= batchRecords || (tuple.isTick && !waiting.isEmpty) { flush() }
    }

    public mutating func cleanup() {
        if !waiting.isEmpty { flush() }
    }

    private mutating func flush() {
        guard let client, let collector else { return }
        let batch = waiting
        waiting.removeAll()
        let records = batch.map { tuple in
            ProduceRecordJSON(key: keyField.map { Self.base64(tuple[$0]) }, value: Self.base64(tuple[valueField]))
        }
        let topic = self.topic
        switch blocking({ try await client.produce(topic, records: records, encoding: .base64) }) {
        case .success:
            for tuple in batch { collector.ack(tuple) }
        case .failure:
            for tuple in batch { collector.fail(tuple) }
        }
    }

    static func base64(_ value: TupleValue) -> String {
        switch value {
        case .bytes(let bytes): Data(bytes).base64EncodedString()
        case .string(let text): Data(text.utf8).base64EncodedString()
        case .null: ""
        default: Data(value.description.utf8).base64EncodedString()
        }
    }
}
