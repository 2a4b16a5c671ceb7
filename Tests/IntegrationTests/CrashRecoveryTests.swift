import AqueductClient
import AqueductAPI
import AqueductTestSupport
import Foundation
import Synchronization
import Testing

/// The durability promise, tested on the real binary: every record the server
/// acknowledged over HTTP is readable after `kill -9` and a restart, at the offset it
/// was given, in order, with no duplicates; over several crash cycles.
@Suite struct CrashRecoveryTests {
    struct Acknowledged: Hashable {
        var partition: Int
        var offset: Int64
        var value: String
    }

    /// Progress with timestamps, written as it happens to $AQUEDUCT_TEST_TRACE (if set).
    static func trace(_ text: String) {
        guard let path = ProcessInfo.processInfo.environment["AQUEDUCT_TEST_TRACE"] else { return }
        let line = "\(Date().timeIntervalSince1970) \(text)\n"
        if let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(Data(line.utf8))
            try? handle.close()
        } else {
            FileManager.default.createFile(atPath: path, contents: Data(line.utf8))
        }
    }

    @Test func acknowledgedRecordsSurviveKillDashNine() async throws {
        let directory = NSTemporaryDirectory() + "aqueduct-crash-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cycles = 5
        let producers = 6
        let partitions = 3
        let acknowledged = Locked<[Acknowledged]>([])
        let sent = Locked<Set<String>>([])
        // When each cycle's kill comes is random, from a seed printed for replays.
        var random = SplitMix64(seed: testSeed())

        for cycle in 0..<cycles {
            let crashAfterMilliseconds = Int.random(in: 300...900, using: &random)
            let server = ServerProcess(dataDirectory: directory)
            let began = ContinuousClock.now
            try await server.start()
            print("cycle \(cycle): server up after \(ContinuousClock.now - began)")
            Self.trace("cycle \(cycle) up")
            let client = AqueductClient(baseURL: server.baseURL)
            if cycle == 0 { _ = try await client.createTopic("crash", partitions: partitions) }

            // Everything acknowledged before this crash is there, once, at its offset.
            try await verify(client: client, partitions: partitions, acknowledged: acknowledged.withLock { $0 }, sent: sent.withLock { $0 }, cycle: cycle)

            Self.trace("cycle \(cycle) verified")
            // Producers write until the server is killed under them.
            let stop = Locked(false)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for producer in 0..<producers {
                    group.addTask {
                        var sequence = 0
                        while !stop.withLock({ $0 }) {
                            let batch = (0..<(1 + sequence % 4)).map { index in
                                "c\(cycle)-p\(producer)-s\(sequence)-\(index)"
                            }
                            sequence += 1
                            sent.withLock { $0.formUnion(batch) }
                            let records = batch.map { ProduceRecordJSON(key: $0, value: $0) }
                            do {
                                let response = try await client.produce("crash", records: records)
                                acknowledged.withLock { list in
                                    for (record, placed) in zip(batch, response.offsets) {
                                        list.append(Acknowledged(partition: placed.partition, offset: placed.offset, value: record))
                                    }
                                }
                            } catch {
                                Self.trace("cycle \(cycle) producer \(producer) stopped: \(error)")
                                // In flight when the server died: not acknowledged, may or may not be stored.
                                return
                            }
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(crashAfterMilliseconds))
                    Self.trace("cycle \(cycle) crashing")
                    try await server.crash()
                    Self.trace("cycle \(cycle) crashed")
                    stop.withLock { $0 = true }
                }
                try await group.waitForAll()
            }
            #expect(acknowledged.withLock { $0.count } > cycle * 10, "producers made progress before crash \(cycle)")
            print("cycle \(cycle): crashed after \(ContinuousClock.now - began)")
            Self.trace("cycle \(cycle) producers done")
        }

        // A last clean start: verify, then a clean stop exits 0.
        let server = ServerProcess(dataDirectory: directory)
        try await server.start()
        let client = AqueductClient(baseURL: server.baseURL)
        try await verify(client: client, partitions: partitions, acknowledged: acknowledged.withLock { $0 }, sent: sent.withLock { $0 }, cycle: cycles)
        let stopped = ContinuousClock.now
        #expect(try await server.stop() == 0, "clean shutdown:\n\(server.log)")
        print("clean stop took \(ContinuousClock.now - stopped)")
        #expect(server.log.contains("aqueduct stopped cleanly"))
    }

    private func verify(client: AqueductClient, partitions: Int, acknowledged: [Acknowledged], sent: Set<String>, cycle: Int) async throws {
        var stored: [Int: [(offset: Int64, value: String)]] = [:]
        for partition in 0..<partitions {
            var next = "earliest"
            while true {
                let response = try await client.fetch("crash", partition: partition, offset: next, maxRecords: 10_000, maxBytes: 4 << 20)
                stored[partition, default: []] += response.records.map { ($0.offset, $0.value ?? "") }
                if response.records.isEmpty || response.nextOffset >= response.endOffset { break }
                next = String(response.nextOffset)
            }
            let offsets = stored[partition, default: []].map(\.offset)
            #expect(offsets == Array(0..<Int64(offsets.count)), "partition \(partition) offsets are dense and in order (cycle \(cycle))")
        }
        let all = stored.values.flatMap { $0.map(\.value) }
        #expect(Set(all).count == all.count, "no record is stored twice (cycle \(cycle))")
        #expect(Set(all).isSubset(of: sent), "nothing is stored that was not sent (cycle \(cycle))")
        var missing = 0
        for record in acknowledged {
            let partitionRecords = stored[record.partition, default: []]
            guard record.offset < Int64(partitionRecords.count), partitionRecords[Int(record.offset)].value == record.value else {
                missing += 1
                continue
            }
        }
        #expect(missing == 0, "\(missing) of \(acknowledged.count) acknowledged records are missing or moved (cycle \(cycle))")
        print("crash cycle \(cycle): \(acknowledged.count) acknowledged records verified; \(all.count - acknowledged.count) stored records were in flight at a crash")
    }
}
