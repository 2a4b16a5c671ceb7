import AqueductCommon
import AqueductLog
import AqueductStorage
import ArgumentParser
import Foundation
import NIOCore
import Histogram

struct AppendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append", abstract: "Concurrent durable appends against the disk's own sync bandwidth.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Concurrent writers.") var writers = 32
    @Option(help: "Bytes per record value.") var recordBytes = 1_024
    @Option(help: "fsync or interval:<ms>.") var durability = "fsync"

    func run() async throws {
        guard let mode = DurabilityMode(parsing: durability) else { throw ValidationError("durability must be fsync or interval:<ms>") }
        try await AppendBenchmark(directory: common.directory, seconds: common.seconds, writers: writers, recordBytes: recordBytes, durability: mode).run()
    }
}

/// N writers, each appending one record per batch and waiting for it, to one log.
/// Reference: the disk probe at the journal's average block size, in the same run.
struct AppendBenchmark {
    var directory: String
    var seconds: Double
    var writers: Int
    var recordBytes: Int
    var durability: DurabilityMode

    @discardableResult
    func run() async throws -> Bool {
        say("== append: \(writers) writers, \(recordBytes) B records, durability \(durability), \(format(seconds)) s")
        let scratch = try scratchDirectory(directory, "append")
        defer { try? FileSystem.removeTree(scratch) }
        let stack = try await BenchStack.open(directory: scratch, durability: durability, create: true)
        let template = benchBatch(records: 1, valueBytes: recordBytes)
        let batchBytes = template.readableBytes

        // Warm up (file creation, first segment), then measure.
        try await drive(stack: stack, template: template, seconds: min(1, seconds / 5))
        let before = stack.storage.journalStatistics
        let began = monotonicNanoseconds()
        let (records, histogram) = try await drive(stack: stack, template: template, seconds: seconds)
        let elapsed = Double(monotonicNanoseconds() - began) / 1e9
        let after = stack.storage.journalStatistics
        try await stack.close()

        let blocks = after.blocks - before.blocks
        let journalBytes = Double(after.bytes - before.bytes)
        let averageBlock = blocks > 0 ? Int(journalBytes) / blocks : batchBytes
        let latency = Latency(histogram)
        let recordsPerSecond = Double(records) / elapsed
        let journalBytesPerSecond = journalBytes / elapsed
        say("  \(Int(recordsPerSecond)) records/s, \(megabytes(recordsPerSecond * Double(recordBytes)))/s of values, journal \(megabytes(journalBytesPerSecond))/s")
        say("  append latency: \(latency)")
        say("  journal: \(blocks) group commits (\(Int(Double(blocks) / elapsed))/s), \(averageBlock) B and \(format(Double(records) / Double(max(blocks, 1)))) records per commit")

        guard durability == .fsync else { return true }
        let probe = try DiskProbe.run(directory: scratch, writeBytes: averageBlock, seconds: seconds)
        say("  reference (same run): pwrite+fdatasync of \(averageBlock) B: \(megabytes(probe.bytesPerSecond))/s, fdatasync \(probe.latency)")
        let bandwidthRatio = journalBytesPerSecond / probe.bytesPerSecond
        let latencyRatio = latency.p99 / probe.latency.p99
        let first = verdict("journal bandwidth / probe bandwidth", bandwidthRatio, ">=", 0.8)
        let second = verdict("append p99 / probe fdatasync p99", latencyRatio, "<=", 2.0)
        return first && second
    }

    /// Runs the writers until the deadline; returns records appended and their latencies.
    @discardableResult
    private func drive(stack: BenchStack, template: ByteBuffer, seconds: Double) async throws -> (Int, Histogram<UInt64>) {
        let deadline = Deadline(seconds: seconds)
        let writer = stack.writer
        return try await withThrowingTaskGroup(of: (Int, Histogram<UInt64>).self) { group in
            for _ in 0..<writers {
                group.addTask {
                    var histogram = newHistogram()
                    var count = 0
                    while !deadline.passed {
                        let start = monotonicNanoseconds()
                        _ = try await writer.append(template)
                        _ = histogram.record(monotonicNanoseconds() - start)
                        count += 1
                    }
                    return (count, histogram)
                }
            }
            var total = 0
            var merged = newHistogram()
            for try await (count, histogram) in group {
                total += count
                merged.add(histogram)
            }
            return (total, merged)
        }
    }
}
