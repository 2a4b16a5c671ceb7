import AqueductCommon
import AqueductMetadata
import AqueductRecords
import AqueductStorage
import AqueductTestSupport
import Foundation
import NIOCore
import Testing

@testable import AqueductLog

/// Storage, metadata and logs in one directory, as the server wires them.
struct Stack {
    let directory: String
    let storage: StorageNode
    let metadata: EmbeddedMetadataStore
    let logs: LogStore
    let clock: ManualWallClock

    static func open(_ directory: String, clock: ManualWallClock = ManualWallClock()) async throws -> Stack {
        var configuration = StorageConfiguration(directory: directory + "/storage")
        configuration.flushIntervalMilliseconds = 50
        configuration.indexIntervalBytes = 256
        configuration.journalFileBytesMax = 4 << 20
        let storage = try StorageNode(configuration: configuration)
        let metadata = try EmbeddedMetadataStore(directory: directory + "/metadata")
        let logs = LogStore(storage: storage, metadata: metadata, clock: clock)
        try await logs.open()
        return Stack(directory: directory, storage: storage, metadata: metadata, logs: logs, clock: clock)
    }

    func close() async throws {
        await storage.close()
        try await metadata.close()
    }
}

func batch(_ values: [String], timestamp: Int64 = 1_700_000_000_000) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for value in values { builder.append(timestamp: timestamp, key: nil, value: Array(value.utf8)) }
    return builder.build()
}

/// Every record value from `offset` to the end, with its offset.
func readValues(_ log: Log, from offset: Int64, maxBytes: Int = 300) async throws -> [(Int64, String)] {
    var out: [(Int64, String)] = []
    var next = offset
    while true {
        let read = try await log.read(from: next, maxBytes: maxBytes)
        if read.batches.isEmpty { break }
        for batch in read.batches {
            for record in try RecordBatch.records(of: batch) where record.offset >= next {
                out.append((record.offset, String(decoding: record.value!, as: UTF8.self)))
            }
        }
        next = read.nextOffset
    }
    return out
}

@Suite struct LogTests {
    @Test func offsetsAreDenseAcrossSegmentRolls() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentBytes = 1_024
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        var expected: [(Int64, String)] = []
        for index in 0..<60 {
            let values = (0..<(index % 3 + 1)).map { "v\(index)-\($0)" }
            let appended = try await writer.append(batch(values))
            #expect(appended.baseOffset == Int64(expected.count))
            #expect(appended.lastOffset == Int64(expected.count + values.count - 1))
            for value in values { expected.append((Int64(expected.count), value)) }
        }
        let info = log.info()
        #expect(info.segments.count >= 4, "segments roll at 1 KiB")
        #expect(info.endOffset == Int64(expected.count))
        for (index, segment) in info.segments.enumerated().dropFirst() {
            #expect(segment.baseOffset == info.segments[index - 1].endOffset, "segments are contiguous")
        }
        let all = try await readValues(log, from: 0)
        #expect(all.map(\.0) == expected.map(\.0))
        #expect(all.map(\.1) == expected.map(\.1))
        // A read can start at any offset, including inside a batch.
        for start in [1, 7, 50, Int64(expected.count - 1)] {
            let tail = try await readValues(log, from: Int64(start))
            #expect(tail.map(\.0) == Array(Int64(start)..<Int64(expected.count)))
        }
        try await stack.close()
    }

    /// The log assigns offsets without writing into the producer's buffer (it usually
    /// shares storage with a request); readers, segment files and the journal all get
    /// the assigned offsets, for small batches and for large ones written from their
    /// own buffers, and after a crash.
    @Test func assignedOffsetsReachEveryCopyButNotTheCallersBuffer() async throws {
        let directory = temporaryDirectory()
        let stack = try await Stack.open(directory)
        let log = try await stack.logs.createLog(name: "t-0", configuration: LogConfiguration())
        let writer = try await log.openWriter()
        let large = String(repeating: "x", count: 9_000)
        var sent: [ByteBuffer] = []
        for index in 0..<6 {
            let client = batch(index % 2 == 0 ? ["small-\(index)"] : ["\(large)-\(index)", "second-\(index)"])
            sent.append(client)
            _ = try await writer.append(client)
        }
        #expect(sent.allSatisfy { $0.getInteger(at: 0, as: Int64.self) == 0 }, "the caller's buffers are untouched")
        let expected = ["small-0", "\(large)-1", "second-1", "small-2", "\(large)-3", "second-3", "small-4", "\(large)-5", "second-5"]
        func offsetsAndValues(_ log: Log) async throws -> [(Int64, String)] {
            var result: [(Int64, String)] = []
            var offset: Int64 = 0
            while offset < log.endOffset {
                let read = try await log.read(from: offset, maxBytes: 1 << 20)
                for batch in read.batches {
                    let header = try #require(RecordBatchHeader(from: batch))
                    #expect(header.baseOffset == Int64(result.count) || header.baseOffset <= offset, "batch at \(header.baseOffset)")
                    for record in try RecordBatch.records(of: batch) where record.offset >= offset {
                        result.append((record.offset, String(decoding: record.value ?? [], as: UTF8.self)))
                    }
                }
                offset = read.nextOffset
            }
            return result
        }
        let fromMemory = try await offsetsAndValues(log)
        #expect(fromMemory.map(\.0) == Array(0..<9) && fromMemory.map(\.1) == expected)
        // A crash now: the journal (and whatever the flusher wrote) is all there is.
        let crashed = directory + "-crash"
        try copyLiveDirectory(directory, to: crashed)
        try await stack.close()
        let recovered = try await Stack.open(crashed)
        let reopened = try #require(recovered.logs.allLogs.first { $0.name == "t-0" })
        let afterCrash = try await offsetsAndValues(reopened)
        #expect(afterCrash.map(\.0) == Array(0..<9) && afterCrash.map(\.1) == expected)
        try await recovered.close()
        // And from the segment files, after a clean close.
        let clean = try await Stack.open(directory)
        let fromDisk = try await offsetsAndValues(try #require(clean.logs.allLogs.first { $0.name == "t-0" }))
        #expect(fromDisk.map(\.0) == Array(0..<9) && fromDisk.map(\.1) == expected)
        try await clean.close()
    }

    /// An empty log reopened many times (the consumer offsets log of a server that
    /// restarts without commits): each writer retires the empty segment and starts a
    /// new one, whose number must never be one still in storage.
    @Test func writersOnAnEmptyLogNeverReuseASegmentNumber() async throws {
        let directory = temporaryDirectory()
        var stack = try await Stack.open(directory)
        _ = try await stack.logs.createLog(name: "empty", configuration: LogConfiguration())
        try await stack.close()
        for _ in 0..<4 {
            stack = try await Stack.open(directory)
            let log = try #require(stack.logs.allLogs.first { $0.name == "empty" })
            _ = try await log.openWriter()
            _ = try await log.openWriter()
            try await stack.close()
        }
        stack = try await Stack.open(directory)
        let log = try #require(stack.logs.allLogs.first { $0.name == "empty" })
        let writer = try await log.openWriter()
        #expect(try await writer.append(batch(["finally"])).baseOffset == 0)
        try await stack.close()
    }

    @Test func aNewWriterFencesTheOldOneWhoseAppendsNeverReachDisk() async throws {
        let directory = temporaryDirectory()
        let stack = try await Stack.open(directory)
        let log = try await stack.logs.createLog(name: "t-0", configuration: LogConfiguration())
        let first = try await log.openWriter()
        _ = try await first.append(batch(["a", "b"]))
        let second = try await log.openWriter()
        #expect(second.epoch == first.epoch + 1)
        await #expect(throws: LogError.fenced(logID: log.id, writerEpoch: first.epoch, currentEpoch: second.epoch)) {
            _ = try await first.append(batch(["lost"]))
        }
        let appended = try await second.append(batch(["c"]))
        #expect(appended.baseOffset == 2)
        try await stack.close()

        // After a restart the fenced append is nowhere, and a third writer continues.
        let reopened = try await Stack.open(directory)
        let log2 = try #require(reopened.logs.log(log.id))
        let third = try await log2.openWriter()
        #expect(third.epoch == second.epoch + 1)
        #expect(try await third.append(batch(["d"])).baseOffset == 3)
        #expect(try await readValues(log2, from: 0).map(\.1) == ["a", "b", "c", "d"])
        try await reopened.close()
    }

    @Test func segmentsRollByAge() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentMilliseconds = 60_000
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        _ = try await writer.append(batch(["a"]))
        _ = try await writer.append(batch(["b"]))
        stack.clock.advance(byMilliseconds: 61_000)
        _ = try await writer.append(batch(["c"]))
        let segments = log.info().segments
        #expect(segments.count == 2)
        #expect(segments[0].sealed && segments[0].endOffset == 2)
        #expect(!segments[1].sealed && segments[1].baseOffset == 2)
        try await stack.close()
    }

    @Test func truncationMakesEarlierOffsetsUnreadableAndDropsWholeSegments() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentBytes = 1_024
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        for index in 0..<40 { _ = try await writer.append(batch(["value-\(index)"])) }
        let before = log.info().segments.count
        try await log.truncate(before: 25)
        #expect(log.startOffset == 25)
        #expect(log.info().segments.count < before)
        await #expect(throws: LogError.offsetOutOfRange(offset: 24, startOffset: 25, endOffset: 40)) {
            _ = try await log.read(from: 24, maxBytes: 100)
        }
        #expect(try await readValues(log, from: 25).map(\.0) == Array(25..<40))
        await #expect(throws: LogError.self) { try await log.truncate(before: 41) }
        try await stack.close()
    }

    @Test func retentionDeletesByTimeAndBySize() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentBytes = 1_024
        configuration.retentionMilliseconds = 3_600_000
        configuration.retentionBytes = 3_000
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        let old = stack.clock.nowMilliseconds()
        for index in 0..<20 { _ = try await writer.append(batch(["old-\(index)"], timestamp: old)) }
        // Size: the log is kept at or under 3000 bytes of sealed+active segments.
        for index in 0..<60 { _ = try await writer.append(batch(["new-\(index)"], timestamp: old + 1)) }
        let sizeBefore = log.info().sizeBytes
        #expect(sizeBefore > 3_000)
        try await log.enforceRetention()
        let afterSize = log.info()
        #expect(afterSize.sizeBytes <= 3_000 + 1_024)
        #expect(afterSize.startOffset > 0)
        #expect(try await readValues(log, from: afterSize.startOffset).last?.1 == "new-59")

        // Time: two hours later everything expires, even the active segment.
        stack.clock.advance(byMilliseconds: 2 * 3_600_000)
        try await log.enforceRetention()
        #expect(log.startOffset == 80)
        #expect(log.endOffset == 80)
        #expect(try await writer.append(batch(["fresh"])).baseOffset == 80)
        try await stack.close()
    }

    @Test func readersWaitAtTheEndForNewRecords() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentBytes = 1_024
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        let empty = try await log.read(from: 0, maxBytes: 100, maxWaitNanoseconds: 30_000_000)
        #expect(empty.batches.isEmpty && empty.endOffset == 0)
        async let waited = log.read(from: 0, maxBytes: 100, maxWaitNanoseconds: 60_000_000_000)
        try await waitUntil { stack.storage.waitingReaders == 1 }
        _ = try await writer.append(batch(["hello"]))
        #expect(try await waited.nextOffset == 1)

        // A reader waiting at the end of a segment that rolls moves on to the next one.
        for index in 0..<30 { _ = try await writer.append(batch(["fill-\(index)"])) }
        let end = log.endOffset
        async let acrossRoll = log.read(from: end, maxBytes: 100, maxWaitNanoseconds: 60_000_000_000)
        try await waitUntil { stack.storage.waitingReaders == 1 }
        for index in 0..<30 { _ = try await writer.append(batch(["more-\(index)"])) }
        let read = try await acrossRoll
        #expect(!read.batches.isEmpty)
        try await stack.close()
    }

    @Test func invalidBatchesAreRefusedWithTheReason() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.batchBytesMax = 200
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        var corrupted = batch(["x"])
        corrupted.setInteger(UInt8(0x99), at: corrupted.writerIndex - 1)
        await #expect(throws: LogError.self) { _ = try await writer.append(corrupted) }
        await #expect(throws: LogError.self) { _ = try await writer.append(batch([String(repeating: "y", count: 300)])) }
        #expect(log.endOffset == 0)
        #expect(try await writer.append(batch(["ok"])).baseOffset == 0)
        var bad = LogConfiguration()
        bad.segmentBytes = 10
        await #expect(throws: LogError.self) { _ = try await stack.logs.createLog(name: "bad", configuration: bad) }
        try await stack.close()
    }

    @Test func deletedLogsAreGoneWithTheirSegments() async throws {
        let directory = temporaryDirectory()
        let stack = try await Stack.open(directory)
        let log = try await stack.logs.createLog(name: "t-0", configuration: LogConfiguration())
        let keep = try await stack.logs.createLog(name: "t-1", configuration: LogConfiguration())
        _ = try await log.openWriter().append(batch(["a"]))
        _ = try await keep.openWriter().append(batch(["b"]))
        try await stack.logs.deleteLog(log.id)
        #expect(stack.storage.segments(ofLog: log.id).isEmpty)
        await #expect(throws: LogError.logNotFound(log.id)) { _ = try await log.read(from: 0, maxBytes: 10) }
        try await stack.close()
        let reopened = try await Stack.open(directory)
        #expect(reopened.logs.allLogs.map(\.id) == [keep.id])
        #expect(try await readValues(reopened.logs.log(keep.id)!, from: 0).map(\.1) == ["b"])
        try await reopened.close()
    }

    @Test func manyConcurrentAppendsGetDistinctDenseOffsets() async throws {
        let stack = try await Stack.open(temporaryDirectory())
        var configuration = LogConfiguration()
        configuration.segmentBytes = 4_096
        let log = try await stack.logs.createLog(name: "t-0", configuration: configuration)
        let writer = try await log.openWriter()
        let offsets = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for task in 0..<16 {
                group.addTask {
                    var mine: [Int64] = []
                    for index in 0..<40 { mine.append(try await writer.append(batch(["\(task)-\(index)"])).baseOffset) }
                    return mine
                }
            }
            var all: [Int64] = []
            for try await part in group { all += part }
            return all
        }
        #expect(offsets.sorted() == Array(0..<640))
        let values = try await readValues(log, from: 0)
        #expect(values.map(\.0) == Array(0..<640))
        // Each writer's records are in its own order.
        for task in 0..<16 {
            let mine = values.filter { $0.1.hasPrefix("\(task)-") }.map { Int($0.1.split(separator: "-")[1])! }
            #expect(mine == Array(0..<40))
        }
        try await stack.close()
    }
}
