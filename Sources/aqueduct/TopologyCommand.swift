import AqueductClient
import AqueductAPI
import ArgumentParser
import Foundation

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Run stream-processing topologies in the server: submit a program, watch, (de)activate, rescale, kill.",
        subcommands: [Submit.self, List.self, Status.self, Activate.self, Deactivate.self, Kill.self, Update.self])

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a topology program (built against AqueductTopology) in the server's containers.",
            discussion: "The server runs `<executable> [arguments] --describe` to learn the plan, then starts its containers and restarts any that exits.")
        @OptionGroup var address: ServerAddress
        @Option(help: "Register the topology under this name (default: the program's).") var name: String?
        @Argument(help: "Path of the program on the server's machine.") var executable: String
        @Argument(parsing: .captureForPassthrough, help: "Arguments for the program.") var arguments: [String] = []

        func run() async throws {
            try await reportingErrors {
                let path = executable.hasPrefix("/") ? executable : FileManager.default.currentDirectoryPath + "/" + executable
                // `submit <executable> --name N [args]`: a --name right after the
                // executable is ours, not the program's.
                var arguments = self.arguments
                var name = self.name
                if arguments.count >= 2, arguments[0] == "--name" {
                    name = arguments[1]
                    arguments.removeFirst(2)
                }
                let status = try await address.client.submitTopology(TopologySubmitRequest(executable: path, arguments: arguments, name: name))
                print("topology \(status.name) submitted: \(status.containers.count) container(s); `aqueduct topology status \(status.name)` shows it")
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
                print(row(["TOPOLOGY", "STATE", "CONTAINERS", "RESTARTS"], widths: [width, 11, 10]))
                for topology in topologies {
                    let live = topology.containers.filter { $0.pid != nil }.count
                    print(row([topology.name, topology.state, "\(live)/\(topology.containers.count)", String(topology.containers.reduce(0) { $0 + $1.restarts })],
                              widths: [width, 11, 10]))
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
                print("\(status.name): \(status.state), plan generation \(status.generation), \(status.executable) \(status.arguments.joined(separator: " "))")
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
