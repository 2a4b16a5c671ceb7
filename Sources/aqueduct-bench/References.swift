import AqueductCommon
import Foundation
import NIOCore
import Histogram

/// The disk's own durable append path, measured the way the journal uses it: one
/// thread appending `writeBytes` with pwrite to a new file and fdatasync after each.
struct DiskProbe {
    var bytesPerSecond: Double
    var syncsPerSecond: Double
    var latency: Latency
    var histogram: Histogram<UInt64>
    var seconds: Double
    var syncs: Int

    static func run(directory: String, writeBytes: Int, seconds: Double) throws -> DiskProbe {
        let path = directory + "/probe-\(UUID().uuidString.prefix(8))"
        let file = try DataFile.open(path, create: true)
        defer {
            file.close()
            try? FileSystem.removeFile(path)
        }
        let block = [UInt8](repeating: 0x5A, count: max(512, writeBytes))
        var histogram = newHistogram()
        var offset: Int64 = 0
        let deadline = Deadline(seconds: seconds)
        let began = monotonicNanoseconds()
        var syncs = 0
        while !deadline.passed {
            let start = monotonicNanoseconds()
            try block.withUnsafeBytes { try file.write($0, at: offset) }
            try file.syncData()
            _ = histogram.record(monotonicNanoseconds() - start)
            offset += Int64(block.count)
            syncs += 1
        }
        let elapsed = Double(monotonicNanoseconds() - began) / 1e9
        return DiskProbe(
            bytesPerSecond: Double(offset) / elapsed, syncsPerSecond: Double(syncs) / elapsed, latency: Latency(histogram),
            histogram: histogram, seconds: elapsed, syncs: syncs)
    }
}

/// memcpy bandwidth of large buffers in this process (bytes copied per second, best of
/// several runs).
func measureMemcpyBytesPerSecond(bufferBytes: Int = 256 << 20, runs: Int = 8) -> Double {
    let source = UnsafeMutableRawPointer.allocate(byteCount: bufferBytes, alignment: 64)
    let destination = UnsafeMutableRawPointer.allocate(byteCount: bufferBytes, alignment: 64)
    defer {
        source.deallocate()
        destination.deallocate()
    }
    memset(source, 1, bufferBytes)
    memset(destination, 2, bufferBytes)
    var best = Double.infinity
    for _ in 0..<runs {
        let start = monotonicNanoseconds()
        memcpy(destination, source, bufferBytes)
        best = min(best, Double(monotonicNanoseconds() - start) / 1e9)
    }
    return Double(bufferBytes) / best
}
