import AqueductClient
import AqueductAPI
import AqueductTopology
import AqueductTopologyExamples
import AqueductTopologyTopics
import Foundation
import Testing

/// WordCount from a topic to a topic through the real server: every sentence counted,
/// offsets committed only for processed records, a restarted topology resumes there.
@Suite struct TopicTopologyTests {
    func latestCounts(_ client: AqueductClient) async throws -> [String: Int64] {
        var counts: [String: Int64] = [:]
        for record in try await WordCountTopics.counts(client) {
            if let word = record.key, let count = record.value.flatMap({ Int64($0) }) { counts[word] = max(counts[word] ?? 0, count) }
        }
        return counts
    }

    func expectedCounts(_ sentences: Range<Int>) -> [String: Int64] {
        WordCountTopics.expected(sentences).mapValues(Int64.init)
    }

    @Test func wordCountFromTopicToTopic() async throws {
        let directory = NSTemporaryDirectory() + "aqueduct-topology-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory)
        try await server.start()
        defer { _ = try? blockingStop(server) }
        let client = AqueductClient(baseURL: server.baseURL)
        try await WordCountTopics.create(client, sentences: 0..<1_000)

        func topology() throws -> Topology {
            try WordCountTopology.build(
                name: "wc", sentences: TopicSpout(topic: "sentences", server: server.baseURL, commitIntervalMilliseconds: 100),
                sentenceField: "value", spoutParallelism: 2,
                sink: TopicSink(topic: "counts", keyField: "word", valueField: "count", server: server.baseURL))
        }

        // First run: all 1,000 sentences, counts on the counts topic, offsets committed.
        let first = LocalCluster().submit(try topology())
        let counted = await poll(seconds: 60) { (try? await latestCounts(client)) == expectedCounts(0..<1_000) }
        let counts = try await latestCounts(client)
        #expect(counted, "counts topic: \(counts)")
        let committed = await poll(seconds: 20) {
            (try? await client.committedOffsets(group: "wc.sentences", topic: "sentences").values.reduce(0, +)) == 1_000
        }
        let offsets = try await client.committedOffsets(group: "wc.sentences", topic: "sentences")
        #expect(committed, "committed: \(offsets)")
        #expect(first.metrics().component("sentences")?.acked == 1_000)
        #expect(first.errors.isEmpty)
        first.kill()

        // Second run: resumes from the committed offsets and reads only the new sentences.
        try await WordCountTopics.produce(client, 1_000..<1_100)
        let second = LocalCluster().submit(try topology())
        let resumed = await poll(seconds: 30) { second.metrics().component("sentences")?.acked == 100 }
        #expect(resumed)
        try await Task.sleep(for: .milliseconds(300))
        #expect(second.metrics().component("sentences")?.emitted == 100 * 1, "only the 100 new sentences: \(String(describing: second.metrics().component("sentences")))")
        second.kill()
        #expect(try await client.committedOffsets(group: "wc.sentences", topic: "sentences").values.reduce(0, +) == 1_100)
    }

    func poll(seconds: Double, _ condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return await condition()
    }

    func blockingStop(_ server: ServerProcess) throws {
        let done = DispatchSemaphore(value: 0)
        Task {
            _ = try? await server.stop()
            done.signal()
        }
        done.wait()
    }
}
