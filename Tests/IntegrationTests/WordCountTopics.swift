import AqueductClient
import AqueductAPI
import AqueductTopologyExamples

/// The "sentences" → "counts" topics the WordCount integration tests use.
enum WordCountTopics {
    /// Creates "sentences" (4 partitions) and "counts" (1) and produces sentences `range`.
    static func create(_ client: AqueductClient, sentences range: Range<Int>) async throws {
        _ = try await client.createTopic("sentences", partitions: 4)
        _ = try await client.createTopic("counts", partitions: 1)
        try await produce(client, range)
    }

    /// Produces sentences `range` (WordCount's sentences in turn) over the 4 partitions.
    static func produce(_ client: AqueductClient, _ range: Range<Int>) async throws {
        let records = range.map { ProduceRecordJSON(value: WordCountTopology.sentences[$0 % WordCountTopology.sentences.count], partition: $0 % 4) }
        _ = try await client.produce("sentences", records: records)
    }

    /// Every record of the counts topic, in order.
    static func counts(_ client: AqueductClient) async throws -> [FetchedRecordJSON] {
        var records: [FetchedRecordJSON] = []
        var offset: Int64 = 0
        while true {
            let page = try await client.fetch("counts", partition: 0, offset: String(offset), maxRecords: 10_000)
            records += page.records
            if page.records.isEmpty || page.nextOffset >= page.endOffset { return records }
            offset = page.nextOffset
        }
    }

    /// Records per word on the counts topic: one per counted occurrence (more after replays).
    static func recordsPerWord(_ client: AqueductClient) async throws -> [String: Int] {
        var perWord: [String: Int] = [:]
        for record in try await counts(client) { if let word = record.key { perWord[word, default: 0] += 1 } }
        return perWord
    }

    /// Occurrences of each word in sentences `range`.
    static func expected(_ range: Range<Int>) -> [String: Int] {
        var expected: [String: Int] = [:]
        for index in range {
            for word in WordCountTopology.sentences[index % WordCountTopology.sentences.count].split(separator: " ") { expected[String(word), default: 0] += 1 }
        }
        return expected
    }
}
