import AqueductClient
import AqueductAPI
import AqueductTopologyExamples
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `aqueduct topology submit` end to end: the server describes the program, starts two
/// containers, restarts one killed with SIGKILL mid-run, and every sentence is counted
/// at least once; status shows metrics; kill stops every container.
@Suite struct TopologyServiceTests {
    func covered(_ client: AqueductClient, sentences: Int, seconds: Double) async throws -> Bool {
        let wanted = WordCountTopics.expected(0..<sentences)
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        while ContinuousClock.now < deadline {
            let perWord = try await WordCountTopics.recordsPerWord(client)
            if wanted.allSatisfy({ perWord[$0.key, default: 0] >= $0.value }) { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    @Test func submitRestartAndKill() async throws {
        let examples = ContainerProcessTests.examplesPath
        guard FileManager.default.isExecutableFile(atPath: examples) else { throw IntegrationError("no aqueduct-examples at \(examples)") }
        let directory = NSTemporaryDirectory() + "aqueduct-service-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Containers inherit the server's environment: trees lost with the killed
        // container time out after 3 s instead of 30 (and are replayed).
        setenv("AQUEDUCT_MESSAGE_TIMEOUT_MS", "3000", 1)
        defer { unsetenv("AQUEDUCT_MESSAGE_TIMEOUT_MS") }
        let server = ServerProcess(dataDirectory: directory)
        try await server.start()
        let client = AqueductClient(baseURL: server.baseURL)
        try await WordCountTopics.create(client, sentences: 0..<1_000)

        // Programs run only from the server's programs directory: a path elsewhere is
        // refused; a program that is not a topology program is refused with its words.
        do {
            _ = try await client.submitTopology(TopologySubmitRequest(executable: "/bin/false"))
            Issue.record("a program outside the programs directory was run")
        } catch let error as ClientError {
            #expect(error.code == "PROGRAM_NOT_ALLOWED")
        }
        _ = try await client.uploadProgram(path: "/bin/false", name: "false")
        await #expect(throws: (any Error).self) {
            _ = try await client.submitTopology(TopologySubmitRequest(executable: "false"))
        }

        let program = try await client.uploadProgram(path: examples, name: "aqueduct-examples")
        #expect(try await client.listPrograms().programs.map(\.name) == ["aqueduct-examples", "false"])
        let submitted = try await client.submitTopology(TopologySubmitRequest(
            executable: program.name, arguments: ["word-count-topics", "sentences", "counts", "2"], name: "wc"))
        #expect(submitted.containers.count == 2)
        #expect(submitted.components.map(\.id) == ["sentences", "split", "count", "sink"])
        #expect(try await covered(client, sentences: 1_000, seconds: 60))

        // Kill a container: the server starts it again, and nothing is lost.
        let victim = try #require(try await client.topologyStatus("wc").containers[1].pid)
        kill(victim, SIGKILL)
        try await WordCountTopics.produce(client, 1_000..<1_500)
        var restarted = false
        for _ in 0..<600 {
            let status = try await client.topologyStatus("wc")
            if status.containers[1].restarts >= 1, let pid = status.containers[1].pid, pid != victim { restarted = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(restarted, "container 1 was not restarted")
        #expect(try await covered(client, sentences: 1_500, seconds: 60))

        let status = try await client.topologyStatus("wc")
        #expect(status.components.first { $0.id == "count" }.map { $0.executed > 0 } == true, "metrics from the containers: \(status.components)")
        #expect(try await client.listTopologies().topologies.map(\.name) == ["wc"])
        var request = URLRequest(url: URL(string: server.baseURL + "/metrics")!)
        request.httpMethod = "GET"
        let (body, _) = try await URLSession.shared.data(for: request)
        let metricsText = String(decoding: body, as: UTF8.self)
        #expect(metricsText.contains("aqueduct_topology_executed_total{topology=\"wc\",component=\"count\""))

        let pids = status.containers.compactMap(\.pid)
        try await client.killTopology("wc")
        var gone = false
        for _ in 0..<600 {
            if try await client.listTopologies().topologies.isEmpty && pids.allSatisfy({ Glibc.kill($0, 0) != 0 }) { gone = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(gone, "containers still running after kill")
        _ = try await server.stop()
    }

    /// A restarted server starts its topologies again from its metadata; a crashed
    /// server's containers stop by themselves.
    @Test func topologiesSurviveAServerRestart() async throws {
        let examples = ContainerProcessTests.examplesPath
        guard FileManager.default.isExecutableFile(atPath: examples) else { throw IntegrationError("no aqueduct-examples at \(examples)") }
        let directory = NSTemporaryDirectory() + "aqueduct-service-restart-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = ServerProcess(dataDirectory: directory)
        try await first.start()
        var client = AqueductClient(baseURL: first.baseURL)
        try await WordCountTopics.create(client, sentences: 0..<300)
        _ = try await client.uploadProgram(path: examples, name: "aqueduct-examples")
        _ = try await client.submitTopology(TopologySubmitRequest(executable: "aqueduct-examples", arguments: ["word-count-topics", "sentences", "counts"], name: "wc"))
        #expect(try await covered(client, sentences: 300, seconds: 60))
        let before = try #require(try await client.topologyStatus("wc").containers[0].pid)
        #expect(try await first.stop() == 0)
        #expect(Glibc.kill(before, 0) != 0, "the server stops its containers when it stops")

        let second = ServerProcess(dataDirectory: directory)
        try await second.start()
        client = AqueductClient(baseURL: second.baseURL)
        var listed: [String] = []
        for _ in 0..<600 {
            listed = try await client.listTopologies().topologies.map(\.name)
            if listed == ["wc"] { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(listed == ["wc"])
        try await WordCountTopics.produce(client, 300..<600)
        #expect(try await covered(client, sentences: 600, seconds: 60), "the resumed topology processes new sentences")

        // Killed -9, the server cannot stop its containers: they stop by themselves (a
        // restarted server, or another cluster node, starts the topology anew).
        let orphans = try await client.topologyStatus("wc").containers.compactMap(\.pid)
        try await second.crash()
        var stopped = false
        for _ in 0..<600 {
            if orphans.allSatisfy({ Glibc.kill($0, 0) != 0 }) { stopped = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(stopped, "containers outlived the server that started them")
    }

    /// With tokens, the CLI's client needs one, and the server hands its containers a
    /// token of their own, so topic spouts and sinks work unchanged.
    @Test func topologiesWorkOnAServerThatWantsTokens() async throws {
        let examples = ContainerProcessTests.examplesPath
        guard FileManager.default.isExecutableFile(atPath: examples) else { throw IntegrationError("no aqueduct-examples at \(examples)") }
        let directory = NSTemporaryDirectory() + "aqueduct-service-tokens-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let admin = "admin-" + UUID().uuidString
        let server = ServerProcess(dataDirectory: directory, environment: ["AQUEDUCT_HTTP_TOKENS": "admin:\(admin)", "AQUEDUCT_TOKEN": ""])
        try await server.start()
        do {
            _ = try await AqueductClient(baseURL: server.baseURL, token: nil).listTopics()
            Issue.record("a request without a token was served")
        } catch let error as ClientError {
            #expect(error.code == "UNAUTHORIZED")
        }
        let client = AqueductClient(baseURL: server.baseURL, token: admin)
        try await WordCountTopics.create(client, sentences: 0..<300)
        _ = try await client.uploadProgram(path: examples, name: "aqueduct-examples")
        _ = try await client.submitTopology(TopologySubmitRequest(executable: "aqueduct-examples", arguments: ["word-count-topics", "sentences", "counts"], name: "wc"))
        #expect(try await covered(client, sentences: 300, seconds: 120))
        try await client.killTopology("wc")
        _ = try await server.stop()
    }

    /// `--describe` output is read while the program runs: a program printing more
    /// than a pipe holds is answered (refused), not waited on forever.
    @Test func aProgramThatPrintsALotIsRefusedNotWaitedOn() async throws {
        let directory = NSTemporaryDirectory() + "aqueduct-service-chatty-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = ServerProcess(dataDirectory: directory + "/data")
        try await server.start()
        let client = AqueductClient(baseURL: server.baseURL)
        for (name, bytes) in [("chatty", 1 << 20), ("flood", 64 << 20)] {
            let script = directory + "/" + name
            try "#!/bin/sh\nhead -c \(bytes) /dev/zero | tr '\\0' x\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            _ = try await client.uploadProgram(path: script, name: name)
            do {
                _ = try await client.submitTopology(TopologySubmitRequest(executable: name))
                Issue.record("\(name) was accepted as a topology program")
            } catch let error as ClientError {
                #expect(error.code == "INVALID_REQUEST")
            }
        }
        _ = try await server.stop()
    }
}
