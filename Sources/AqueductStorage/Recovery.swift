import AqueductCommon
import AqueductRecords
import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization

/// What a storage node found and repaired when it started.
public struct RecoveryReport: Sendable, CustomStringConvertible {
    public var segmentsLoaded = 0
    public var journalBlocksReplayed = 0
    public var entriesReplayed = 0
    /// Bytes of a torn block cut from the journal's end (never acknowledged).
    public var tornTailBytes = 0
    /// Damaged journal blocks followed by good ones: their entries are lost and the
    /// affected offsets are refused to readers.
    public var corruptJournalBlocks = 0
    public var rebuiltIndexes: [SegmentID] = []
    public var damagedSegments: [SegmentID: String] = [:]
    public var orphanSegmentsRemoved = 0
    public var durationMilliseconds = 0

    public var description: String {
        var parts = [
            "\(segmentsLoaded) segments", "\(journalBlocksReplayed) journal blocks replayed (\(entriesReplayed) entries)",
        ]
        if tornTailBytes > 0 { parts.append("\(tornTailBytes) torn bytes cut from the journal tail") }
        if corruptJournalBlocks > 0 { parts.append("\(corruptJournalBlocks) CORRUPT journal blocks") }
        if !rebuiltIndexes.isEmpty { parts.append("\(rebuiltIndexes.count) indexes rebuilt") }
        if !damagedSegments.isEmpty { parts.append("\(damagedSegments.count) DAMAGED segments") }
        if orphanSegmentsRemoved > 0 { parts.append("\(orphanSegmentsRemoved) orphan segments removed") }
        parts.append("\(durationMilliseconds) ms")
        return parts.joined(separator: ", ")
    }
}

/// Brings a storage node's directory back to a consistent state before it serves:
///
/// 1. Load the checkpoint: which segments exist, how many bytes of each were synced,
///    and the journal position from which entries may be missing from them.
/// 2. Open each segment, cut bytes past its synced size (they are in the journal),
///    check its index against the data and rebuild it when missing or damaged.
/// 3. Replay the journal from the checkpoint: creates, fences, seals, deletes and adds
///    (adds already present are skipped by offset). A block torn at the very end was
///    never acknowledged and is dropped; a damaged block with good blocks after it is
///    reported (log, metric, report) and the offsets it held are refused to readers.
/// 4. Sync what was written, write a new checkpoint at the journal's end and start a
///    new journal file, so the next crash replays only new entries.
enum Recovery {
    struct Result {
        var segments: [SegmentID: SegmentState]
        var journalStart: JournalPosition
        var nextSequence: UInt64
        var report: RecoveryReport
    }

    private struct Replayed {
        var file: SegmentFile
        var endOffset: Int64
        var fencedEpoch: UInt64
        var sealed: Bool
        var maxTimestamp: Int64
        var damaged: [Range<Int64>]
    }

    static func run(configuration: StorageConfiguration, journalFiles: JournalFiles, logger: Logger) throws -> Result {
        let began = monotonicNanoseconds()
        let directory = configuration.directory
        let journalDirectory = configuration.journalPath
        var report = RecoveryReport()

        let checkpointPath = directory + "/checkpoint"
        var checkpoint = Checkpoint(journalPosition: JournalPosition(file: 1, offset: 0), nextSequence: 1, segments: [])
        if let bytes = try FileSystem.readWholeFile(checkpointPath) {
            checkpoint = try Checkpoint.decode(bytes, path: checkpointPath)
        } else if let first = FileSystem.listDirectory(journalDirectory).compactMap(JournalFormat.fileNumber).min() {
            checkpoint.journalPosition = JournalPosition(file: first, offset: 0)
        }

        var segments: [SegmentID: Replayed] = [:]
        for saved in checkpoint.segments {
            let recovered = try SegmentFile.recover(
                directory: directory, id: saved.id, baseOffset: saved.baseOffset, validBytes: saved.sizeBytes,
                indexIntervalBytes: configuration.indexIntervalBytes, logger: logger)
            var damaged: [Range<Int64>] = []
            if let damage = recovered.damage {
                report.damagedSegments[saved.id] = damage
                if recovered.endOffset < saved.endOffset { damaged.append(recovered.endOffset..<saved.endOffset) }
                logger.critical("segment file is damaged", metadata: ["segment": "\(saved.id)", "detail": "\(damage)"])
            }
            if recovered.indexRebuilt { report.rebuiltIndexes.append(saved.id) }
            segments[saved.id] = Replayed(
                file: recovered.file, endOffset: max(recovered.endOffset, saved.endOffset), fencedEpoch: saved.fencedEpoch,
                sealed: saved.sealed, maxTimestamp: max(saved.maxTimestamp, recovered.maxTimestamp), damaged: damaged)
        }
        report.segmentsLoaded = segments.count

        // Replay.
        let files = FileSystem.listDirectory(journalDirectory).compactMap(JournalFormat.fileNumber)
            .filter { $0 >= checkpoint.journalPosition.file }.sorted()
        var expectedSequence = checkpoint.nextSequence
        var scratch = ByteBuffer()
        var touched = Set<SegmentID>()
        var lastFile = checkpoint.journalPosition.file
        // After a damaged block, the next good block's sequence is expected to jump.
        var resumingAfterDamage = false

        func apply(_ record: JournalFormat.Record) throws {
            switch record.kind {
            case .create:
                guard segments[record.segment] == nil else { return }
                let file = try SegmentFile.create(
                    directory: directory, id: record.segment, baseOffset: record.value,
                    indexIntervalBytes: configuration.indexIntervalBytes)
                segments[record.segment] = Replayed(
                    file: file, endOffset: record.value, fencedEpoch: record.epoch, sealed: false, maxTimestamp: -1, damaged: [])
            case .fence:
                if let current = segments[record.segment]?.fencedEpoch {
                    segments[record.segment]?.fencedEpoch = max(current, record.epoch)
                }
            case .seal:
                segments[record.segment]?.sealed = true
            case .fileEnd:
                return
            case .delete:
                if let removed = segments.removeValue(forKey: record.segment) {
                    removed.file.removeFiles()
                    touched.remove(record.segment)
                }
            case .add:
                guard var segment = segments[record.segment],
                    let header = RecordBatchHeader(from: record.payload), header.totalSize == record.payload.readableBytes
                else { return }
                if header.lastOffset < segment.endOffset { return }  // already in the segment file
                if header.baseOffset > segment.endOffset {
                    // Entries between are gone: a damaged journal block held them.
                    let lost = segment.endOffset..<header.baseOffset
                    segment.damaged.append(lost)
                    report.damagedSegments[record.segment] = "offsets \(lost) lost in a damaged journal block"
                    logger.critical("offsets lost to journal damage", metadata: ["segment": "\(record.segment)", "offsets": "\(lost)"])
                } else if header.baseOffset < segment.endOffset {
                    return  // overlaps what is there: cannot happen with dense offsets
                }
                try segment.file.append([(header, record.payload)], scratch: &scratch)
                segment.endOffset = header.lastOffset + 1
                segment.maxTimestamp = max(segment.maxTimestamp, header.maxTimestamp)
                segments[record.segment] = segment
                touched.insert(record.segment)
                report.entriesReplayed += 1
            }
        }

        // Past the journal's end (a torn or stale block), later files hold only stale data.
        var ended = false
        fileLoop: for (position, number) in files.enumerated() {
            lastFile = number
            if ended { continue }
            let path = journalDirectory + "/" + JournalFormat.fileName(number: number)
            let file = try DataFile.open(path, create: false)
            let contents = try file.read(count: Int(try file.size()), at: 0)
            file.close()
            var index = number == checkpoint.journalPosition.file ? Int(checkpoint.journalPosition.offset) : 0
            scan: while true {
                switch JournalFormat.parseBlock(contents, at: index) {
                case .end:
                    break scan
                case .block(let sequence, let records, let size):
                    if sequence < expectedSequence && !resumingAfterDamage {
                        // Left from the file's previous life (it was recycled): the journal ends here.
                        ended = true
                        break scan
                    }
                    if sequence != expectedSequence && !resumingAfterDamage {
                        logger.critical("journal block sequence gap", metadata: [
                            "file": "\(path)", "expected": "\(expectedSequence)", "found": "\(sequence)",
                        ])
                        report.corruptJournalBlocks += 1
                    }
                    resumingAfterDamage = false
                    report.journalBlocksReplayed += 1
                    expectedSequence = sequence + 1
                    if records.contains(where: { $0.kind == .fileEnd }) { continue fileLoop }
                    for record in records { try apply(record) }
                    index += size
                case .invalid(let reason):
                    let laterFiles = Array(files[(position + 1)...])
                    if let tornEnd = endOfTornWindow(
                        at: index, in: contents, laterFiles: laterFiles, journalDirectory: journalDirectory,
                        expectedSequence: expectedSequence)
                    {
                        report.tornTailBytes = tornEnd - index
                        logger.warning("journal ends with a torn block and blocks written beside it; cutting them off (never acknowledged)", metadata: [
                            "file": "\(path)", "offset": "\(index)", "bytes": "\(report.tornTailBytes)",
                        ])
                        ended = true
                        break scan
                    }
                    if let (resumeAt, resumeFile) = findNextValidBlock(
                        after: index, in: contents, laterFiles: laterFiles,
                        journalDirectory: journalDirectory, sequenceAbove: expectedSequence)
                    {
                        report.corruptJournalBlocks += 1
                        Counter(label: "aqueduct_storage_checksum_failures_total").increment()
                        logger.critical("damaged journal block before the tail; its entries are lost", metadata: [
                            "file": "\(path)", "offset": "\(index)", "reason": "\(reason)",
                        ])
                        resumingAfterDamage = true
                        if resumeFile == nil {
                            index = resumeAt
                            continue scan
                        }
                        continue fileLoop  // the next valid block starts a later file
                    }
                    // Only a block that starts like the one expected next was being written
                    // (torn); anything else is zeroes or a recycled file's old contents.
                    let startsLikeNext = contents.getInteger(at: index, as: UInt32.self) == JournalFormat.blockMagic
                        && contents.getInteger(at: index + 8, as: UInt64.self) == expectedSequence
                    if startsLikeNext {
                        let declared = contents.getInteger(at: index + 4, as: UInt32.self).map { Int($0) + JournalFormat.blockHeaderBytes }
                        report.tornTailBytes = min(contents.writerIndex - index, declared ?? Int.max)
                        logger.warning("journal ends with a torn block; cutting it off (never acknowledged)", metadata: [
                            "file": "\(path)", "offset": "\(index)", "bytes": "\(report.tornTailBytes)",
                        ])
                    }
                    ended = true
                    break scan
                }
            }
        }

        // Remove segment files that neither the checkpoint nor the journal know.
        let segmentsDirectory = directory + "/segments"
        for logName in FileSystem.listDirectory(segmentsDirectory) {
            guard let logID = UInt64(logName) else { continue }
            for name in FileSystem.listDirectory(segmentsDirectory + "/" + logName) where name.hasSuffix(".seg") {
                guard let number = UInt64(name.dropLast(4)) else { continue }
                let id = SegmentID(logID: logID, number: number)
                if segments[id] == nil {
                    let paths = SegmentFile.paths(directory: directory, id: id)
                    try? FileSystem.removeFile(paths.data)
                    try? FileSystem.removeFile(paths.index)
                    report.orphanSegmentsRemoved += 1
                }
            }
        }

        for id in touched { try segments[id]?.file.sync() }
        let journalStart = JournalPosition(file: lastFile + 1, offset: 0)
        let fresh = Checkpoint(
            journalPosition: journalStart, nextSequence: expectedSequence,
            segments: segments.sorted { $0.key < $1.key }.map { id, segment in
                Checkpoint.Segment(
                    id: id, baseOffset: segment.file.baseOffset, endOffset: segment.endOffset, sizeBytes: segment.file.sizeBytes,
                    fencedEpoch: segment.fencedEpoch, sealed: segment.sealed, maxTimestamp: segment.maxTimestamp)
            })
        try FileSystem.atomicReplace(checkpointPath, contents: fresh.encode())
        journalFiles.recycle(before: journalStart.file)

        var states: [SegmentID: SegmentState] = [:]
        for (id, segment) in segments {
            let state = SegmentState(
                id: id, file: segment.file, endOffset: segment.endOffset, sizeBytes: segment.file.sizeBytes,
                fencedEpoch: segment.fencedEpoch, sealed: segment.sealed, maxTimestamp: segment.maxTimestamp)
            state.guarded.withLock { $0.damaged = segment.damaged }
            states[id] = state
        }
        report.durationMilliseconds = Int((monotonicNanoseconds() - began) / 1_000_000)
        return Result(segments: states, journalStart: journalStart, nextSequence: expectedSequence, report: report)
    }

    /// With several journal writes in flight, a crash can leave block N torn while
    /// blocks after it (below N + `writesInFlightLimit`) are complete. None of them was
    /// acknowledged, since acknowledgements go in order. When the damaged block at
    /// `index` is followed only by such blocks up to the journal's end, returns where
    /// they end (the torn tail to cut); nil when the damage is something else.
    private static func endOfTornWindow(
        at index: Int, in contents: ByteBuffer, laterFiles: [UInt64], journalDirectory: String, expectedSequence: UInt64
    ) -> Int? {
        let windowEnd = expectedSequence + UInt64(JournalFormat.writesInFlightLimit)
        guard let (first, file) = findNextValidBlock(
            after: index, in: contents, laterFiles: [], journalDirectory: journalDirectory, sequenceAbove: expectedSequence + 1),
            file == nil
        else { return nil }
        var position = first
        var previous = expectedSequence
        while case .block(let sequence, let records, let size) = JournalFormat.parseBlock(contents, at: position),
            sequence > previous, sequence < windowEnd
        {
            if records.contains(where: { $0.kind == .fileEnd }) { return nil }
            previous = sequence
            position += size
        }
        guard position > first else { return nil }
        // Anything valid beyond the window means the damage is not at the journal's end.
        if findNextValidBlock(
            after: position - 1, in: contents, laterFiles: laterFiles, journalDirectory: journalDirectory,
            sequenceAbove: expectedSequence) != nil
        {
            return nil
        }
        return position
    }

    /// Looks for a valid block with a sequence at or above `sequenceAbove` after a
    /// damaged one: in the rest of this file (returns its index) or at the start of a
    /// later file. Finding one means the damage is not the journal's end.
    private static func findNextValidBlock(
        after index: Int, in contents: ByteBuffer, laterFiles: [UInt64], journalDirectory: String, sequenceAbove: UInt64
    ) -> (Int, UInt64?)? {
        let magic: [UInt8] = [0x41, 0x51, 0x4A, 0x42]  // "AQJB"
        var candidate = index + 1
        while candidate + JournalFormat.blockHeaderBytes <= contents.writerIndex {
            // Jump to the next occurrence of the magic bytes.
            let found: Int? = contents.withUnsafeReadableBytes { raw in
                ByteSearch.firstIndex(of: magic, in: raw, from: candidate - contents.readerIndex).map { $0 + contents.readerIndex }
            }
            guard let at = found else { break }
            if let sequence = contents.getInteger(at: at + 8, as: UInt64.self), sequence >= sequenceAbove,
                case .block = JournalFormat.parseBlock(contents, at: at)
            {
                return (at, nil)
            }
            candidate = at + 1
        }
        for number in laterFiles {
            let path = journalDirectory + "/" + JournalFormat.fileName(number: number)
            guard let file = try? DataFile.open(path, create: false, readOnly: true),
                let size = try? file.size(), size > 0,
                let first = try? file.read(count: Int(min(size, Int64(JournalFormat.blockBytesLimit))), at: 0)
            else { continue }
            if case .block(let sequence, _, _) = JournalFormat.parseBlock(first, at: 0), sequence >= sequenceAbove {
                return (0, number)
            }
        }
        return nil
    }
}
