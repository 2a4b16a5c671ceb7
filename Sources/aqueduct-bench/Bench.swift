import AqueductCommon
import AqueductStorage
import ArgumentParser
import CAqueduct
import Foundation
import NIOCore

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aqueduct-bench",
        abstract: "Benchmarks of Aqueduct's hot paths, each with a reference measured in the same run.",
        discussion: """
            Build with `swift build -c release --product aqueduct-bench`. Every result is
            printed beside its reference (the disk's own pwrite+fdatasync bandwidth, memcpy
            bandwidth, or the same run without interference) and the ratio is checked
            against the target in docs/BENCHMARKS.md.
            """,
        subcommands: [AppendCommand.self, ReadCommand.self, FanoutCommand.self, ProbeCommand.self, AllCommand.self, TopologyCommand.self])
}

/// The allocator setting the server makes at start (see `Server.tuneAllocator`).
func tuneAllocatorLikeTheServer() {
    if ProcessInfo.processInfo.environment["BENCH_NO_MALLOPT"] == nil { aq_tune_allocator(32 << 20, 128 << 20) }
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Scratch directory on the disk to measure.") var directory = "./bench-data"
    @Option(help: "Seconds each measured phase runs.") var seconds = 10.0
}

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probe", abstract: "The disk's pwrite+fdatasync bandwidth and latency at a write size.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Bytes per write.") var writeBytes = 32_768

    func run() async throws {
        try FileSystem.createDirectory(common.directory)
        let probe = try DiskProbe.run(directory: common.directory, writeBytes: writeBytes, seconds: common.seconds)
        say("probe: \(writeBytes) B writes: \(megabytes(probe.bytesPerSecond))/s, \(Int(probe.syncsPerSecond)) syncs/s, fdatasync \(probe.latency)")
    }
}

struct AllCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "append, read and fanout with their defaults.")
    @OptionGroup var common: CommonOptions

    func run() async throws {
        var passed = true
        passed = try await AppendBenchmark(directory: common.directory, seconds: common.seconds, writers: 32, recordBytes: 1_024, durability: .fsync).run() && passed
        passed = try await ReadBenchmark(directory: common.directory, totalBytes: 1 << 30, recordBytes: 1_024, recordsPerBatch: 64, readBytes: 1 << 20).run() && passed
        passed = try await FanoutBenchmark(
            directory: common.directory, seconds: common.seconds, writers: 8, readers: 4, recordBytes: 1_024,
            prefillBytes: 1 << 30, slowReaderBytesPerSecond: 100_000_000
        ).run() && passed
        say(passed ? "ALL TARGETS MET" : "SOME TARGETS MISSED")
    }
}
