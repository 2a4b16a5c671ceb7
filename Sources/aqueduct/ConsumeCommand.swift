import AqueductClient
import AqueductAPI
import ArgumentParser
import Foundation

struct ConsumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume",
        abstract: "Print a topic's records, one value per line.",
        discussion: """
            Reads every partition (or --partition) from the beginning, --offset or
            --from-end, and stops at the end unless --follow is given, in which case it
            waits for new records until interrupted.
            """)

    @OptionGroup var address: ServerAddress
    @Argument(help: "Topic to consume.") var topic: String
    @Option(name: .long, help: "Only this partition.") var partition: Int?
    @Option(name: .long, help: "Start at this offset (in each partition read).") var offset: Int64?
    @Flag(name: .long, help: "Start at the beginning (the default).") var fromBeginning = false
    @Flag(name: .long, help: "Start at the end: only records produced from now on.") var fromEnd = false
    @Flag(name: .long, help: "Keep waiting for new records instead of stopping at the end.") var follow = false
    @Option(name: .long, help: "Stop after this many records.") var maxRecords: Int?
    @Flag(name: .long, help: "Print each record's key before its value.") var printKey = false
    @Flag(name: .long, help: "Print partition:offset before each record.") var printOffset = false
    @Option(name: .long, help: "Separator printed between key, offset and value.") var separator = "\t"

    func validate() throws {
        let starts = [offset != nil, fromBeginning, fromEnd].filter { $0 }.count
        if starts > 1 { throw ValidationError("use only one of --offset, --from-beginning and --from-end") }
        if let maxRecords, maxRecords < 1 { throw ValidationError("--max-records must be at least 1") }
    }

    func run() async throws {
        let client = address.client
        try await reportingErrors {
            let description = try await client.describeTopic(topic)
            let partitions: [Int]
            if let partition {
                guard partition >= 0 && partition < description.partitions.count else {
                    throw ClientError.server(
                        status: 404, code: "UNKNOWN_PARTITION",
                        message: "topic '\(topic)' has partitions 0 to \(description.partitions.count - 1), not \(partition)", hint: nil)
                }
                partitions = [partition]
            } else {
                partitions = description.partitions.map(\.partition)
            }
            let printer = RecordPrinter(limit: maxRecords, printKey: printKey, printOffset: printOffset, separator: separator)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for partition in partitions {
                    let bounds = description.partitions[partition]
                    let start: String
                    if let offset { start = String(offset) } else if fromEnd { start = String(bounds.endOffset) } else { start = "earliest" }
                    group.addTask {
                        try await consume(client: client, partition: partition, from: start, until: follow ? nil : bounds.endOffset, printer: printer)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    private func consume(client: AqueductClient, partition: Int, from start: String, until end: Int64?, printer: RecordPrinter) async throws {
        var next = start
        while !printer.done {
            if let end, let position = Int64(next), position >= end { return }
            let response = try await client.fetch(topic, partition: partition, offset: next, maxWaitMilliseconds: end == nil ? 1_000 : 0)
            for record in response.records {
                if let end, record.offset >= end { return }
                if !printer.print(record) { return }
            }
            if end != nil && response.records.isEmpty && response.nextOffset >= response.endOffset { return }
            next = String(response.nextOffset)
        }
    }
}

/// Prints records from several partitions, one whole line at a time, up to a limit.
final class RecordPrinter: @unchecked Sendable {
    private let lock = NSLock()
    private var printed = 0
    private let limit: Int?
    private let printKey: Bool
    private let printOffset: Bool
    private let separator: String

    init(limit: Int?, printKey: Bool, printOffset: Bool, separator: String) {
        self.limit = limit
        self.printKey = printKey
        self.printOffset = printOffset
        self.separator = separator
    }

    var done: Bool {
        lock.lock()
        defer { lock.unlock() }
        return limit.map { printed >= $0 } ?? false
    }

    /// Prints one record; false once the limit is reached.
    func print(_ record: FetchedRecordJSON) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if let limit, printed >= limit { return false }
        var fields: [String] = []
        if printOffset { fields.append("\(record.partition):\(record.offset)") }
        if printKey { fields.append(record.key ?? "") }
        fields.append(record.value ?? "")
        Swift.print(fields.joined(separator: separator))
        fflush(nil)
        printed += 1
        return true
    }
}
