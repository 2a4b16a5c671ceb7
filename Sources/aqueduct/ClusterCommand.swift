import AqueductAPI
import AqueductClient
import ArgumentParser
import Foundation

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Show the cluster: nodes, who writes each partition, what is left to re-replicate.",
        subcommands: [Status.self, Drain.self, Remove.self])

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move every partition off a node (before maintenance); --undo lets it take partitions again.")
        @OptionGroup var address: ServerAddress
        @Argument(help: "The node's id.") var node: Int
        @Flag(help: "Stop draining the node.") var undo = false

        func run() async throws {
            try await reportingErrors {
                _ = try await address.client.drainNode(node, undo: undo)
                print(undo ? "node \(node) takes partitions again" : "node \(node) is draining: its partitions move to the others (`aqueduct cluster status` shows where)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Declare a node gone for good: the copies it held are re-replicated now, without the grace period.")
        @OptionGroup var address: ServerAddress
        @Argument(help: "The node's id.") var node: Int

        func run() async throws {
            try await reportingErrors {
                let status = try await address.client.removeNode(node)
                print("node \(node) removed; under-replicated segments now: \(status.underReplicatedSegments) (they return to zero as they are repaired)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Nodes and their liveness, partitions and their owners, under-replicated segments.")
        @OptionGroup var address: ServerAddress

        func run() async throws {
            try await reportingErrors {
                let status = try await address.client.clusterStatus()
                if status.mode == "single" {
                    print("one node (no --cluster): \(status.partitions.count) partitions, all written here")
                    return
                }
                print("cluster, answered by node \(status.nodeID); under-replicated segments: \(status.underReplicatedSegments)")
                print(row(["NODE", "STATE", "STORAGE", "KAFKA", "HTTP"], widths: [4, 5, 21, 21]))
                for node in status.nodes {
                    print(row([String(node.id), node.live ? "live" : "gone", node.storage ?? "-", node.kafka ?? "-", node.http ?? "-"], widths: [4, 5, 21, 21]))
                }
                let width = max(5, status.partitions.map(\.topic.count).max() ?? 5)
                print(row(["TOPIC", "PARTITION", "OWNER"], widths: [width, 9]))
                for partition in status.partitions {
                    print(row([partition.topic, String(partition.partition), partition.owner.map(String.init) ?? "moving"], widths: [width, 9]))
                }
            }
        }
    }
}
