#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DequeModule
import Synchronization

/// A pthread mutex with one condition variable on the monotonic clock: instance threads
/// sleep in the kernel while their queue is empty and wake when a batch arrives.
final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        mutex.initialize(to: pthread_mutex_t())
        condition.initialize(to: pthread_cond_t())
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if os(Linux)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func broadcast() { pthread_cond_broadcast(condition) }

    /// Waits (lock held) until signalled or `timeoutNanos` passed.
    func wait(timeoutNanos: UInt64) {
        var now = timespec()
        #if os(Linux)
        clock_gettime(CLOCK_MONOTONIC, &now)
        #else
        clock_gettime(CLOCK_REALTIME, &now)
        #endif
        let total = UInt64(now.tv_nsec) + timeoutNanos % 1_000_000_000
        var deadline = timespec()
        deadline.tv_sec = now.tv_sec + Int(timeoutNanos / 1_000_000_000) + Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(condition, mutex, &deadline)
    }
}

/// Heron's backpressure switch: while any input queue is above its high watermark,
/// spouts do not call `nextTuple`. Counts the congested queues and the time spent with
/// the switch on.
final class BackpressureGate: Sendable {
    private let congestedQueues = Atomic<Int>(0)
    /// Congested queues of this container only (the others' come as remote engages).
    private let localCongested = Atomic<Int>(0)
    private let localListener = Mutex<(@Sendable (Bool) -> Void)?>(nil)
    /// Containers whose backpressure is on, as their stream managers said.
    private let remoteEngaged = Mutex<Set<Int>>([])
    private let state = Mutex<(since: UInt64?, totalNanos: UInt64, episodes: Int)>((nil, 0, 0))
    private let clock: any TopologyClock

    init(clock: any TopologyClock) { self.clock = clock }

    var isEngaged: Bool { congestedQueues.load(ordering: .relaxed) > 0 }

    /// Called with true when this container's first queue congests, false when its last
    /// one drains (the stream manager tells the other containers).
    func onLocalChange(_ listener: @escaping @Sendable (Bool) -> Void) { localListener.withLock { $0 = listener } }

    /// A local queue crossed its high watermark.
    func engageLocal() {
        if localCongested.add(1, ordering: .relaxed).newValue == 1 { localListener.withLock { $0 }?(true) }
        engage()
    }

    /// A local queue fell to its low watermark.
    func releaseLocal() {
        if localCongested.subtract(1, ordering: .relaxed).newValue == 0 { localListener.withLock { $0 }?(false) }
        release()
    }

    /// Another container's backpressure state (idempotent per container).
    func remote(container: Int, engaged: Bool) {
        let changed = remoteEngaged.withLock { set in engaged ? set.insert(container).inserted : set.remove(container) != nil }
        guard changed else { return }
        if engaged { engage() } else { release() }
    }

    private func engage() {
        if congestedQueues.add(1, ordering: .relaxed).newValue == 1 {
            let now = clock.nanoseconds()
            state.withLock { state in
                if state.since == nil { state.since = now; state.episodes += 1 }
            }
        }
    }

    private func release() {
        if congestedQueues.subtract(1, ordering: .relaxed).newValue == 0 {
            let now = clock.nanoseconds()
            state.withLock { state in
                if let since = state.since { state.totalNanos += now &- since; state.since = nil }
            }
        }
    }

    /// Nanoseconds spent in backpressure so far (including a current episode), episodes.
    func totals() -> (nanos: UInt64, episodes: Int) {
        let now = clock.nanoseconds()
        return state.withLock { state in
            (state.totalNanos + (state.since.map { now &- $0 } ?? 0), state.episodes)
        }
    }
}

/// The input queue of a bolt task: whole batches in and out (an emitter hands over its
/// buffer, the instance takes it back: no per-tuple copy or lock), bounded in tuples.
/// Crossing the high watermark engages the backpressure gate until the queue falls to
/// the low watermark; at capacity, emitters wait.
final class TupleQueue: @unchecked Sendable {
    private let monitor = Monitor()
    private var batches = Deque<[Tuple]>()
    private var count = 0
    private var congested = false
    private var closed = false
    private var consumerWaiting = false
    private var producersWaiting = 0
    private let highWatermark: Int
    private let lowWatermark: Int
    private let capacity: Int
    private let gate: BackpressureGate
    /// Time this queue spent above its high watermark (it caused backpressure).
    private var congestedSince: UInt64 = 0
    private var congestedNanos: UInt64 = 0
    private let clock: any TopologyClock

    init(highWatermark: Int, lowWatermark: Int, capacity: Int, gate: BackpressureGate, clock: any TopologyClock) {
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
        self.capacity = capacity
        self.gate = gate
        self.clock = clock
    }

    /// Appends a batch, waiting while the queue is at capacity. Returns false once the
    /// queue is closed (the topology is stopping).
    @discardableResult
    func push(_ batch: [Tuple]) -> Bool {
        monitor.lock()
        defer { monitor.unlock() }
        while count >= capacity && !closed {
            producersWaiting += 1
            monitor.wait(timeoutNanos: 100_000_000)
            producersWaiting -= 1
        }
        if closed { return false }
        appendLocked(batch)
        return true
    }

    /// Appends a batch from another container without waiting at capacity: a stream
    /// manager's reader must never block (it would stall acks and tuples for other
    /// tasks behind it, and could deadlock two containers). Backpressure bounds what
    /// still arrives.
    func pushFromRemote(_ batch: [Tuple]) {
        monitor.lock()
        defer { monitor.unlock() }
        if closed { return }
        appendLocked(batch)
    }

    /// Appends under the lock; engages backpressure at the high watermark.
    private func appendLocked(_ batch: [Tuple]) {
        count += batch.count
        batches.append(batch)
        if !congested && count >= highWatermark {
            congested = true
            congestedSince = clock.nanoseconds()
            gate.engageLocal()
        }
        if consumerWaiting { monitor.broadcast() }
    }

    /// Takes the oldest batch, waiting up to `timeoutNanos` when there is none. Returns
    /// an empty batch on timeout and nil when closed.
    func take(timeoutNanos: UInt64) -> [Tuple]? {
        monitor.lock()
        defer { monitor.unlock() }
        if batches.isEmpty && !closed && timeoutNanos > 0 {
            consumerWaiting = true
            monitor.wait(timeoutNanos: timeoutNanos)
            consumerWaiting = false
        }
        if closed { return nil }
        guard let batch = batches.popFirst() else { return [] }
        count -= batch.count
        if congested && count <= lowWatermark {
            congested = false
            congestedNanos += clock.nanoseconds() &- congestedSince
            gate.releaseLocal()
        }
        if producersWaiting > 0 { monitor.broadcast() }
        return batch
    }

    func close() {
        monitor.lock()
        closed = true
        if congested {
            congested = false
            gate.releaseLocal()
        }
        monitor.broadcast()
        monitor.unlock()
    }

    var depth: Int {
        monitor.lock()
        defer { monitor.unlock() }
        return count
    }

    /// Nanoseconds this queue spent above its high watermark.
    var backpressureNanos: UInt64 {
        monitor.lock()
        defer { monitor.unlock() }
        return congestedNanos + (congested ? clock.nanoseconds() &- congestedSince : 0)
    }
}

/// Acks and fails on their way back to a spout task. Not bounded by itself: it holds
/// at most one message per tuple in flight, and those are bounded by the input queues.
final class ControlQueue: @unchecked Sendable {
    enum Message: Sendable, Equatable {
        case ack(key: UInt64, value: UInt64)
        case fail(key: UInt64)
    }

    private let monitor = Monitor()
    private var items: [Message] = []
    private var waiting = false
    private var closed = false

    func push(_ messages: [Message]) {
        monitor.lock()
        items.append(contentsOf: messages)
        if waiting { monitor.broadcast() }
        monitor.unlock()
    }

    /// Swaps the pending messages into `batch` (emptied first), waiting up to
    /// `timeoutNanos` when there are none.
    func drain(into batch: inout [Message], timeoutNanos: UInt64) {
        batch.removeAll(keepingCapacity: true)
        monitor.lock()
        if items.isEmpty && !closed && timeoutNanos > 0 {
            waiting = true
            monitor.wait(timeoutNanos: timeoutNanos)
            waiting = false
        }
        swap(&items, &batch)
        monitor.unlock()
    }

    /// Wakes a waiting spout (activation, shutdown).
    func wake() {
        monitor.lock()
        monitor.broadcast()
        monitor.unlock()
    }

    func close() {
        monitor.lock()
        closed = true
        monitor.broadcast()
        monitor.unlock()
    }
}
