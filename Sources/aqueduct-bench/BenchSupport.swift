import AqueductCommon
import AqueductLog
import AqueductMetadata
import AqueductRecords
import AqueductStorage
import Foundation
import Histogram
import Logging
import NIOCore
import Synchronization

/// A log stack (storage node + metadata + one log) in a scratch directory.
struct BenchStack {
    let storage: StorageNode
    let metadata: EmbeddedMetadataStore
    let logs: LogStore
    let log: Log
    let writer: LogWriter

    static func open(directory: String, durability: DurabilityMode, tailCacheBytes: Int = 64 << 20, create: Bool) async throws -> BenchStack {
        var configuration = StorageConfiguration(directory: directory + "/storage")
        configuration.durability = durability
        configuration.tailCacheBytesMax = tailCacheBytes
        let environment = ProcessInfo.processInfo.environment
        if let value = environment["BENCH_FLUSH_INTERVAL_MS"].flatMap(Int.init) { configuration.flushIntervalMilliseconds = value }
        if let value = environment["BENCH_FLUSH_TRIGGER_MB"].flatMap(Int.init) { configuration.flushTriggerBytes = value << 20 }
        if let value = environment["BENCH_WRITE_CACHE_MB"].flatMap(Int.init) { configuration.writeCacheBytesMax = value << 20 }
        if let value = environment["BENCH_BATCH_WAIT_US"].flatMap(Int.init) { configuration.journalBatchWaitMicroseconds = value }
        if let value = environment["BENCH_JOURNAL_FILE_MB"].flatMap(Int64.init) { configuration.journalFileBytesMax = value << 20 }
        if let value = environment["BENCH_CHECKPOINT_MS"].flatMap(Int.init) { configuration.checkpointIntervalMilliseconds = value }
        if let value = environment["BENCH_JOURNAL_WRITES"].flatMap(Int.init) { configuration.journalWritesInFlightMax = value }
        if let value = environment["BENCH_READ_AHEAD_CHUNKS"].flatMap(Int.init) { configuration.readAheadChunksMax = value }
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let storage = try StorageNode(configuration: configuration, logger: logger)
        let metadata = try EmbeddedMetadataStore(directory: directory + "/metadata", logger: logger)
        let logs = LogStore(storage: storage, metadata: metadata, logger: logger)
        try await logs.open()
        let log: Log
        if create {
            var logConfiguration = LogConfiguration()
            logConfiguration.segmentBytes = 1 << 30
            logConfiguration.retentionMilliseconds = nil
            logConfiguration.batchBytesMax = 8 << 20
            log = try await logs.createLog(name: "bench-0", configuration: logConfiguration)
        } else {
            guard let existing = logs.allLogs.first else { throw BenchError("no log in \(directory)") }
            log = existing
        }
        let writer = try await log.openWriter()
        return BenchStack(storage: storage, metadata: metadata, logs: logs, log: log, writer: writer)
    }

    func close() async throws {
        await storage.close()
        try await metadata.close()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A fresh scratch directory under `base` (removed by `cleanup`).
func scratchDirectory(_ base: String, _ name: String) throws -> String {
    let path = base + "/" + name + "-" + String(UUID().uuidString.prefix(8))
    try FileSystem.createDirectory(path)
    return path
}

/// A record batch of `records` records with `valueBytes`-byte values; the first 8
/// value bytes of each record can carry a timestamp.
func benchBatch(records: Int, valueBytes: Int, stamp: UInt64 = 0) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    var value = [UInt8](repeating: 0x61, count: valueBytes)
    withUnsafeBytes(of: stamp.bigEndian) { raw in
        for index in 0..<min(8, valueBytes) { value[index] = raw[index] }
    }
    for _ in 0..<records { builder.append(timestamp: 1_700_000_000_000, key: nil, value: value) }
    return builder.build()
}

/// Latency percentiles in microseconds.
struct Latency: CustomStringConvertible {
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    var count: UInt64

    init(_ histogram: Histogram<UInt64>) {
        p50 = Double(histogram.valueAtPercentile(50)) / 1_000
        p99 = Double(histogram.valueAtPercentile(99)) / 1_000
        p999 = Double(histogram.valueAtPercentile(99.9)) / 1_000
        max = Double(histogram.max) / 1_000
        count = histogram.totalCount
    }

    var description: String {
        "p50 \(format(p50)) us, p99 \(format(p99)) us, p99.9 \(format(p999)) us, max \(format(max)) us"
    }
}

func newHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
}

func format(_ value: Double, digits: Int = 1) -> String {
    String(format: "%.\(digits)f", value)
}

func megabytes(_ bytes: Double) -> String { format(bytes / 1_000_000) + " MB" }

/// Prints a line and flushes, so progress shows while a long run goes on.
func say(_ text: String) {
    print(text)
    fflush(nil)
}

/// Result line with a target: prints PASS/FAIL and returns whether it passed.
@discardableResult
func verdict(_ name: String, _ value: Double, _ comparison: String, _ target: Double) -> Bool {
    let passed = comparison == ">=" ? value >= target : value <= target
    say("  \(passed ? "PASS" : "FAIL")  \(name) = \(format(value, digits: 3)) (target \(comparison) \(format(target, digits: 2)))")
    return passed
}

/// Waits until a deadline, for runs of fixed length.
struct Deadline {
    let endNanoseconds: UInt64
    init(seconds: Double) { endNanoseconds = monotonicNanoseconds() + UInt64(seconds * 1e9) }
    var passed: Bool { monotonicNanoseconds() >= endNanoseconds }
}

/// A value shared between tasks.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<Result>(_ body: (inout Value) -> Result) -> Result { mutex.withLock { body(&$0) } }
}
