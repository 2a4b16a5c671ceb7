import AqueductClient
import AqueductAPI
import AqueductLog
import ArgumentParser
import Foundation

struct TopicCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topic",
        abstract: "Create, list, describe and delete topics.",
        subcommands: [Create.self, List.self, Describe.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic.")
        @OptionGroup var address: ServerAddress
        @Argument(help: "Topic name: 1 to 249 of a-z A-Z 0-9 . _ -") var name: String
        @Option(name: .long, help: "Number of partitions.") var partitions = 1
        @Option(name: .long, help: "Delete data older than this (ms; -1 keeps it forever).") var retentionMs: Int64?
        @Option(name: .long, help: "Keep each partition under this many bytes (-1: no limit).") var retentionBytes: Int64?
        @Option(name: .long, help: "Roll segments at this size in bytes.") var segmentBytes: Int64?
        @Option(name: .long, help: "Largest record batch accepted, in bytes.") var maxMessageBytes: Int?
        @Option(name: .long, help: "Cluster mode: copies of each segment (default: the cluster's, 3).") var replicationEnsemble: Int?
        @Option(name: .long, help: "Cluster mode: copies of each record (default: the cluster's, at most the ensemble).") var replicationWrite: Int?
        @Option(name: .long, help: "Cluster mode: copies a record waits for before it is acknowledged (default: the cluster's, 2).") var replicationAck: Int?

        func run() async throws {
            try await reportingErrors {
                let settings = TopicSettings(
                    retentionMs: retentionMs, retentionBytes: retentionBytes, segmentBytes: segmentBytes, maxMessageBytes: maxMessageBytes,
                    replicationEnsemble: replicationEnsemble, replicationWrite: replicationWrite, replicationAck: replicationAck)
                let created = try await address.client.createTopic(name, partitions: partitions, settings: settings)
                print("created topic \(created.name) with \(created.partitions.count) partition\(created.partitions.count == 1 ? "" : "s")")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics with their partitions and end offsets.")
        @OptionGroup var address: ServerAddress

        func run() async throws {
            try await reportingErrors {
                let list = try await address.client.listTopics()
                if list.topics.isEmpty {
                    printError("no topics yet; create one with `aqueduct topic create NAME`")
                    return
                }
                let width = max(5, list.topics.map(\.name.count).max() ?? 5)
                print(row(["TOPIC", "PARTITIONS", "RECORDS"], widths: [width, 10]))
                for topic in list.topics {
                    print(row([topic.name, String(topic.partitions), String(topic.endOffsets.reduce(0, +))], widths: [width, 10]))
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a topic's partitions, offsets, sizes and settings.")
        @OptionGroup var address: ServerAddress
        @Argument var name: String

        func run() async throws {
            try await reportingErrors {
                let topic = try await address.client.describeTopic(name)
                print("topic \(topic.name) (id \(topic.id))")
                let configuration = topic.configuration
                print("  retention: \(configuration.retentionMilliseconds.map { "\($0) ms" } ?? "forever"), "
                    + "\(configuration.retentionBytes.map { "\($0) bytes" } ?? "no size limit"); "
                    + "segments of \(configuration.segmentBytes) bytes; batches up to \(configuration.batchBytesMax) bytes")
                if let ensemble = configuration.replicationEnsemble, let write = configuration.replicationWrite, let ack = configuration.replicationAck {
                    print("  replication: \(ensemble)/\(write)/\(ack) (copies per segment / per record / acknowledgements awaited)")
                }
                let widths = [9, 12, 10, 10]
                print("  " + row(["PARTITION", "START OFFSET", "END OFFSET", "BYTES", "SEGMENTS"], widths: widths))
                for partition in topic.partitions {
                    let fields = [partition.partition, Int(partition.startOffset), Int(partition.endOffset), Int(partition.sizeBytes), partition.segments]
                    print("  " + row(fields.map(String.init), widths: widths))
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a topic and all its records.")
        @OptionGroup var address: ServerAddress
        @Argument var name: String

        func run() async throws {
            try await reportingErrors {
                try await address.client.deleteTopic(name)
                print("deleted topic \(name)")
            }
        }
    }
}

/// Fields padded to `widths` (the last field unpadded), two spaces apart.
func row(_ fields: [String], widths: [Int]) -> String {
    fields.enumerated().map { index, field in
        index < widths.count ? field.padding(toLength: widths[index], withPad: " ", startingAt: 0) : field
    }.joined(separator: "  ")
}
