import AqueductCommon
import AqueductRecords
import DequeModule
import NIOCore
import Synchronization

/// How a wait for new entries ended.
public enum WaitOutcome: Equatable, Sendable {
    /// Entries past the requested offset can be read now.
    case available
    case timedOut
    /// The segment takes no more entries: go on with the next segment.
    case sealed
    case deleted
}

/// A segment's live state on the storage node: offsets accepted, acknowledged and
/// flushed, the in-memory entries (not yet flushed, and recent ones kept for tailing
/// readers), fencing, and readers waiting at the tail.
final class SegmentState: Sendable {
    struct CachedEntry {
        var header: RecordBatchHeader
        var bytes: ByteBuffer
        /// Whether `bytes` holds the assigned base offset yet. The log does not write it
        /// into the producer's buffer, which usually still shares storage with the
        /// request it came in (and with the connection's read buffer: writing copies the
        /// whole batch). The journal and the flusher write the offset from `header` next
        /// to the batch's other bytes; the first reader writes it into `bytes`, under the
        /// segment's lock. Never hand out `bytes` before `withBaseOffset()`.
        var baseOffsetWritten = true

        /// Writes the base offset into `bytes` if it is not there yet.
        mutating func withBaseOffset() -> ByteBuffer {
            if !baseOffsetWritten {
                bytes.setInteger(header.baseOffset, at: bytes.readerIndex)
                baseOffsetWritten = true
            }
            return bytes
        }
        var baseOffset: Int64 { header.baseOffset }
        var lastOffset: Int64 { header.lastOffset }
    }

    struct Waiter {
        var id: UInt64
        var offset: Int64
        var continuation: CheckedContinuation<WaitOutcome, Never>
        /// Ends the wait at its timeout; cancelled when the wait ends otherwise.
        var timer: Task<Void, Never>?
    }

    struct Guarded {
        /// One past the last offset accepted (journaled or on its way).
        var nextOffset: Int64
        /// One past the last acknowledged offset: readers see offsets below it.
        var acknowledgedEnd: Int64
        /// One past the last offset in the segment file.
        var flushedEnd: Int64
        /// Bytes accepted so far (file + waiting to be flushed): what rolling looks at.
        var acceptedBytes: Int64
        /// Contiguous entries ending at `nextOffset`: everything not yet flushed, and
        /// the most recent flushed ones for tailing readers.
        var cache = Deque<CachedEntry>()
        var unflushedBytes = 0
        var cleanCachedBytes = 0
        var fencedEpoch: UInt64
        var sealed: Bool
        var deleted = false
        var maxTimestamp: Int64
        /// Offsets known lost (a damaged journal block); reads there fail.
        var damaged: [Range<Int64>] = []
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
    }

    let id: SegmentID
    let baseOffset: Int64
    let file: SegmentFile
    let guarded: PlainLock<Guarded>

    init(id: SegmentID, file: SegmentFile, endOffset: Int64, sizeBytes: Int64, fencedEpoch: UInt64, sealed: Bool, maxTimestamp: Int64) {
        self.id = id
        self.baseOffset = file.baseOffset
        self.file = file
        self.guarded = PlainLock(Guarded(
            nextOffset: endOffset, acknowledgedEnd: endOffset, flushedEnd: endOffset, acceptedBytes: sizeBytes,
            fencedEpoch: fencedEpoch, sealed: sealed, maxTimestamp: maxTimestamp))
    }

    func info() -> SegmentInfo {
        guarded.withLock { state in
            SegmentInfo(
                id: id, baseOffset: baseOffset, endOffset: state.acknowledgedEnd, sizeBytes: state.acceptedBytes,
                maxTimestamp: state.maxTimestamp, sealed: state.sealed, fencedEpoch: state.fencedEpoch, damaged: state.damaged)
        }
    }

    /// Marks offsets below `end` acknowledged and wakes the readers waiting for them.
    /// Called on the journal thread, in offset order.
    func acknowledge(upTo end: Int64, maxTimestamp: Int64) {
        let ready = guarded.withLock { state -> [Waiter] in
            precondition(end > state.acknowledgedEnd, "acknowledgements must move forward")
            state.acknowledgedEnd = end
            state.maxTimestamp = max(state.maxTimestamp, maxTimestamp)
            guard !state.waiters.isEmpty else { return [] }
            var ready: [Waiter] = []
            state.waiters.removeAll { waiter in
                if waiter.offset < end {
                    ready.append(waiter)
                    return true
                }
                return false
            }
            return ready
        }
        for waiter in ready {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: .available)
        }
    }

    /// Readers waiting for entries of this segment now.
    var waitingReaders: Int { guarded.withLock { $0.waiters.count } }

    /// Wakes every waiter with `outcome` (the segment was sealed or deleted).
    func wakeAll(_ outcome: WaitOutcome) {
        let all = guarded.withLock { state -> [Waiter] in
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in all {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: outcome)
        }
    }

    /// Waits until `offset` is acknowledged (readable), the segment is sealed or
    /// deleted, or `timeoutNanoseconds` pass.
    func waitForEntries(at offset: Int64, timeoutNanoseconds: UInt64) async -> WaitOutcome {
        let waiterID = guarded.withLock { state -> UInt64 in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<WaitOutcome, Never>) in
                let immediate = guarded.withLock { state -> WaitOutcome? in
                    if state.deleted { return .deleted }
                    if state.acknowledgedEnd > offset { return .available }
                    if state.sealed { return .sealed }
                    if Task.isCancelled { return .timedOut }
                    state.waiters.append(Waiter(id: waiterID, offset: offset, continuation: continuation))
                    return nil
                }
                if let immediate {
                    continuation.resume(returning: immediate)
                    return
                }
                // The timer is cancelled when the wait ends otherwise, so an abandoned
                // long poll holds nothing until its timeout.
                let timer = Task { [self] in
                    try? await Task.sleep(nanoseconds: timeoutNanoseconds)
                    self.resumeWaiter(waiterID, with: .timedOut)
                }
                let finished = guarded.withLock { state -> Bool in
                    guard let index = state.waiters.firstIndex(where: { $0.id == waiterID }) else { return true }
                    state.waiters[index].timer = timer
                    return false
                }
                if finished { timer.cancel() }
            }
        } onCancel: {
            self.resumeWaiter(waiterID, with: .timedOut)
        }
    }

    private func resumeWaiter(_ waiterID: UInt64, with outcome: WaitOutcome) {
        let waiter = guarded.withLock { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == waiterID }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.timer?.cancel()
        waiter?.continuation.resume(returning: outcome)
    }
}
