import AqueductServer
import ArgumentParser
import Foundation
import Logging

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run the Aqueduct server (durable by default; data in ./aqueduct-data).",
        discussion: """
            Settings come from flags, then AQUEDUCT_* environment variables, then the
            --config file (YAML, or JSON if it ends in .json), then defaults. See
            docs/CONFIGURATION.md for every key. Stop with Ctrl-C or SIGTERM: the server
            finishes requests in flight, flushes and exits cleanly.
            """)

    @Option(name: .long, help: "Data directory (default ./aqueduct-data).")
    var dataDir: String?

    @Option(name: .long, help: "HTTP listen address HOST:PORT (default 127.0.0.1:8092).")
    var httpListen: String?

    @Option(name: .long, help: "Kafka listen address HOST:PORT (default 127.0.0.1:9092).")
    var kafkaListen: String?

    @Option(name: .long, help: "This node's id, as Kafka clients see it (default 0; 1 or more in a cluster, unique).")
    var nodeId: Int?

    @Option(name: .long, help: "Join a cluster coordinated by etcd: etcd://HOST:PORT (without it: one node, embedded metadata).")
    var cluster: String?

    @Option(name: .long, help: "Cluster mode: the storage (replication) listener HOST:PORT (default: the Kafka host, a free port).")
    var storageListen: String?

    @Option(name: .long, help: "fsync (acknowledge after fdatasync; default) or interval:<ms> (acknowledge after write, sync every <ms>).")
    var durability: String?

    @Option(name: .long, help: "Configuration file (YAML or JSON).")
    var config: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    func run() async throws {
        var overrides: [String: String] = [:]
        if let dataDir { overrides["data.directory"] = dataDir }
        if let httpListen { overrides["http.listen"] = httpListen }
        if let kafkaListen { overrides["kafka.listen"] = kafkaListen }
        if let nodeId { overrides["node.id"] = String(nodeId) }
        if let cluster { overrides["cluster.etcd"] = cluster }
        if let storageListen { overrides["storage.listen"] = storageListen }
        if let durability { overrides["durability"] = durability }
        if let logLevel { overrides["log.level"] = logLevel }
        let configuration: ServerConfiguration
        do {
            configuration = try await ServerConfiguration.load(overrides: overrides, file: config)
        } catch {
            printError("aqueduct: \(error)")
            throw ExitCode(2)
        }
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "aqueduct")
        do {
            try await Server.run(configuration, logger: logger)
        } catch {
            logger.critical("aqueduct could not run", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}
