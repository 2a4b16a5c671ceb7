import AqueductClient
import AqueductAPI
import ArgumentParser
import Foundation

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Run stream-processing topologies in the server: submit a program, watch, (de)activate, rescale, kill.",
        subcommands: [Submit.self, Upload.self, Programs.self, List.self, Status.self, Activate.self, Deactivate.self, Kill.self, Update.self])

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a topology program (built against AqueductTopology) in the server's containers.",
            discussion: """
                <program> is a file here, which is uploaded to the server's programs directory first (as its file name), \
                or the name of a program uploaded before. The server runs `<program> [arguments] --describe` to learn \
                the plan, then starts its containers and restarts any that exits.
                """)
        @OptionGroup var address: ServerAddress
        @Option(help: "Register the topology under this name (default: the program's).") var name: String?
        @Argument(help: "A program file to upload, or the name of an uploaded program.") var executable: String
        @Argument(parsing: .captureForPassthrough, help: "Arguments for the program.") var arguments: [String] = []

        func run() async throws {
            try await reportingErrors {
                // `submit <executable> --name N [args]`: a --name right after the
                // executable is ours, not the program's.
                var arguments = self.arguments
                var name = self.name
                if arguments.count >= 2, arguments[0] == "--name" {
                    name = arguments[1]
                    arguments.removeFirst(2)
                }
                let client = address.client
                var program = executable
                if FileManager.default.fileExists(atPath: executable) {
                    program = try await upload(executable, as: nil, client: client).name
                }
                let status = try await client.submitTopology(TopologySubmitRequest(executable: program, arguments: arguments, name: name))
                if status.state == "scheduled" {
                    let placed = status.node.map { "node \($0) is starting it" } ?? "waiting for a node to start it"
                    print("topology \(status.name) submitted to the cluster: \(placed); `aqueduct topology status \(status.name)` shows it")
                } else {
                    let placed = status.node.map { " on node \($0)" } ?? ""
                    print("topology \(status.name) submitted: \(status.containers.count) container(s)\(placed); `aqueduct topology status \(status.name)` shows it")
                }
            }
        }
    }

    struct Upload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload a topology program to the server's programs directory (the only place programs run from).")
        @OptionGroup var address: ServerAddress
        @Option(help: "The program's name on the server (default: the file's name).") var name: String?
        @Argument(help: "The program file.") var path: String

        func run() async throws {
            try await reportingErrors {
                _ = try await upload(path, as: name, client: address.client)
            }
        }
    }

    struct Programs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the programs the server can run.")
        @OptionGroup var address: ServerAddress

        func run() async throws {
            try await reportingErrors {
                let programs = try await address.client.listPrograms().programs
                if programs.isEmpty {
                    printError("no programs; upload one with `aqueduct topology upload <path>`")
                    return
                }
                let width = max(7, programs.map(\.name.count).max() ?? 7)
                print(row(["PROGRAM", "BYTES"], widths: [width]))
                for program in programs { print(row([program.name, String(program.bytes)], widths: [width])) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List running topologies.")
        @OptionGroup var address: ServerAddress

        func run() async throws {
            try await reportingErrors {
                let topologies = try await address.client.listTopologies().topologies
                if topologies.isEmpty {
                    printError("no topologies; submit one with `aqueduct topology submit <executable>`")
                    return
                }
                let width = max(8, topologies.map(\.name.count).max() ?? 8)
                // Cluster mode: which node runs each.
                let clustered = topologies.contains { $0.node != nil }
                print(row(["TOPOLOGY", "STATE", "CONTAINERS", "RESTARTS"] + (clustered ? ["NODE"] : []), widths: [width, 11, 10, 8]))
                for topology in topologies {
                    let live = topology.containers.filter { $0.pid != nil }.count
                    let restarts = String(topology.containers.reduce(0) { $0 + $1.restarts })
                    print(row([topology.name, topology.state, "\(live)/\(topology.containers.count)", restarts]
                              + (clustered ? [topology.node.map(String.init) ?? "-"] : []), widths: [width, 11, 10, 8]))
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A topology's containers and per-component metrics.")
        @OptionGroup var address: ServerAddress
        @Argument var name: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await reportingErrors {
                let status = try await address.client.topologyStatus(name)
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: try encoder.encode(status), as: UTF8.self))
                    return
                }
                print("\(status.name): \(status.state)" + (status.node.map { " on node \($0)" } ?? "")
                    + ", plan generation \(status.generation), \(status.executable) \(status.arguments.joined(separator: " "))")
                for container in status.containers {
                    print("  container \(container.index): " + (container.pid.map { "pid \($0)" } ?? "down")
                        + ", restarts \(container.restarts)" + (container.lastExitStatus.map { ", last exit \($0)" } ?? "") + ", log \(container.log)")
                }
                let width = max(9, status.components.map(\.id.count).max() ?? 9)
                print(row(["COMPONENT", "TASKS", "EMITTED", "EXECUTED", "ACKED", "FAILED", "QUEUED", "BACKPRESSURE", "LATENCY p99"],
                          widths: [width, 5, 10, 10, 10, 7, 7, 12]))
                for component in status.components {
                    let latency = component.spout ? String(format: "%.2f ms", component.completeLatencyP99Micros / 1_000)
                        : String(format: "%.1f µs exec", component.executeLatencyMicros)
                    print(row([component.id, String(component.parallelism), String(component.emitted), String(component.executed),
                               String(component.acked), String(component.failed), String(component.queueDepth),
                               String(format: "%.0f ms", component.backpressureMillis), latency], widths: [width, 5, 10, 10, 10, 7, 7, 12]))
                }
            }
        }
    }

    struct Activate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let the topology's spouts emit again.")
        @OptionGroup var address: ServerAddress
        @Argument var name: String
        func run() async throws {
            try await reportingErrors { _ = try await address.client.setTopologyActive(name, true); print("\(name) activated") }
        }
    }

    struct Deactivate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the topology's spouts (tuples in flight are still processed).")
        @OptionGroup var address: ServerAddress
        @Argument var name: String
        func run() async throws {
            try await reportingErrors { _ = try await address.client.setTopologyActive(name, false); print("\(name) deactivated") }
        }
    }

    struct Kill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop every container of a topology and forget it.")
        @OptionGroup var address: ServerAddress
        @Argument var name: String
        func run() async throws {
            try await reportingErrors { try await address.client.killTopology(name); print("\(name) is stopping") }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restart a topology with other parallelism (component=count).")
        @OptionGroup var address: ServerAddress
        @Argument var name: String
        @Option(help: "component=count; repeat for several.") var parallelism: [String] = []

        func run() async throws {
            try await reportingErrors {
                var counts: [String: Int] = [:]
                for entry in parallelism {
                    let parts = entry.split(separator: "=")
                    guard parts.count == 2, let count = Int(parts[1]) else {
                        throw ValidationError("--parallelism takes component=count, not \(entry)")
                    }
                    counts[String(parts[0])] = count
                }
                guard !counts.isEmpty else { throw ValidationError("give at least one --parallelism component=count") }
                let status = try await address.client.updateTopology(name, parallelism: counts)
                print("\(name) restarting with plan generation \(status.generation)")
            }
        }
    }
}

/// Uploads a program, showing progress on a terminal.
func upload(_ path: String, as name: String?, client: AqueductClient) async throws -> ProgramJSON {
    let programName = name ?? URL(fileURLWithPath: path).lastPathComponent
    let interactive = isatty(STDERR_FILENO) == 1
    let started = Date()
    let uploaded = try await client.uploadProgram(path: path, name: programName) { sent, total in
        guard interactive, total > 0 else { return }
        FileHandle.standardError.write(Data("\ruploading \(programName): \(sent * 100 / total)% of \(total / 1_000_000) MB".utf8))
    }
    if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    printError("uploaded \(uploaded.name) (\(uploaded.bytes) bytes) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    return uploaded
}
