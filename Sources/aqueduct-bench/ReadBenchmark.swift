import AqueductCommon
import AqueductLog
import AqueductStorage
import ArgumentParser
import Foundation
import NIOCore

struct ReadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read", abstract: "Catch-up reads of a large log from segment files against memcpy bandwidth.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Bytes to write and read back.") var totalBytes = 1 << 30
    @Option(help: "Bytes per record value.") var recordBytes = 1_024
    @Option(help: "Records per batch.") var recordsPerBatch = 64
    @Option(help: "Bytes asked for per read.") var readBytes = 1 << 20

    func run() async throws {
        tuneAllocatorLikeTheServer()
        try await ReadBenchmark(directory: common.directory, totalBytes: totalBytes, recordBytes: recordBytes, recordsPerBatch: recordsPerBatch, readBytes: readBytes).run()
    }
}

/// Writes a log, reopens it (memory empty, so every read goes to segment files through
/// the bounded read pool, CRCs checked), and reads it from the start.
/// Reference: memcpy bandwidth in this process.
struct ReadBenchmark {
    var directory: String
    var totalBytes: Int
    var recordBytes: Int
    var recordsPerBatch: Int
    var readBytes: Int

    @discardableResult
    func run() async throws -> Bool {
        say("== read: \(megabytes(Double(totalBytes))) log, \(recordsPerBatch) x \(recordBytes) B records per batch, \(readBytes) B per read")
        let scratch = try scratchDirectory(directory, "read")
        defer { try? FileSystem.removeTree(scratch) }
        do {
            let stack = try await BenchStack.open(directory: scratch, durability: .interval(milliseconds: 1_000), create: true)
            let template = benchBatch(records: recordsPerBatch, valueBytes: recordBytes)
            let batches = max(1, totalBytes / template.readableBytes)
            try await withThrowingTaskGroup(of: Void.self) { group in
                let perTask = batches / 4 + 1
                for _ in 0..<4 {
                    group.addTask { for _ in 0..<perTask { _ = try await stack.writer.append(template) } }
                }
                try await group.waitForAll()
            }
            try await stack.close()
        }
        // What the disk path alone gives: pread of every segment file in chunks of the
        // same size into one reused buffer, with and without a CRC pass over each chunk.
        let raw = try rawReadBytesPerSecond(scratch + "/storage/segments", chunkBytes: readBytes, checksum: false)
        let rawChecked = try rawReadBytesPerSecond(scratch + "/storage/segments", chunkBytes: readBytes, checksum: true)
        let stack = try await BenchStack.open(directory: scratch, durability: .fsync, tailCacheBytes: 0, create: false)
        let end = stack.log.endOffset
        // Three passes from the start; the best one counts (the first may still fault
        // pages of the just-written files into the page cache).
        var best = Double.infinity
        var bytes = 0
        for _ in 0..<3 {
            var next: Int64 = 0
            bytes = 0
            let began = monotonicNanoseconds()
            while next < end {
                let read = try await stack.log.read(from: next, maxBytes: readBytes)
                bytes += read.bytes
                next = read.nextOffset
            }
            best = min(best, Double(monotonicNanoseconds() - began) / 1e9)
        }
        let elapsed = best
        try await stack.close()
        let readBytesPerSecond = Double(bytes) / elapsed
        let memcpy = measureMemcpyBytesPerSecond()
        say("  read \(megabytes(Double(bytes))) in \(format(elapsed, digits: 2)) s: \(megabytes(readBytesPerSecond))/s (segment files via the read pool, CRC-32C checked)")
        say("  reference (same run): memcpy \(megabytes(memcpy))/s; bare pread of the segment files \(megabytes(raw))/s, with a CRC-32C pass \(megabytes(rawChecked))/s")
        return verdict("catch-up read bandwidth / memcpy bandwidth", readBytesPerSecond / memcpy, ">=", 0.25)
    }
}

/// Sequential pread of every `.seg` file under `segments` in `chunkBytes` chunks into one
/// reused buffer: the floor of what a catch-up read costs.
func rawReadBytesPerSecond(_ segments: String, chunkBytes: Int, checksum: Bool) throws -> Double {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
    defer { buffer.deallocate() }
    var total = 0
    var crc: UInt32 = 0
    let began = monotonicNanoseconds()
    for log in FileSystem.listDirectory(segments).sorted() {
        for name in FileSystem.listDirectory(segments + "/" + log).sorted() where name.hasSuffix(".seg") {
            let file = try DataFile.open(segments + "/" + log + "/" + name, create: false, readOnly: true)
            var offset: Int64 = 0
            while true {
                let count = try file.read(into: buffer, at: offset)
                if count == 0 { break }
                if checksum { crc ^= CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) }
                total += count
                offset += Int64(count)
            }
        }
    }
    let elapsed = Double(monotonicNanoseconds() - began) / 1e9
    if crc == 1 { say("") }  // keep the checksum from being optimized away
    return Double(total) / elapsed
}
