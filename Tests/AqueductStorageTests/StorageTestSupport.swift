import AqueductCommon
import AqueductRecords
import AqueductTestSupport
import Foundation
import NIOCore

@testable import AqueductStorage

/// A batch of `records` records of `valueBytes` bytes each, at `baseOffset`; values
/// carry their offset so reads can be checked.
func makeBatch(baseOffset: Int64, records: Int = 1, valueBytes: Int = 100, timestamp: Int64 = 1_700_000_000_000) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for index in 0..<records {
        let offset = baseOffset + Int64(index)
        var value = Array("offset-\(offset)-".utf8)
        value += [UInt8](repeating: UInt8(truncatingIfNeeded: offset), count: max(0, valueBytes - value.count))
        builder.append(timestamp: timestamp + Int64(index), key: nil, value: value)
    }
    return builder.build(baseOffset: baseOffset)
}

/// Offsets of every record in the batches, checking each batch's CRC.
func recordOffsets(_ batches: [ByteBuffer]) throws -> [Int64] {
    var offsets: [Int64] = []
    for batch in batches {
        _ = try RecordBatch.validate(batch, maxBytes: .max)
        for record in try RecordBatch.records(of: batch) {
            offsets.append(record.offset)
        }
    }
    return offsets
}

/// Everything readable in a segment from `offset`, following `nextOffset`.
func readAll(_ node: StorageNode, _ id: SegmentID, from offset: Int64, maxBytes: Int = 64 << 10) async throws -> [Int64] {
    var offsets: [Int64] = []
    var next = offset
    while true {
        let read = try await node.read(id, from: next, maxBytes: maxBytes)
        if read.batches.isEmpty { break }
        offsets += try recordOffsets(read.batches).filter { $0 >= next }
        next = read.nextOffset
    }
    return offsets
}

/// A copy of a node's directory as it is now: what the disk would hold if the
/// process died at this moment (every write so far reached the page cache).
func crashCopy(of directory: String) throws -> String {
    let copy = directory + "-crash-" + UUID().uuidString.prefix(8)
    try copyLiveDirectory(directory, to: copy)
    return copy
}

/// Where the journal's valid blocks end in the last journal file: (path, byte).
func journalTail(_ directory: String) throws -> (path: String, offset: Int, nextSequence: UInt64) {
    let journalDirectory = directory + "/journal"
    let name = FileSystem.listDirectory(journalDirectory).filter { JournalFormat.fileNumber(of: $0) != nil }.sorted().last!
    let file = try DataFile.open(journalDirectory + "/" + name)
    let contents = try file.read(count: Int(try file.size()), at: 0)
    var index = 0
    var lastSequence: UInt64 = 0
    while case .block(let sequence, _, let size) = JournalFormat.parseBlock(contents, at: index), sequence > lastSequence || index == 0 {
        lastSequence = sequence
        index += size
    }
    return (journalDirectory + "/" + name, index, lastSequence + 1)
}

func testConfiguration(_ directory: String) -> StorageConfiguration {
    var configuration = StorageConfiguration(directory: directory)
    configuration.flushIntervalMilliseconds = 60_000  // tests flush explicitly
    configuration.indexIntervalBytes = 512
    configuration.journalFileBytesMax = 4 << 20  // small files: quick to preallocate, and rolls happen
    return configuration
}
