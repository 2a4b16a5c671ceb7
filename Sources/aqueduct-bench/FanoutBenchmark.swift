import AqueductCommon
import AqueductLog
import AqueductRecords
import AqueductStorage
import ArgumentParser
import Foundation
import Histogram
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

struct FanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout", abstract: "Writers and tailing readers, without and with a slow reader catching up from the start.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Concurrent writers.") var writers = 8
    @Option(help: "Tailing readers.") var readers = 4
    @Option(help: "Bytes per record value.") var recordBytes = 1_024
    @Option(help: "Bytes written before the runs, for the slow reader to catch up on.") var prefillBytes = 1 << 30
    @Option(help: "The slow reader's pace, bytes per second.") var slowReaderBytesPerSecond = 100_000_000
    @Flag(inversion: .prefixedNo, help: "Drop the prefilled segments from the page cache so the slow reader reads the disk.") var cold = true

    func run() async throws {
        try await FanoutBenchmark(
            directory: common.directory, seconds: common.seconds, writers: writers, readers: readers, recordBytes: recordBytes,
            prefillBytes: prefillBytes, slowReaderBytesPerSecond: slowReaderBytesPerSecond, cold: cold
        ).run()
    }
}

/// One log, W writers appending (fsync), K readers tailing it; the same run again with
/// one more reader catching up from offset 0 of a large log. A slow reader must not
/// slow the writers or the tailing readers (BookKeeper's journal/ledger separation).
struct FanoutBenchmark {
    var directory: String
    var seconds: Double
    var writers: Int
    var readers: Int
    var recordBytes: Int
    var prefillBytes: Int
    var slowReaderBytesPerSecond: Int
    var cold = true

    struct Phase {
        var recordsPerSecond: Double
        var histogram: Histogram<UInt64>
        var slowReaderBytesPerSecond: Double
        var tail: Latency { Latency(histogram) }

        static func combine(_ phases: [Phase]) -> Phase {
            var histogram = newHistogram()
            for phase in phases { histogram.add(phase.histogram) }
            let count = Double(phases.count)
            return Phase(
                recordsPerSecond: phases.reduce(0) { $0 + $1.recordsPerSecond } / count, histogram: histogram,
                slowReaderBytesPerSecond: phases.reduce(0) { $0 + $1.slowReaderBytesPerSecond } / count)
        }
    }

    @discardableResult
    func run() async throws -> Bool {
        say("== fanout: \(writers) writers, \(readers) tailing readers, \(recordBytes) B records, \(format(seconds)) s per run; slow reader at \(megabytes(Double(slowReaderBytesPerSecond)))/s from offset 0 of \(megabytes(Double(prefillBytes)))\(cold ? " (cold: read from disk)" : "")")
        let scratch = try scratchDirectory(directory, "fanout")
        defer { try? FileSystem.removeTree(scratch) }
        do {
            let stack = try await BenchStack.open(directory: scratch, durability: .interval(milliseconds: 1_000), create: true)
            let template = benchBatch(records: 64, valueBytes: recordBytes)
            let batches = max(1, prefillBytes / template.readableBytes)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask { for _ in 0..<(batches / 4 + 1) { _ = try await stack.writer.append(template) } }
                }
                try await group.waitForAll()
            }
            try await stack.close()
        }
        let stack = try await BenchStack.open(directory: scratch, durability: .fsync, create: false)
        _ = try await measure(stack: stack, slowReader: false, seconds: min(2, seconds / 3))  // warm-up
        // Alternate the two conditions in rounds so that drift of the shared machine
        // (disk and CPU speed change from minute to minute here) falls on both alike.
        let rounds = 3
        var alonePhases: [Phase] = []
        var disturbedPhases: [Phase] = []
        for _ in 0..<rounds {
            alonePhases.append(try await measure(stack: stack, slowReader: false, seconds: seconds / Double(rounds)))
            if cold { dropPageCache(scratch + "/storage/segments") }
            disturbedPhases.append(try await measure(stack: stack, slowReader: true, seconds: seconds / Double(rounds)))
        }
        let alone = Phase.combine(alonePhases)
        let disturbed = Phase.combine(disturbedPhases)
        say("  without slow reader: \(Int(alone.recordsPerSecond)) records/s written; tail latency \(alone.tail)")
        say("  with slow reader:    \(Int(disturbed.recordsPerSecond)) records/s written; tail latency \(disturbed.tail); slow reader read \(megabytes(disturbed.slowReaderBytesPerSecond))/s")
        say("  (\(rounds) rounds of \(format(seconds / Double(rounds))) s each, alternating)")
        try await stack.close()
        let throughputChange = abs(disturbed.recordsPerSecond / alone.recordsPerSecond - 1)
        let latencyChange = disturbed.tail.p99 / alone.tail.p99 - 1
        let first = verdict("writer throughput change with a slow reader", throughputChange, "<=", 0.10)
        let second = verdict("tail p99 increase with a slow reader", latencyChange, "<=", 0.10)
        return first && second
    }

    private func measure(stack: BenchStack, slowReader: Bool, seconds: Double) async throws -> Phase {
        let start = stack.log.endOffset
        let deadline = Deadline(seconds: seconds)
        let began = monotonicNanoseconds()
        let log = stack.log
        let writer = stack.writer
        let recordBytes = self.recordBytes
        let pace = Double(slowReaderBytesPerSecond)
        enum Outcome {
            case written(Int)
            case tail(Histogram<UInt64>)
            case slow(Int)
        }
        var written = 0
        var tail = newHistogram()
        var slowBytes = 0
        try await withThrowingTaskGroup(of: Outcome.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    var count = 0
                    while !deadline.passed {
                        _ = try await writer.append(benchBatch(records: 1, valueBytes: recordBytes, stamp: monotonicNanoseconds()))
                        count += 1
                    }
                    return .written(count)
                }
            }
            for _ in 0..<readers {
                group.addTask {
                    var histogram = newHistogram()
                    var next = start
                    while !deadline.passed {
                        let read = try await log.read(from: next, maxBytes: 1 << 20, maxWaitNanoseconds: 100_000_000)
                        let now = monotonicNanoseconds()
                        for batch in read.batches {
                            for record in try RecordBatch.records(of: batch) where record.offset >= next {
                                guard let value = record.value, value.count >= 8 else { continue }
                                let stamp = value.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                                if stamp > 0 && stamp <= now { _ = histogram.record(now - stamp) }
                            }
                        }
                        next = read.nextOffset
                    }
                    return .tail(histogram)
                }
            }
            if slowReader {
                group.addTask {
                    var next = log.startOffset
                    var bytes = 0
                    let readerBegan = monotonicNanoseconds()
                    while !deadline.passed && next < start {
                        let read = try await log.read(from: next, maxBytes: 1 << 20)
                        bytes += read.bytes
                        next = read.nextOffset
                        // Keep to the pace: sleep off any lead over it.
                        let due = Double(bytes) / pace
                        let elapsed = Double(monotonicNanoseconds() - readerBegan) / 1e9
                        if due > elapsed { try await Task.sleep(nanoseconds: UInt64((due - elapsed) * 1e9)) }
                    }
                    return .slow(bytes)
                }
            }
            for try await outcome in group {
                switch outcome {
                case .written(let count): written += count
                case .tail(let histogram): tail.add(histogram)
                case .slow(let bytes): slowBytes += bytes
                }
            }
        }
        let elapsed = Double(monotonicNanoseconds() - began) / 1e9
        return Phase(recordsPerSecond: Double(written) / elapsed, histogram: tail, slowReaderBytesPerSecond: Double(slowBytes) / elapsed)
    }

    /// Asks the kernel to drop cached pages of every segment file (POSIX_FADV_DONTNEED).
    private func dropPageCache(_ segments: String) {
        for log in FileSystem.listDirectory(segments) {
            for name in FileSystem.listDirectory(segments + "/" + log) where name.hasSuffix(".seg") {
                let fd = open(segments + "/" + log + "/" + name, O_RDONLY)
                guard fd >= 0 else { continue }
                _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
                close(fd)
            }
        }
    }
}
