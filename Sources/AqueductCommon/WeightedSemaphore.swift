import DequeModule
import Synchronization

/// An async semaphore over a count of units (bytes, slots), first come first served.
/// Used to bound memory (bytes of appends not yet in entry storage) and concurrency
/// (catch-up reads in flight) without blocking threads.
public final class WeightedSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters = Deque<(units: Int, continuation: CheckedContinuation<Void, Never>)>()
    }

    public let capacity: Int
    private let state: Mutex<State>

    public init(capacity: Int) {
        precondition(capacity > 0, "a semaphore needs a positive capacity")
        self.capacity = capacity
        state = Mutex(State(available: capacity))
    }

    /// Units not taken right now.
    public var available: Int { state.withLock { $0.available } }

    /// Callers waiting for units now.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Takes `units` (at most `capacity`, so one oversized request cannot wait forever),
    /// waiting behind earlier requests. Returns the number of units taken, which the
    /// caller gives back with `release`.
    @discardableResult
    public func acquire(_ units: Int) async -> Int {
        let wanted = min(max(units, 0), capacity)
        let granted = state.withLock { state -> Bool in
            if state.waiters.isEmpty && state.available >= wanted {
                state.available -= wanted
                return true
            }
            return false
        }
        if granted { return wanted }
        await withCheckedContinuation { continuation in
            let grantedNow = state.withLock { state -> Bool in
                if state.waiters.isEmpty && state.available >= wanted {
                    state.available -= wanted
                    return true
                }
                state.waiters.append((wanted, continuation))
                return false
            }
            if grantedNow { continuation.resume() }
        }
        return wanted
    }

    public func release(_ units: Int) {
        guard units > 0 else { return }
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.available += units
            precondition(state.available <= capacity, "released more units than were taken")
            var ready: [CheckedContinuation<Void, Never>] = []
            while let first = state.waiters.first, first.units <= state.available {
                state.available -= first.units
                ready.append(state.waiters.removeFirst().continuation)
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }
}
