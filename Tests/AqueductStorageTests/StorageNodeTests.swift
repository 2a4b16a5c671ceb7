import AqueductTestSupport
import AqueductCommon
import AqueductRecords
import Foundation
import NIOCore
import Testing

@testable import AqueductStorage

@Suite struct StorageNodeTests {
    let segment = SegmentID(logID: 7, number: 1)

    @Test func appendsAreReadBackFromMemoryAndFromSegmentFiles() async throws {
        let directory = temporaryDirectory()
        var configuration = testConfiguration(directory)
        configuration.tailCacheBytesMax = 1  // everything flushed leaves memory
        let node = try StorageNode(configuration: configuration)
        try await node.createSegment(segment, baseOffset: 100, epoch: 1)
        var next: Int64 = 100
        for size in [1, 3, 1, 10, 2] {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: next, records: size))
            next += Int64(size)
        }
        let fromMemory = try await node.read(segment, from: 100, maxBytes: 1 << 20)
        #expect(fromMemory.fromCache)
        #expect(try recordOffsets(fromMemory.batches) == Array(100..<next))

        await node.flush()
        let fromDisk = try await node.read(segment, from: 104, maxBytes: 1 << 20)
        #expect(!fromDisk.fromCache)
        #expect(try recordOffsets(fromDisk.batches) == Array(104..<next))
        // A read from inside a batch returns the whole batch holding the offset.
        let inside = try await node.read(segment, from: 107, maxBytes: 1)
        #expect(try recordOffsets(inside.batches) == Array(105..<115))
        #expect(inside.nextOffset == 115)
        #expect(try await readAll(node, segment, from: 100, maxBytes: 200) == Array(100..<next))
        #expect(node.segmentInfo(segment)?.endOffset == next)
        await #expect(throws: StorageError.self) { try await node.read(segment, from: next + 1, maxBytes: 100) }
        await #expect(throws: StorageError.self) { try await node.read(segment, from: 99, maxBytes: 100) }
        await node.close()
    }

    @Test(arguments: [1, 2, 4])
    func concurrentAppendsAreGroupCommittedAndSurviveRestart(writesInFlight: Int) async throws {
        let directory = temporaryDirectory()
        var configuration = testConfiguration(directory)
        configuration.journalWritesInFlightMax = writesInFlight
        // Files this small roll many times while writes are in flight.
        configuration.journalBatchBytesMax = 8 << 10
        configuration.journalFileBytesMax = 96 << 10
        let node = try StorageNode(configuration: configuration)
        let segments = (0..<8).map { SegmentID(logID: UInt64($0), number: 1) }
        for id in segments { try await node.createSegment(id, baseOffset: 0, epoch: 1) }
        // 8 writers, one per segment, 200 appends each, all at once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in segments {
                group.addTask {
                    for offset in 0..<200 { try await node.append(id, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
                }
            }
            try await group.waitForAll()
        }
        #expect(node.journalStatistics.blocks > 20)
        await node.close()
        let reopened = try StorageNode(configuration: configuration)
        #expect(reopened.recoveryReport.corruptJournalBlocks == 0 && reopened.recoveryReport.tornTailBytes == 0)
        for id in segments {
            #expect(try await readAll(reopened, id, from: 0) == Array(0..<200))
        }
        await reopened.close()
    }

    @Test func everyAcknowledgedEntrySurvivesACrashAtAnyPoint() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        var crashes: [(directory: String, acknowledged: Int64)] = []
        for offset in 0..<300 {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset), valueBytes: 300))
            if offset % 50 == 49 { crashes.append((try crashCopy(of: directory), Int64(offset + 1))) }
            if offset == 120 { await node.flush() }  // some crashes after a checkpoint, some before
        }
        await node.close()
        for crash in crashes {
            let recovered = try StorageNode(configuration: testConfiguration(crash.directory))
            let offsets = try await readAll(recovered, segment, from: 0)
            #expect(offsets == Array(0..<crash.acknowledged), "crash after \(crash.acknowledged) acknowledgements")
            // And it takes new appends where it left off.
            try await recovered.append(segment, epoch: 1, batch: makeBatch(baseOffset: crash.acknowledged))
            await recovered.close()
        }
    }

    /// Large batches are written from their own buffers and their journal blocks'
    /// checksums combine the batches' verified CRCs: recovery must accept those blocks
    /// and still catch a flipped byte in one.
    @Test func blocksWithLargeBatchesRecoverAndDamageInThemIsCaught() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<12 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset), valueBytes: 9_000)) }
        let crashed = try crashCopy(of: directory)
        let damaged = try crashCopy(of: directory)
        await node.close()

        let recovered = try StorageNode(configuration: testConfiguration(crashed))
        #expect(recovered.recoveryReport.corruptJournalBlocks == 0 && recovered.recoveryReport.tornTailBytes == 0)
        #expect(try await readAll(recovered, segment, from: 0) == Array(0..<12))
        await recovered.close()

        // Flip a byte inside the value of the 4th batch's journal copy (the block's CRC
        // was combined, not computed over it): the block must fail its check.
        let journalDirectory = damaged + "/journal"
        let name = FileSystem.listDirectory(journalDirectory).sorted().last!
        let file = try DataFile.open(journalDirectory + "/" + name)
        let contents = try file.read(count: Int(try file.size()), at: 0)
        var index = 0
        for _ in 0..<4 {  // create + adds 0...2
            guard case .block(_, _, let size) = JournalFormat.parseBlock(contents, at: index) else { Issue.record("no block"); return }
            index += size
        }
        let target = index + JournalFormat.blockHeaderBytes + JournalFormat.recordHeaderBytes + RecordBatchHeader.size + 4_000
        let original: UInt8 = contents.getInteger(at: target)!
        try file.write([original ^ 0x01], at: Int64(target))
        guard case .invalid = JournalFormat.parseBlock(try file.read(count: Int(try file.size()), at: 0), at: index) else {
            Issue.record("a flipped byte in a large batch must fail the block's checksum")
            return
        }
    }

    @Test func aTornJournalTailIsCutOff() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<20 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        let crashed = try crashCopy(of: directory)
        await node.close()

        // The process died in the middle of writing the next block.
        let tail = try journalTail(crashed)
        let file = try DataFile.open(tail.path)
        var block = ByteBuffer()
        let start = JournalFormat.beginBlock(&block)
        JournalFormat.writeRecordHeader(.add, segment: segment, epoch: 1, value: 20, payloadBytes: 200, to: &block)
        block.writeRepeatingByte(0xAB, count: 200)
        JournalFormat.sealBlock(&block, start: start, sequence: tail.nextSequence)
        try file.write(block.getSlice(at: 0, length: block.readableBytes / 2)!, at: Int64(tail.offset))

        let recovered = try StorageNode(configuration: testConfiguration(crashed))
        #expect(recovered.recoveryReport.tornTailBytes > 0)
        #expect(recovered.recoveryReport.corruptJournalBlocks == 0)
        #expect(try await readAll(recovered, segment, from: 0) == Array(0..<20))
        await recovered.close()
    }

    @Test func aFlippedByteInASegmentIsRefusedNotServed() async throws {
        let directory = temporaryDirectory()
        var configuration = testConfiguration(directory)
        configuration.tailCacheBytesMax = 1
        let node = try StorageNode(configuration: configuration)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<50 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        await node.close()

        // Flip one byte inside the value of a batch in the middle of the file.
        let paths = SegmentFile.paths(directory: directory, id: segment)
        let file = try DataFile.open(paths.data)
        let batchBytes = makeBatch(baseOffset: 0).readableBytes
        let position = Int64(batchBytes * 25 + 80)
        var byte = try file.read(count: 1, at: position)
        try file.write([byte.readInteger(as: UInt8.self)! ^ 0x40], at: position)

        let reopened = try StorageNode(configuration: configuration)
        await #expect(throws: StorageError.self) { try await reopened.read(segment, from: 25, maxBytes: 100) }
        do {
            _ = try await reopened.read(segment, from: 20, maxBytes: 1 << 20)
            Issue.record("a read across the damaged batch must fail")
        } catch {
            if case .corruptEntry(_, let at, _) = error {
                #expect(at == Int64(batchBytes * 25))
            } else {
                Issue.record("unexpected error \(error)")
            }
        }
        // What is before and after the damage is still served.
        #expect(try recordOffsets(try await reopened.read(segment, from: 0, maxBytes: batchBytes * 3).batches) == [0, 1, 2])
        #expect(try recordOffsets(try await reopened.read(segment, from: 26, maxBytes: batchBytes).batches) == [26])
        await reopened.close()
    }

    @Test func aMissingOrDamagedIndexIsRebuilt() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<100 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        await node.close()
        let paths = SegmentFile.paths(directory: directory, id: segment)
        let goodIndex = try FileSystem.readWholeFile(paths.index)!
        #expect(goodIndex.count > 16)

        for damage in ["missing", "garbage", "stale"] {
            switch damage {
            case "missing": try FileSystem.removeFile(paths.index)
            case "garbage": try FileSystem.atomicReplace(paths.index, contents: [UInt8](repeating: 0xEE, count: 37))
            default:  // entries pointing at wrong positions
                var stale = goodIndex
                stale[stale.count - 1] ^= 0x01
                try FileSystem.atomicReplace(paths.index, contents: stale)
            }
            let reopened = try StorageNode(configuration: testConfiguration(directory))
            #expect(reopened.recoveryReport.rebuiltIndexes == [segment], "\(damage)")
            #expect(try FileSystem.readWholeFile(paths.index) == goodIndex, "\(damage)")
            #expect(try await readAll(reopened, segment, from: 57) == Array(57..<100))
            await reopened.close()
        }
    }

    @Test func aFencedWriterCannotAppendAndItsLaterAppendsNeverReachDisk() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 0))
        let fenced = try await node.fence(segment, epoch: 2)
        #expect(fenced.endOffset == 1)
        await #expect(throws: StorageError.fenced(segment, writerEpoch: 1, fencedEpoch: 2)) {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 1))
        }
        await node.close()
        let reopened = try StorageNode(configuration: testConfiguration(directory))
        #expect(reopened.segmentInfo(segment)?.fencedEpoch == 2)
        #expect(try await readAll(reopened, segment, from: 0) == [0])
        await #expect(throws: StorageError.self) {
            try await reopened.append(segment, epoch: 1, batch: makeBatch(baseOffset: 1))
        }
        await reopened.close()
    }

    @Test func appendsMustContinueTheOffsetsAndRespectSeals() async throws {
        let node = try StorageNode(configuration: testConfiguration(temporaryDirectory()))
        try await node.createSegment(segment, baseOffset: 10, epoch: 1)
        await #expect(throws: StorageError.offsetMismatch(segment, expected: 10, got: 11)) {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 11))
        }
        try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 10, records: 2))
        try await node.seal(segment)
        await #expect(throws: StorageError.sealed(segment)) {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 12))
        }
        await #expect(throws: StorageError.segmentExists(segment)) { try await node.createSegment(segment, baseOffset: 0, epoch: 1) }
        #expect(await node.waitForEntries(segment, at: 12, timeoutNanoseconds: 1_000_000_000) == .sealed)
        await node.close()
    }

    @Test func tailingReadersWakeOnAppendAndTimeOutOtherwise() async throws {
        let node = try StorageNode(configuration: testConfiguration(temporaryDirectory()))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        #expect(await node.waitForEntries(segment, at: 0, timeoutNanoseconds: 20_000_000) == .timedOut)
        async let woken = node.waitForEntries(segment, at: 0, timeoutNanoseconds: 60_000_000_000)
        try await waitUntil { node.waitingReaders == 1 }
        try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 0))
        #expect(await woken == .available)
        await node.close()
    }

    @Test func deletedSegmentsAreGoneAfterRestart() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        let other = SegmentID(logID: 7, number: 2)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        try await node.createSegment(other, baseOffset: 0, epoch: 1)
        try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 0))
        await node.flush()
        try await node.deleteSegment(segment)
        #expect(!FileSystem.exists(SegmentFile.paths(directory: directory, id: segment).data))
        let crashed = try crashCopy(of: directory)
        await node.close()
        for path in [directory, crashed] {
            let reopened = try StorageNode(configuration: testConfiguration(path))
            #expect(reopened.allSegments().map(\.id) == [other])
            await reopened.close()
        }
    }

    @Test func aDamagedJournalBlockBeforeTheTailIsReportedAndItsOffsetsRefused() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        // One append per block: each waits for the previous acknowledgement.
        for offset in 0..<10 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        let crashed = try crashCopy(of: directory)
        await node.close()

        // Damage the block holding offset 4 (the 6th block: create + adds 0...3 before it).
        let journalDirectory = crashed + "/journal"
        let name = FileSystem.listDirectory(journalDirectory).sorted().last!
        let file = try DataFile.open(journalDirectory + "/" + name)
        let contents = try file.read(count: Int(try file.size()), at: 0)
        var index = 0
        for _ in 0..<5 {
            guard case .block(_, _, let size) = JournalFormat.parseBlock(contents, at: index) else { Issue.record("no block"); return }
            index += size
        }
        // Inside the record batch's value, past the block's headers.
        let target = index + JournalFormat.blockHeaderBytes + JournalFormat.recordHeaderBytes + RecordBatchHeader.size + 20
        let original: UInt8 = contents.getInteger(at: target)!
        try file.write([original ^ 0x5A], at: Int64(target))

        let recovered = try StorageNode(configuration: testConfiguration(crashed))
        #expect(recovered.recoveryReport.corruptJournalBlocks == 1)
        #expect(recovered.recoveryReport.damagedSegments[segment] != nil)
        #expect(recovered.segmentInfo(segment)?.damaged == [4..<5])
        await #expect(throws: StorageError.dataLoss(segment, offsets: 4..<5)) {
            try await recovered.read(segment, from: 4, maxBytes: 100)
        }
        #expect(try await readAll(recovered, segment, from: 5) == Array(5..<10))
        await recovered.close()
    }

    @Test func aDamagedBlockWithOnlyItsInFlightNeighboursAfterItIsATornTail() async throws {
        let directory = temporaryDirectory()
        let node = try StorageNode(configuration: testConfiguration(directory))
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<10 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        let crashed = try crashCopy(of: directory)
        await node.close()

        // Two writes were in flight at the crash: the block of offset 8 is torn, the
        // block of offset 9 (the journal's last) was written beside it. Neither can have
        // been acknowledged, so both are cut, and nothing is reported lost.
        let journalDirectory = crashed + "/journal"
        let name = FileSystem.listDirectory(journalDirectory).sorted().last!
        let file = try DataFile.open(journalDirectory + "/" + name)
        let contents = try file.read(count: Int(try file.size()), at: 0)
        var index = 0
        for _ in 0..<9 {  // create + adds 0...7
            guard case .block(_, _, let size) = JournalFormat.parseBlock(contents, at: index) else { Issue.record("no block"); return }
            index += size
        }
        let target = index + JournalFormat.blockHeaderBytes + JournalFormat.recordHeaderBytes + RecordBatchHeader.size + 20
        let original: UInt8 = contents.getInteger(at: target)!
        try file.write([original ^ 0x5A], at: Int64(target))

        let recovered = try StorageNode(configuration: testConfiguration(crashed))
        #expect(recovered.recoveryReport.corruptJournalBlocks == 0)
        #expect(recovered.recoveryReport.tornTailBytes > 0)
        #expect(recovered.recoveryReport.damagedSegments.isEmpty)
        #expect(try await readAll(recovered, segment, from: 0) == Array(0..<8))
        // And it takes new appends where it left off.
        try await recovered.append(segment, epoch: 1, batch: makeBatch(baseOffset: 8))
        #expect(try await readAll(recovered, segment, from: 0) == Array(0..<9))
        await recovered.close()
    }

    @Test func writersWaitWhenEntryStorageFallsBehind() async throws {
        var configuration = testConfiguration(temporaryDirectory())
        let batch = makeBatch(baseOffset: 0, valueBytes: 1_000)
        configuration.writeCacheBytesMax = batch.readableBytes * 4
        configuration.entryBytesMax = batch.readableBytes * 2
        configuration.flushTriggerBytes = 1 << 30  // no flush unless asked
        let node = try StorageNode(configuration: configuration)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<4 {
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset), valueBytes: 1_000))
        }
        // The budget holds four unflushed entries: the fifth append waits for a flush.
        let fifth = Task { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: 4, valueBytes: 1_000)) }
        try await waitUntil { node.appendsWaitingForBudget == 1 }
        #expect(node.segmentInfo(segment)?.endOffset == 4, "the fifth append must still be waiting")
        await node.flush()
        try await fifth.value
        #expect(try await readAll(node, segment, from: 0) == Array(0..<5))
        await node.close()
    }
}

@Suite struct DurabilityModeTests {
    @Test func parsesTheDocumentedForms() {
        #expect(DurabilityMode(parsing: "fsync") == .fsync)
        #expect(DurabilityMode(parsing: "interval:50") == .interval(milliseconds: 50))
        #expect(DurabilityMode(parsing: "interval:0") == nil)
        #expect(DurabilityMode(parsing: "interval:") == nil)
        #expect(DurabilityMode(parsing: "always") == nil)
    }

    @Test func intervalModeAcknowledgesAfterTheWriteAndSurvivesAProcessCrash() async throws {
        let directory = temporaryDirectory()
        var configuration = testConfiguration(directory)
        configuration.durability = .interval(milliseconds: 50)
        let node = try StorageNode(configuration: configuration)
        let segment = SegmentID(logID: 1, number: 1)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<100 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        let crashed = try crashCopy(of: directory)
        await node.close()
        configuration.directory = crashed
        let recovered = try StorageNode(configuration: configuration)
        #expect(try await readAll(recovered, segment, from: 0) == Array(0..<100))
        await recovered.close()
    }
}

@Suite struct JournalFileTests {
    @Test func journalFilesAreRecycledAndCleanRestartsReportNoDamage() async throws {
        let directory = temporaryDirectory()
        var configuration = testConfiguration(directory)
        configuration.journalFileBytesMax = 2 << 20
        configuration.journalBatchBytesMax = 256 << 10
        configuration.checkpointIntervalMilliseconds = 10
        let segment = SegmentID(logID: 3, number: 1)
        var next: Int64 = 0
        for round in 0..<3 {
            let node = try StorageNode(configuration: configuration)
            if round == 0 { try await node.createSegment(segment, baseOffset: 0, epoch: 1) }
            // Several journal files' worth, so files roll, get checkpointed and recycled.
            for _ in 0..<40 {
                try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: next, records: 10, valueBytes: 1_000))
                next += 10
                if next % 100 == 0 { await node.flush() }
            }
            let report = node.recoveryReport
            #expect(report.tornTailBytes == 0 && report.corruptJournalBlocks == 0, "round \(round): \(report)")
            await node.close()
            let journalFiles = FileSystem.listDirectory(directory + "/journal")
            #expect(journalFiles.count <= 4, "old files are recycled or deleted: \(journalFiles)")
        }
        let reopened = try StorageNode(configuration: configuration)
        #expect(try await readAll(reopened, segment, from: 0) == Array(0..<next))
        #expect(reopened.recoveryReport.tornTailBytes == 0)
        await reopened.close()
    }
}

@Suite struct SeparateJournalTests {
    @Test func theJournalCanLiveInADirectoryOfItsOwn() async throws {
        let directory = temporaryDirectory()
        let journal = temporaryDirectory("journal")
        var configuration = testConfiguration(directory)
        configuration.journalDirectory = journal
        let segment = SegmentID(logID: 9, number: 1)
        let node = try StorageNode(configuration: configuration)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        for offset in 0..<50 { try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: Int64(offset))) }
        await node.close()
        #expect(FileSystem.listDirectory(journal).contains { $0.hasSuffix(".journal") })
        #expect(!FileSystem.exists(directory + "/journal"))
        let reopened = try StorageNode(configuration: configuration)
        #expect(try await readAll(reopened, segment, from: 0) == Array(0..<50))
        await reopened.close()
    }
}

@Suite struct ReadAheadTests {
    @Test func readAheadReturnsTheSameBatchesAsPlainReads() async throws {
        var configuration = testConfiguration(temporaryDirectory())
        configuration.tailCacheBytesMax = 1
        configuration.readAheadChunksMax = 4
        let node = try StorageNode(configuration: configuration)
        let segment = SegmentID(logID: 5, number: 1)
        try await node.createSegment(segment, baseOffset: 0, epoch: 1)
        var next: Int64 = 0
        for index in 0..<200 {
            let records = 1 + index % 5
            try await node.append(segment, epoch: 1, batch: makeBatch(baseOffset: next, records: records))
            next += Int64(records)
        }
        await node.flush()
        // Sequential reads (read ahead), twice, and one that jumps (the chunk read ahead is not used).
        #expect(try await readAll(node, segment, from: 0, maxBytes: 2_000) == Array(0..<next))
        #expect(try await readAll(node, segment, from: 0, maxBytes: 2_000) == Array(0..<next))
        #expect(try await readAll(node, segment, from: 333, maxBytes: 700) == Array(333..<next))
        await node.close()
    }
}
