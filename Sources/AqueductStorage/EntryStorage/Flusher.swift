import AqueductCommon
import CAqueduct
import Foundation
import Metrics
import Logging
import NIOCore
import Synchronization

/// The thread that writes acknowledged entries from memory to segment files, syncs
/// them, and checkpoints: every `intervalMilliseconds`, when enough bytes wait, or
/// when asked. It is the only writer of segment files after recovery.
final class Flusher: @unchecked Sendable {
    private let intervalMilliseconds: Int
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var requested: UInt64 = 0
    private var completed: UInt64 = 0
    private var wakeRequested = false
    private var stopping = false
    private var waiters: [(generation: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    private var exited: CheckedContinuation<Void, Never>?
    private var hasExited = false

    private let flushTimer = Metrics.Timer(label: "aqueduct_storage_flush_seconds")
    private let flushedBytes = Counter(label: "aqueduct_storage_flushed_bytes_total")

    init(intervalMilliseconds: Int) {
        self.intervalMilliseconds = intervalMilliseconds
    }

    func start(node: StorageNode) {
        let thread = Thread { [self] in run(node: node) }
        thread.name = "aqueduct-flusher"
        thread.start()
    }

    /// Asks for a flush soon (enough bytes are waiting).
    func wake() {
        condition.lock()
        if !wakeRequested {
            wakeRequested = true
            condition.signal()
        }
        condition.unlock()
    }

    /// Flushes and checkpoints everything acknowledged before this call.
    func flushNow() async {
        await request(stop: false)
    }

    /// Runs a last flush and stops the thread.
    func stop() async {
        await request(stop: true)
    }

    /// Asks the thread for a flush (and to exit after it when `stop`) and waits for it;
    /// returns at once when the thread has exited.
    private func request(stop: Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            defer { condition.unlock() }
            if hasExited {
                continuation.resume()
                return
            }
            if stop {
                stopping = true
                exited = continuation
            } else {
                requested += 1
                waiters.append((requested, continuation))
            }
            condition.signal()
        }
    }

    private func run(node: StorageNode) {
        // Behind the journal and request work: copying a flush's megabytes into the page
        // cache must not take a core from them (it only has to keep up on average).
        _ = aq_raise_thread_priority(-5)
        var scratch = ByteBufferAllocator().buffer(capacity: 1 << 20)
        var progress = CheckpointProgress()
        while true {
            condition.lock()
            let deadline = Date(timeIntervalSinceNow: Double(intervalMilliseconds) / 1_000)
            while !stopping && !wakeRequested && requested == completed {
                if !condition.wait(until: deadline) { break }
            }
            let generation = requested
            let exiting = stopping
            // Asked-for flushes and the last one before exit checkpoint at once.
            let forceCheckpoint = exiting || generation != completed
            wakeRequested = false
            condition.unlock()

            let began = monotonicNanoseconds()
            do {
                let bytes = try node.flushOnce(scratch: &scratch, progress: &progress, forceCheckpoint: forceCheckpoint)
                if bytes > 0 {
                    flushedBytes.increment(by: bytes)
                    flushTimer.recordNanoseconds(Int64(monotonicNanoseconds() - began))
                }
            } catch {
                node.entryStorageFailed(error)
            }

            condition.lock()
            completed = generation
            let ready = waiters.filter { $0.generation <= generation }
            waiters.removeAll { $0.generation <= generation }
            var exitedContinuation: CheckedContinuation<Void, Never>?
            var remaining: [CheckedContinuation<Void, Never>] = []
            if exiting {
                hasExited = true
                exitedContinuation = exited
                remaining = waiters.map(\.continuation)
                waiters.removeAll()
            }
            condition.unlock()
            for waiter in ready { waiter.continuation.resume() }
            if exiting {
                for waiter in remaining { waiter.resume() }
                exitedContinuation?.resume()
                return
            }
        }
    }
}

/// What the flusher remembers between runs: the last checkpoint, and the segment files
/// written since (they must be synced before the next checkpoint).
struct CheckpointProgress {
    var position: JournalPosition?
    var nanoseconds: UInt64 = monotonicNanoseconds()
    var unsynced: [ObjectIdentifier: SegmentState] = [:]
}

extension StorageNode {
    /// One flush: acknowledged entries are written to their segment files (writeback
    /// started, no sync), which frees their write budget and lets memory drop them.
    /// A checkpoint — sync every file written since the last one, record the journal
    /// position, recycle the journal files before it — follows only when the journal
    /// has moved on to a new file, `checkpointIntervalMilliseconds` have passed, or it
    /// is asked for: syncs and renames are what disturb the journal's fdatasync on a
    /// shared disk, so they are kept rare. Returns the bytes written.
    func flushOnce(scratch: inout ByteBuffer, progress: inout CheckpointProgress, forceCheckpoint: Bool) throws -> Int {
        // Everything acknowledged before this position is in memory now, so writing all
        // acknowledged entries below makes a checkpoint at it true.
        let (position, nextSequence) = journal.acknowledgedPositionAndSequence
        let states = segments.withLock { Array($0.values) }
        var written = 0
        for state in states {
            let pending = state.guarded.withLock { guarded -> [SegmentState.CachedEntry] in
                if guarded.deleted { return [] }
                // The segment file gets each assigned base offset from the header (the
                // cached bytes may not hold it yet; see CachedEntry).
                return guarded.cache.filter { $0.baseOffset >= guarded.flushedEnd && $0.lastOffset < guarded.acknowledgedEnd }
            }
            guard let last = pending.last else { continue }
            try state.file.append(pending.map { ($0.header, $0.bytes) }, scratch: &scratch)
            let bytes = pending.reduce(0) { $0 + $1.bytes.readableBytes }
            let released = state.guarded.withLock { guarded -> Int in
                if guarded.deleted { return 0 }  // deleteSegment released them already
                guarded.flushedEnd = last.lastOffset + 1
                guarded.unflushedBytes -= bytes
                guarded.cleanCachedBytes += bytes
                return bytes
            }
            writeBudget.release(released)
            written += bytes
            progress.unsynced[ObjectIdentifier(state)] = state
        }
        evictTailCache(states)

        let now = monotonicNanoseconds()
        let due = forceCheckpoint || position.file != progress.position?.file
            || now - progress.nanoseconds >= UInt64(configuration.checkpointIntervalMilliseconds) * 1_000_000
        guard due, !progress.unsynced.isEmpty || progress.position != position else { return written }

        for state in progress.unsynced.values { try state.file.sync() }
        progress.unsynced.removeAll(keepingCapacity: true)
        let checkpoint = Checkpoint(
            journalPosition: position, nextSequence: nextSequence,
            segments: states.compactMap { state in
                state.guarded.withLock { guarded -> Checkpoint.Segment? in
                    if guarded.deleted { return nil }
                    return Checkpoint.Segment(
                        id: state.id, baseOffset: state.baseOffset, endOffset: guarded.flushedEnd,
                        sizeBytes: state.file.sizeBytes, fencedEpoch: guarded.fencedEpoch, sealed: guarded.sealed,
                        maxTimestamp: guarded.maxTimestamp)
                }
            })
        try FileSystem.atomicReplace(configuration.directory + "/checkpoint", contents: checkpoint.encode())
        progress.position = position
        progress.nanoseconds = now
        journal.releaseFiles(before: position)
        journal.files.prepareSpare()
        return written
    }

    /// Drops flushed entries from memory beyond the tail cache budget: all of them for
    /// sealed segments, and the oldest first elsewhere.
    func evictTailCache(_ states: [SegmentState]) {
        let open = max(1, states.count { state in state.guarded.withLock { !$0.sealed } })
        let allowance = configuration.tailCacheBytesMax / open
        for state in states {
            state.guarded.withLock { guarded in
                let keep = guarded.sealed ? 0 : allowance
                while guarded.cleanCachedBytes > keep, let first = guarded.cache.first, first.lastOffset < guarded.flushedEnd {
                    guarded.cache.removeFirst()
                    guarded.cleanCachedBytes -= first.bytes.readableBytes
                }
            }
        }
    }

    /// Entry storage could not be written: stop taking writes (the journal still holds
    /// every acknowledged entry, so nothing acknowledged is lost).
    func entryStorageFailed(_ error: any Error) {
        failure.withLock { failure in
            if failure == nil { failure = .ioFailure("entry storage: \(error)") }
        }
        failed.store(true, ordering: .releasing)
        logger.critical("entry storage flush failed; the node stops taking writes", metadata: ["error": "\(error)"])
    }
}
