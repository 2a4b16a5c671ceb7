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

        // Warm up (file creation, first segment), then measure: rounds of appends and of
        // the disk probe alternate, so that drift of the shared machine (its disk's sync
        // latency changes from minute to minute) falls on both alike.
        try await drive(stack: stack, template: template, seconds: min(1, seconds / 5))
        let rounds = durability == .fsync ? 3 : 1
        var records = 0
        var elapsed = 0.0
        var journalBytes = 0.0
        var blocks = 0
        var histogram = newHistogram()
        var probeBytes = 0.0
        var probeSeconds = 0.0
        var probeHistogram = newHistogram()
        var syncs = 0
        var syncNanoseconds = 0
        for _ in 0..<rounds {
            let before = stack.storage.journalStatistics
            let began = monotonicNanoseconds()
            let (count, latencies) = try await drive(stack: stack, template: template, seconds: seconds / Double(rounds))
            elapsed += Double(monotonicNanoseconds() - began) / 1e9
            let after = stack.storage.journalStatistics
            records += count
            histogram.add(latencies)
            blocks += after.blocks - before.blocks
            journalBytes += Double(after.bytes - before.bytes)
            syncNanoseconds += after.syncNanoseconds - before.syncNanoseconds
            guard durability == .fsync else { continue }
            let roundBlock = after.blocks > before.blocks ? (after.bytes - before.bytes) / (after.blocks - before.blocks) : batchBytes
            let probe = try DiskProbe.run(directory: scratch, writeBytes: roundBlock, seconds: seconds / Double(rounds))
            probeBytes += probe.bytesPerSecond * probe.seconds
            probeSeconds += probe.seconds
            probeHistogram.add(probe.histogram)
            syncs += probe.syncs
        }
        try await stack.close()

        let averageBlock = blocks > 0 ? Int(journalBytes) / blocks : batchBytes
        let latency = Latency(histogram)
        let recordsPerSecond = Double(records) / elapsed
        let journalBytesPerSecond = journalBytes / elapsed
        say("  \(Int(recordsPerSecond)) records/s, \(megabytes(recordsPerSecond * Double(recordBytes)))/s of values, journal \(megabytes(journalBytesPerSecond))/s")
        say("  append latency: \(latency)")
        say("  journal: \(blocks) group commits (\(Int(Double(blocks) / elapsed))/s), \(averageBlock) B and \(format(Double(records) / Double(max(blocks, 1)))) records per commit, \(format(Double(syncNanoseconds) / 1_000 / Double(max(blocks, 1)))) us per durable write")

        guard durability == .fsync else { return true }
        let probeLatency = Latency(probeHistogram)
        let probeBytesPerSecond = probeBytes / probeSeconds
        say("  reference (same run, \(rounds) alternating rounds): pwrite+fdatasync at the journal's block size: \(megabytes(probeBytesPerSecond))/s, \(Int(Double(syncs) / probeSeconds)) syncs/s, fdatasync \(probeLatency)")
        let bandwidthRatio = journalBytesPerSecond / probeBytesPerSecond
        let latencyRatio = latency.p99 / probeLatency.p99
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

