import AqueductClient
import AqueductAPI
import ArgumentParser
import Foundation

struct ProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Produce the lines of standard input as records.",
        discussion: """
            Each line is one record. With --key-separator, the text before the first
            separator is the record's key (lines without it have no key). Records with a
            key go to the partition Kafka clients would pick for that key.
            """)

    @OptionGroup var address: ServerAddress
    @Argument(help: "Topic to produce to.") var topic: String
    @Option(name: .long, help: "Split each line at the first SEP into key and value.") var keySeparator: String?
    @Option(name: .long, help: "Send every record to this partition.") var partition: Int?
    @Option(name: .long, help: "Most lines sent in one request.") var batchRecords = 1_000
    @Flag(name: .long, help: "Report progress on standard error even when it is not a terminal.") var progress = false

    func validate() throws {
        guard (1...100_000).contains(batchRecords) else { throw ValidationError("--batch-records must be 1 to 100000") }
        if let keySeparator, keySeparator.isEmpty { throw ValidationError("--key-separator must not be empty") }
    }

    func run() async throws {
        let client = address.client
        let lines = StandardInputLines(bufferLinesMax: batchRecords * 4)
        let showProgress = progress || isatty(STDERR_FILENO) == 1
        let started = Date()
        var sent = 0
        var lastReport = Date()
        try await reportingErrors {
            while let batch = await lines.nextBatch(maxLines: batchRecords) {
                let records = batch.map { line -> ProduceRecordJSON in
                    if let keySeparator, let range = line.range(of: keySeparator) {
                        return ProduceRecordJSON(key: String(line[..<range.lowerBound]), value: String(line[range.upperBound...]), partition: partition)
                    }
                    return ProduceRecordJSON(value: line, partition: partition)
                }
                _ = try await client.produce(topic, records: records)
                sent += records.count
                if showProgress && Date().timeIntervalSince(lastReport) >= 0.5 {
                    let rate = Double(sent) / max(Date().timeIntervalSince(started), 0.001)
                    FileHandle.standardError.write(Data("\rproduced \(sent) records (\(Int(rate)) records/s)".utf8))
                    lastReport = Date()
                }
            }
        }
        if showProgress { FileHandle.standardError.write(Data("\r".utf8)) }
        printError("produced \(sent) record\(sent == 1 ? "" : "s") to \(topic)")
    }
}

/// Lines of standard input, read on a thread of their own (reads block) and handed
/// over in batches: a batch ends when it is full or when no line has arrived for a
/// moment, so interactive input is sent at once and piped input in large requests.
final class StandardInputLines: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [String] = []
    private var finished = false
    private let bufferLinesMax: Int

    init(bufferLinesMax: Int) {
        self.bufferLinesMax = bufferLinesMax
        let thread = Thread { [self] in
            while let line = readLine(strippingNewline: true) {
                condition.lock()
                while lines.count >= self.bufferLinesMax { condition.wait() }
                lines.append(line)
                condition.broadcast()
                condition.unlock()
            }
            condition.lock()
            finished = true
            condition.broadcast()
            condition.unlock()
        }
        thread.start()
    }

    /// Up to `maxLines` lines, or nil at the end of input.
    func nextBatch(maxLines: Int) async -> [String]? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [self] in
                condition.lock()
                while lines.isEmpty && !finished { condition.wait() }
                // Give a burst of piped input a moment to fill the batch.
                let deadline = Date(timeIntervalSinceNow: 0.005)
                while lines.count < maxLines && !finished {
                    if !condition.wait(until: deadline) { break }
                }
                if lines.isEmpty && finished {
                    condition.unlock()
                    continuation.resume(returning: nil)
                    return
                }
                let count = min(maxLines, lines.count)
                let batch = Array(lines.prefix(count))
                lines.removeFirst(count)
                condition.broadcast()
                condition.unlock()
                continuation.resume(returning: batch)
            }
        }
    }
}
