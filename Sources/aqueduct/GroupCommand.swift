import AqueductClient
import AqueductAPI
import ArgumentParser
import Foundation

struct GroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group",
        abstract: "Show Kafka consumer groups: members, assignments, committed offsets and lag.",
        subcommands: [List.self, Describe.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List consumer groups with their state, members and lag.")
        @OptionGroup var address: ServerAddress

        func run() async throws {
            try await reportingErrors {
                let groups = try await address.client.listGroups().groups
                if groups.isEmpty {
                    printError("no consumer groups yet; they appear when a Kafka consumer with a group.id joins or commits")
                    return
                }
                let width = max(5, groups.map(\.name.count).max() ?? 5)
                print(row(["GROUP", "STATE", "MEMBERS", "LAG"], widths: [width, 19, 7]))
                for group in groups {
                    print(row([group.name, group.state, String(group.members), String(group.lag)], widths: [width, 19, 7]))
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a group's members, their partitions, and lag per partition.")
        @OptionGroup var address: ServerAddress
        @Argument(help: "The group's name (the consumers' group.id).") var name: String

        func run() async throws {
            try await reportingErrors {
                let group = try await address.client.describeGroup(name)
                let strategy = group.assignmentProtocol.isEmpty ? "" : ", assignment \(group.assignmentProtocol)"
                print("group \(group.name): \(group.state), generation \(group.generation)\(strategy), total lag \(group.lag)")
                if group.members.isEmpty {
                    print("  no members")
                } else {
                    print("  members:")
                    for member in group.members {
                        let partitions = member.assignment.keys.sorted().map { topic in
                            "\(topic)[\(member.assignment[topic]!.map(String.init).joined(separator: ","))]"
                        }.joined(separator: " ")
                        let instance = member.instanceID.map { " instance \($0)" } ?? ""
                        print("    \(member.memberID) (client \(member.clientID) at \(member.clientHost)\(instance)): \(partitions.isEmpty ? "no partitions" : partitions)")
                    }
                }
                guard !group.offsets.isEmpty else {
                    print("  no committed offsets")
                    return
                }
                let width = max(5, group.offsets.map(\.topic.count).max() ?? 5)
                let widths = [width, 9, 16, 10, 8]
                print("  " + row(["TOPIC", "PARTITION", "COMMITTED OFFSET", "END OFFSET", "LAG", "MEMBER"], widths: widths))
                for offset in group.offsets {
                    print("  " + row([
                        offset.topic, String(offset.partition), String(offset.committedOffset), String(offset.endOffset), String(offset.lag),
                        offset.memberID ?? "-",
                    ], widths: widths))
                }
            }
        }
    }
}
