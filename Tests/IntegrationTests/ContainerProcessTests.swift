import AqueductClient
import AqueductAPI
import AqueductTopologyExamples
import AqueductTopologyService
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// WordCount from a topic to a topic as two container processes of a topology program
/// (`aqueduct-examples`), started the way the scheduler starts them. One container is
/// killed with SIGKILL mid-run and started again: every sentence is still counted at
/// least once (trees lost with it time out and the topic spout replays them).
@Suite struct ContainerProcessTests {
    static var examplesPath: String {
        URL(fileURLWithPath: ServerProcess.binaryPath).deletingLastPathComponent().appendingPathComponent("aqueduct-examples").path
    }

    final class Container: @unchecked Sendable {
        let process = Process()
        let log = Locked("")

        init(index: Int, environment: [String: String]) throws {
            process.executableURL = URL(fileURLWithPath: ContainerProcessTests.examplesPath)
            process.arguments = ["word-count-topics", "sentences", "counts"]
            var env = ProcessInfo.processInfo.environment
            for (key, value) in environment { env[key] = value }
            env["AQUEDUCT_CONTAINER"] = String(index)
            process.environment = env
            let pipe = Pipe()
            process.standardError = pipe
            process.standardOutput = pipe
            pipe.fileHandleForReading.readabilityHandler = { [log] handle in
                let data = handle.availableData
                if !data.isEmpty { log.withLock { $0 += String(decoding: data, as: UTF8.self) } }
            }
            try process.run()
        }

        func signal(_ number: Int32) { kill(process.processIdentifier, number) }

        func waitForExit(seconds: Double) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            return process.isRunning ? nil : process.terminationStatus
        }
    }

    @Test func killedContainerLosesNothing() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.examplesPath) else {
            throw IntegrationError("no aqueduct-examples at \(Self.examplesPath); run `swift build` first")
        }
        let directory = NSTemporaryDirectory() + "aqueduct-containers-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory)
        try await server.start()
        let client = AqueductClient(baseURL: server.baseURL)
        try await WordCountTopics.create(client, sentences: 0..<2_000)

        let ports = [TopologyMaster.freeLoopbackPort(), TopologyMaster.freeLoopbackPort()]
        let environment = [
            "AQUEDUCT_HTTP": server.baseURL, "AQUEDUCT_CONTAINERS": "2", "AQUEDUCT_MESSAGE_TIMEOUT_MS": "2000",
            "AQUEDUCT_STMGR_ADDRESSES": ports.map { "127.0.0.1:\($0)" }.joined(separator: ","),
        ]
        var containers = [try Container(index: 0, environment: environment), try Container(index: 1, environment: environment)]
        defer { for container in containers { container.signal(SIGKILL) } }

        // Mid-run: container 1 (split, count and sink tasks) dies and comes back.
        for _ in 0..<400 {
            if (try await WordCountTopics.recordsPerWord(client).values.reduce(0, +)) > 2_000 { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        containers[1].signal(SIGKILL)
        _ = containers[1].waitForExit(seconds: 5)
        try await WordCountTopics.produce(client, 2_000..<3_000)
        try await Task.sleep(for: .milliseconds(300))
        containers[1] = try Container(index: 1, environment: environment)

        let expected = WordCountTopics.expected(0..<3_000)
        var perWord: [String: Int] = [:]
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            perWord = try await WordCountTopics.recordsPerWord(client)
            if expected.allSatisfy({ perWord[$0.key, default: 0] >= $0.value }) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let missing = expected.filter { perWord[$0.key, default: 0] < $0.value }
        #expect(missing.isEmpty, "words counted fewer times than they occur: \(missing.map { "\($0.key): \(perWord[$0.key, default: 0])/\($0.value)" }); logs:\n\(containers.map { $0.log.withLock { $0 } })")

        for container in containers { container.signal(SIGTERM) }
        #expect(containers[0].waitForExit(seconds: 20) == 0)
        #expect(containers[1].waitForExit(seconds: 20) == 0)
        _ = try await server.stop()
    }
}
