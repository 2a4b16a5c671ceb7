import AqueductClient
import ArgumentParser
import Foundation
import Logging

@main
struct Aqueduct: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aqueduct",
        abstract: "A durable log, pub/sub and stream processing in one binary.",
        discussion: """
            Start a server with `aqueduct server` (data in ./aqueduct-data), then use the
            other commands against it. They reach the server at --server, or at
            $AQUEDUCT_SERVER, or at http://127.0.0.1:8092.
            """,
        subcommands: [ServerCommand.self, TopicCommand.self, ProduceCommand.self, ConsumeCommand.self, GroupCommand.self, TopologyCommand.self, ClusterCommand.self])
}

/// Where the client commands find the server.
struct ServerAddress: ParsableArguments {
    @Option(name: .long, help: "The server's HTTP address (default: $AQUEDUCT_SERVER or http://127.0.0.1:8092).")
    var server: String?

    @Option(name: .long, help: "A token for a server that wants them (default: $AQUEDUCT_TOKEN).")
    var token: String?

    var client: AqueductClient {
        let url = server ?? ProcessInfo.processInfo.environment["AQUEDUCT_SERVER"] ?? "http://127.0.0.1:8092"
        return AqueductClient(baseURL: url.hasPrefix("http") ? url : "http://" + url, token: token ?? ProcessInfo.processInfo.environment["AQUEDUCT_TOKEN"])
    }
}

/// Runs a client command, turning its errors into one clear message and exit code 1
/// (no stack traces for users).
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ClientError {
        FileHandle.standardError.write(Data("aqueduct: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Writes to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
