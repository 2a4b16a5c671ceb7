@testable import AqueductTopology
import AqueductTopologyExamples
import Foundation
import Synchronization
import Testing

/// Topologies spread over containers that talk through stream managers over loopback TCP.
@Suite(.serialized) struct ContainerTests {
    func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return condition()
    }

    @Test(arguments: [2, 3])
    func wordCountAcrossContainers(containers: Int) throws {
        let latest = Latest()
        var config = TopologyConfig()
        config.containers = containers
        let sentences = 3_000
        let topology = try WordCountTopology.build(sentenceLimit: sentences, sink: LatestCount(latest: latest), config: config)
        let group = try ContainerGroup(topology: topology)
        defer { group.kill() }
        #expect(waitUntil(30) { group.metrics().component("sentences")?.acked == sentences })
        var expected: [String: Int64] = [:]
        for index in 0..<sentences {
            for word in WordCountTopology.sentences[index % WordCountTopology.sentences.count].split(separator: " ") {
                expected[String(word), default: 0] += 1
            }
        }
        #expect(latest.counts.withLock { $0 } == expected)
        #expect(group.received > 0, "tuples crossed containers")
        #expect(Set(group.metrics().tasks.map(\.container)).count == containers)
        #expect(group.metrics().component("sentences")?.failed == 0)
    }

    /// A slow bolt in another container than the spout: its congestion reaches the
    /// spout's container through the stream managers and stops the spout there.
    @Test func backpressureCrossesContainers() throws {
        var config = TopologyConfig()
        config.containers = 2
        config.queueHighWatermarkTuples = 1_000
        config.queueLowWatermarkTuples = 500
        config.queueCapacityTuples = 2_000
        config.emitBatchTuples = 100
        let builder = TopologyBuilder()
        builder.setSpout("endless", EndlessSpout())  // task 0: container 0
        builder.setBolt("slow", SlowBolt()).shuffleGrouping("endless")  // task 1: container 1
        let group = try ContainerGroup(topology: try builder.build(name: "remote-backpressure", config: config))
        defer { group.kill() }
        #expect(waitUntil(60) {
            (group.metrics().component("slow")?.executed ?? 0) > 1_000 && group.containers[0].metrics().backpressureEpisodes >= 1
        })
        let metrics = group.metrics()
        let emitted = metrics.component("endless")?.emitted ?? 0
        let executed = metrics.component("slow")?.executed ?? 0
        #expect(executed > 1_000)
        // Beyond the queue: what was in flight when the signal crossed (a few batches).
        #expect(emitted - executed <= 10_000, "spout ran ahead by \(emitted - executed)")
        #expect(group.containers[0].metrics().backpressureEpisodes >= 1, "the spout's container saw backpressure")
    }
}
