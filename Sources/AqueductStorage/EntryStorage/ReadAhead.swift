import DequeModule
import NIOCore
import Synchronization

/// Read-ahead for catch-up readers: after a disk read of a segment ends at offset N,
/// the next chunk (from N, same size) is read on the read pool while the reader works
/// on this one; the reader's next call finds it ready. On two cores this overlaps one
/// chunk's pread and checksum with the next, which is what a consumer catching up on a
/// large log is limited by.
///
/// Bounded: at most `entriesMax` chunks of at most `chunkBytesMax` are held; the oldest
/// unclaimed one is dropped when a new one is started. A chunk is only read below the
/// segment's flushed size at the time, so it never races the flusher.
final class ReadAhead: Sendable {
    typealias Chunk = Result<(batches: [ByteBuffer], nextOffset: Int64), StorageError>

    struct Key: Hashable {
        var segment: SegmentID
        var offset: Int64
        var maxBytes: Int
    }

    private struct State {
        var pending: [Key: Task<Chunk, Never>] = [:]
        var order = Deque<Key>()
    }

    let entriesMax: Int
    let chunkBytesMax: Int
    private let state = Mutex(State())

    init(entriesMax: Int, chunkBytesMax: Int) {
        self.entriesMax = entriesMax
        self.chunkBytesMax = chunkBytesMax
    }

    /// The chunk read ahead for exactly this read, if any (removing it).
    func claim(_ key: Key) -> Task<Chunk, Never>? {
        state.withLock { state in
            guard let task = state.pending.removeValue(forKey: key) else { return nil }
            state.order.removeAll { $0 == key }
            return task
        }
    }

    /// Starts reading `key` ahead with `read`, unless it is already under way or too big.
    func start(_ key: Key, read: @escaping @Sendable () async -> Chunk) {
        guard entriesMax > 0, key.maxBytes <= chunkBytesMax else { return }
        let dropped: Task<Chunk, Never>? = state.withLock { state in
            guard state.pending[key] == nil else { return nil }
            var dropped: Task<Chunk, Never>?
            if state.order.count >= entriesMax, let oldest = state.order.popFirst() {
                dropped = state.pending.removeValue(forKey: oldest)
            }
            state.pending[key] = Task { await read() }
            state.order.append(key)
            return dropped
        }
        dropped?.cancel()
    }

    /// Forgets everything read ahead for a segment (it was deleted).
    func forget(_ segment: SegmentID) {
        state.withLock { state in
            for key in state.order where key.segment == segment { state.pending[key] = nil }
            state.order.removeAll { $0.segment == segment }
        }
    }
}
