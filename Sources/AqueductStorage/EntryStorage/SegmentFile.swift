import AqueductCommon
import AqueductRecords
import Logging
import NIOCore
import Synchronization

/// One segment in entry storage: a data file that is exactly the concatenation of its
/// record batches (the bytes a Kafka fetch returns, so reads need no re-encoding) and
/// a sparse index of (offset - baseOffset u32, file position u32) pairs, one every
/// `indexIntervalBytes`, to find a batch by offset without scanning the file.
///
/// Only the flusher (and recovery) appends; readers read concurrently below the
/// published size. The index is derived data: when missing or damaged it is rebuilt
/// from the data file.
final class SegmentFile: Sendable {
    struct IndexEntry: Equatable {
        var relativeOffset: UInt32
        var position: UInt32
    }

    private struct State {
        var index: [IndexEntry] = []
        var sizeBytes: Int64 = 0
        var bytesSinceIndexEntry = Int.max
        var indexEntriesPersisted = 0
    }

    static let indexEntryBytes = 8

    let id: SegmentID
    let baseOffset: Int64
    let dataPath: String
    let indexPath: String
    private let data: DataFile
    private let indexFile: DataFile
    private let indexIntervalBytes: Int
    private let state: Mutex<State>

    static func paths(directory: String, id: SegmentID) -> (directory: String, data: String, index: String) {
        let logDirectory = directory + "/segments/" + String(id.logID)
        let digits = String(id.number)
        let stem = logDirectory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
        return (logDirectory, stem + ".seg", stem + ".idx")
    }

    /// Creates an empty segment (removing any leftover files of the same name).
    static func create(directory: String, id: SegmentID, baseOffset: Int64, indexIntervalBytes: Int) throws -> SegmentFile {
        let paths = paths(directory: directory, id: id)
        let fresh = !FileSystem.exists(paths.directory)
        try FileSystem.createDirectory(paths.directory)
        if fresh { try FileSystem.syncDirectory(directory + "/segments") }
        let file = try SegmentFile(id: id, baseOffset: baseOffset, paths: paths, indexIntervalBytes: indexIntervalBytes)
        try file.data.truncate(to: 0)
        try file.indexFile.truncate(to: 0)
        try FileSystem.syncDirectory(paths.directory)
        return file
    }

    /// What recovery found in a segment's files.
    struct Recovery {
        var file: SegmentFile
        /// One past the last offset in the valid data.
        var endOffset: Int64
        var maxTimestamp: Int64
        var indexRebuilt: Bool
        /// Set when the data ends before `validBytes` said it should (bytes lost on disk).
        var damage: String?
    }

    /// Opens a segment whose first `validBytes` were synced (bytes past them are cut
    /// off: they are replayed from the journal), checks the index against the data and
    /// repairs or rebuilds it.
    static func recover(
        directory: String, id: SegmentID, baseOffset: Int64, validBytes: Int64, indexIntervalBytes: Int, logger: Logger
    ) throws -> Recovery {
        let paths = paths(directory: directory, id: id)
        try FileSystem.createDirectory(paths.directory)
        let file = try SegmentFile(id: id, baseOffset: baseOffset, paths: paths, indexIntervalBytes: indexIntervalBytes)
        let actualBytes = try file.data.size()
        var damage: String?
        var usable = validBytes
        if actualBytes < validBytes {
            damage = "segment file has \(actualBytes) bytes but \(validBytes) were synced"
            usable = actualBytes
        } else if actualBytes > validBytes {
            try file.data.truncate(to: validBytes)
        }

        // Keep the index entries that are in order and point inside the data; drop the rest.
        let indexBytes = try file.indexFile.size()
        let stored = try file.indexFile.read(count: Int(indexBytes), at: 0)
        var index: [IndexEntry] = []
        var reader = stored
        var indexIntact = indexBytes % Int64(indexEntryBytes) == 0
        while let relative: UInt32 = reader.readInteger(), let position: UInt32 = reader.readInteger() {
            let entry = IndexEntry(relativeOffset: relative, position: position)
            if let last = index.last, entry.relativeOffset <= last.relativeOffset || entry.position <= last.position {
                indexIntact = false
                break
            }
            if Int64(position) >= usable {
                indexIntact = false
                break
            }
            index.append(entry)
        }
        // The last kept entry must point at a batch with that offset, or the index is stale.
        if let last = index.last {
            let header = try file.data.read(count: RecordBatchHeader.size, at: Int64(last.position))
            if RecordBatchHeader(from: header)?.baseOffset != baseOffset + Int64(last.relativeOffset) {
                index.removeAll()
                indexIntact = false
            }
        }

        // Walk the data from the last index entry to the end, adding index entries.
        var position = Int64(index.last?.position ?? 0)
        var expectedOffset = baseOffset + Int64(index.last?.relativeOffset ?? 0)
        var maxTimestamp: Int64 = -1
        var bytesSinceEntry = index.isEmpty ? Int.max : 0
        var added = 0
        let scanChunkBytes = 1 << 20
        // Only headers are read: a batch bigger than a chunk is stepped over by its length.
        scan: while position < usable {
            let chunk = try file.data.read(count: Int(min(Int64(scanChunkBytes), usable - position)), at: position)
            var cursor = 0
            while let header = RecordBatchHeader(from: chunk, at: chunk.readerIndex + cursor) {
                let at = position + Int64(cursor)
                guard header.magic == 2, header.batchLength >= 49, header.baseOffset == expectedOffset,
                    at + Int64(header.totalSize) <= usable
                else {
                    damage = "batch at byte \(at) is invalid or runs past the synced size (offset \(header.baseOffset), expected \(expectedOffset))"
                    usable = at
                    break scan
                }
                if bytesSinceEntry >= indexIntervalBytes {
                    index.append(IndexEntry(relativeOffset: UInt32(header.baseOffset - baseOffset), position: UInt32(at)))
                    bytesSinceEntry = 0
                    added += 1
                }
                bytesSinceEntry += header.totalSize
                maxTimestamp = max(maxTimestamp, header.maxTimestamp)
                expectedOffset = header.lastOffset + 1
                cursor += header.totalSize
                if cursor >= chunk.readableBytes { break }
            }
            guard cursor > 0 else {
                damage = "truncated batch at byte \(position)"
                usable = position
                break scan
            }
            position += Int64(cursor)
        }
        if usable < validBytes && actualBytes >= validBytes {
            try file.data.truncate(to: usable)
        }
        // The max timestamp of batches before the last index entry was not scanned; the
        // caller keeps the value recorded in the checkpoint as a lower bound.
        let rebuilt = !indexIntact || added > 0
        if rebuilt {
            var out = ByteBuffer()
            for entry in index {
                out.writeInteger(entry.relativeOffset)
                out.writeInteger(entry.position)
            }
            try file.indexFile.truncate(to: 0)
            try file.indexFile.write(out, at: 0)
            try file.indexFile.syncData()
            if rebuilt {
                logger.info("rebuilt segment index", metadata: ["segment": "\(id)", "entries": "\(index.count)"])
            }
        }
        file.state.withLock { state in
            state.index = index
            state.sizeBytes = usable
            state.bytesSinceIndexEntry = bytesSinceEntry
            state.indexEntriesPersisted = index.count
        }
        return Recovery(file: file, endOffset: expectedOffset, maxTimestamp: maxTimestamp, indexRebuilt: rebuilt, damage: damage)
    }

    private init(id: SegmentID, baseOffset: Int64, paths: (directory: String, data: String, index: String), indexIntervalBytes: Int) throws {
        self.id = id
        self.baseOffset = baseOffset
        self.dataPath = paths.data
        self.indexPath = paths.index
        self.indexIntervalBytes = indexIntervalBytes
        self.data = try DataFile.open(paths.data, create: true)
        self.indexFile = try DataFile.open(paths.index, create: true)
        self.state = Mutex(State())
    }

    var sizeBytes: Int64 { state.withLock { $0.sizeBytes } }

    /// Appends whole batches (contiguous offsets, continuing the file) and indexes them.
    /// Flusher and recovery only. Not durable until `sync`.
    func append(_ batches: [(header: RecordBatchHeader, bytes: ByteBuffer)], scratch: inout ByteBuffer) throws {
        guard !batches.isEmpty else { return }
        var (position, sinceEntry) = state.withLock { ($0.sizeBytes, $0.bytesSinceIndexEntry) }
        var newEntries: [IndexEntry] = []
        var writeAt = position
        // Each batch's base offset comes from its header (the batch's own first 8 bytes
        // may not hold it yet), then the rest of the batch from its own buffer (pwritev),
        // about 1 MiB per call.
        var baseOffsets = ByteBufferAllocator().buffer(capacity: 8 * batches.count)
        for (header, _) in batches { baseOffsets.writeInteger(header.baseOffset) }
        var pending: [ByteBuffer] = []
        var pendingBytes = 0
        func writePending() throws {
            try data.write(gathering: pending, at: writeAt, durably: false)
            data.startWriteback(offset: writeAt, length: Int64(pendingBytes))
            writeAt += Int64(pendingBytes)
            pending.removeAll(keepingCapacity: true)
            pendingBytes = 0
        }
        for (header, bytes) in batches {
            if sinceEntry >= indexIntervalBytes {
                newEntries.append(IndexEntry(relativeOffset: UInt32(header.baseOffset - baseOffset), position: UInt32(position)))
                sinceEntry = 0
            }
            sinceEntry += bytes.readableBytes
            position += Int64(bytes.readableBytes)
            pending.append(baseOffsets.readSlice(length: 8)!)
            pending.append(bytes.getSlice(at: bytes.readerIndex + 8, length: bytes.readableBytes - 8)!)
            pendingBytes += bytes.readableBytes
            if pendingBytes >= 1 << 20 || pending.count >= 1_000 { try writePending() }
        }
        if !pending.isEmpty { try writePending() }
        let persistedAt = state.withLock { state -> Int in
            state.index.append(contentsOf: newEntries)
            state.sizeBytes = position
            state.bytesSinceIndexEntry = sinceEntry
            return state.indexEntriesPersisted
        }
        if !newEntries.isEmpty {
            var out = ByteBuffer()
            for entry in newEntries {
                out.writeInteger(entry.relativeOffset)
                out.writeInteger(entry.position)
            }
            try indexFile.write(out, at: Int64(persistedAt * Self.indexEntryBytes))
            state.withLock { $0.indexEntriesPersisted += newEntries.count }
        }
    }

    func sync() throws {
        try data.syncData()
        try indexFile.syncData()
    }

    /// Where to start reading for `offset`: the position of the last indexed batch at or
    /// before it.
    func startPosition(for offset: Int64) -> Int64 {
        let relative = offset - baseOffset
        return state.withLock { state in
            var low = 0
            var high = state.index.count
            while low < high {
                let middle = (low + high) / 2
                if Int64(state.index[middle].relativeOffset) <= relative { low = middle + 1 } else { high = middle }
            }
            return low == 0 ? 0 : Int64(state.index[low - 1].position)
        }
    }

    /// Reads whole batches holding offsets from `offset` on, about `maxBytes` of them
    /// (at least one whole batch), not past `limitBytes` of the file. Verifies each
    /// batch's CRC-32C when `verify` is set.
    func read(from offset: Int64, maxBytes: Int, limitBytes: Int64, verify: Bool) throws(StorageError) -> (batches: [ByteBuffer], nextOffset: Int64) {
        var position = startPosition(for: offset)
        var batches: [ByteBuffer] = []
        var taken = 0
        var nextOffset = offset
        // Bytes per pread: what was asked for plus the distance an index entry may
        // leave before the wanted batch.
        let chunkBytes = max(maxBytes, 64 << 10) + indexIntervalBytes
        while position < limitBytes && (batches.isEmpty || taken < maxBytes) {
            let count = Int(min(Int64(chunkBytes), limitBytes - position))
            let chunk: ByteBuffer
            do { chunk = try data.read(count: count, at: position, allocator: ReadBuffers.allocator) } catch { throw .ioFailure("\(error)") }
            guard chunk.readableBytes == count else {
                throw .corruptEntry(id, filePosition: position + Int64(chunk.readableBytes), detail: "file ends before its recorded size \(limitBytes)")
            }
            var consumed = 0
            while let header = RecordBatchHeader(from: chunk, at: chunk.readerIndex + consumed) {
                let batchPosition = position + Int64(consumed)
                guard header.magic == 2, header.batchLength >= 49 else {
                    throw .corruptEntry(id, filePosition: batchPosition, detail: "invalid batch header")
                }
                let batch: ByteBuffer
                if header.totalSize <= chunk.readableBytes - consumed {
                    batch = chunk.getSlice(at: chunk.readerIndex + consumed, length: header.totalSize)!
                } else if consumed == 0 {
                    // One batch larger than the chunk: read exactly it.
                    guard batchPosition + Int64(header.totalSize) <= limitBytes else {
                        throw .corruptEntry(id, filePosition: batchPosition, detail: "batch runs past the end of the segment")
                    }
                    do { batch = try data.read(count: header.totalSize, at: batchPosition, allocator: ReadBuffers.allocator) } catch { throw .ioFailure("\(error)") }
                } else {
                    break
                }
                if header.lastOffset >= nextOffset {
                    if !batches.isEmpty && taken + header.totalSize > maxBytes { return (batches, nextOffset) }
                    try checkBatch(batch, header: header, at: batchPosition, expected: nextOffset, verify: verify)
                    batches.append(batch)
                    taken += header.totalSize
                    nextOffset = header.lastOffset + 1
                }
                consumed += header.totalSize
                if !batches.isEmpty && taken >= maxBytes { break }
            }
            guard consumed > 0 else {
                throw .corruptEntry(id, filePosition: position, detail: "partial batch at the end of the segment")
            }
            position += Int64(consumed)
            // One chunk is enough once it gave something: reading another just to add the
            // batch cut at its end would double the I/O of every read.
            if !batches.isEmpty { break }
        }
        return (batches, nextOffset)
    }

    private func checkBatch(_ batch: ByteBuffer, header: RecordBatchHeader, at position: Int64, expected: Int64, verify: Bool) throws(StorageError) {
        // Offsets are dense, so a batch that does not contain the next wanted offset
        // means the data or the index is wrong.
        guard header.baseOffset <= expected, header.lastOffset >= expected else {
            throw .corruptEntry(id, filePosition: position, detail: "batch holds offsets \(header.baseOffset)...\(header.lastOffset), expected \(expected)")
        }
        if verify {
            let computed = RecordBatch.checksumOfBatch(batch, at: batch.readerIndex, totalSize: header.totalSize)
            if computed != header.crc {
                throw .corruptEntry(id, filePosition: position, detail: "CRC-32C mismatch (stored \(header.crc), computed \(computed))")
            }
        }
    }

    func removeFiles() {
        try? FileSystem.removeFile(dataPath)
        try? FileSystem.removeFile(indexPath)
    }
}
