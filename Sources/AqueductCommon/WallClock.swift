import Foundation
import Synchronization

/// Wall-clock time in milliseconds since the Unix epoch: record timestamps, segment
/// ages, retention. Injected so that tests can move time by hand.
public protocol WallClock: Sendable {
    func nowMilliseconds() -> Int64
}

/// The operating system's clock.
public struct SystemWallClock: WallClock {
    public init() {}
    public func nowMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}

/// A clock that only moves when told to.
public final class ManualWallClock: WallClock {
    private let now: Atomic<Int64>
    public init(startMilliseconds: Int64 = 1_700_000_000_000) { now = Atomic(startMilliseconds) }
    public func nowMilliseconds() -> Int64 { now.load(ordering: .relaxed) }
    public func advance(byMilliseconds delta: Int64) { now.add(delta, ordering: .relaxed) }
    public func set(milliseconds: Int64) { now.store(milliseconds, ordering: .relaxed) }
}

/// Monotonic time for measuring durations and deadlines, in nanoseconds.
@inlinable
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
