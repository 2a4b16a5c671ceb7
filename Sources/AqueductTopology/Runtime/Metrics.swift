#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Histogram
import Synchronization

/// Monotonic time in nanoseconds, injected so tests can drive timeouts and ticks.
public protocol TopologyClock: Sendable {
    func nanoseconds() -> UInt64
}

/// CLOCK_MONOTONIC.
public struct MonotonicClock: TopologyClock {
    public init() {}
    public func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

/// Counters of one task, written by its own thread (relaxed atomics: no contention),
/// read by metrics scrapes and `topology status`.
final class InstanceMetrics: Sendable {
    let emitted = Atomic<Int>(0)
    let executed = Atomic<Int>(0)
    /// Spouts: tuple trees completed. Bolts: inputs acked.
    let acked = Atomic<Int>(0)
    /// Spouts: tuple trees failed (by a bolt or by timeout). Bolts: inputs failed.
    let failed = Atomic<Int>(0)
    let timedOut = Atomic<Int>(0)
    let executeNanos = Atomic<UInt64>(0)
    /// emitDirect to a task that does not subscribe directly: dropped (a bug in the
    /// topology, counted instead of crashing the container).
    let droppedEmits = Atomic<Int>(0)
    /// User code that threw in open/prepare.
    let errors = Atomic<Int>(0)
    private let completeLatency = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000, numberOfSignificantValueDigits: .two))

    func recordComplete(latencyNanos: UInt64) {
        completeLatency.withLock { _ = $0.record(max(1, latencyNanos)) }
    }

    /// Several latencies under one lock (a spout records its completed trees per turn).
    func recordComplete(latenciesNanos: [UInt64]) {
        guard !latenciesNanos.isEmpty else { return }
        completeLatency.withLock { histogram in
            for latency in latenciesNanos { _ = histogram.record(max(1, latency)) }
        }
    }

    /// p50 and p99 of the complete latency (spout emit to tree complete), nanoseconds.
    func completeLatencyPercentiles() -> (count: UInt64, p50: UInt64, p99: UInt64) {
        completeLatency.withLock { histogram in
            (histogram.totalCount, histogram.totalCount == 0 ? 0 : histogram.valueAtPercentile(50),
             histogram.totalCount == 0 ? 0 : histogram.valueAtPercentile(99))
        }
    }
}

/// A snapshot of one task's metrics.
public struct TaskMetrics: Sendable, Codable, Equatable {
    public var task: Int
    public var component: String
    public var container: Int
    public var emitted: Int
    public var executed: Int
    public var acked: Int
    public var failed: Int
    public var timedOut: Int
    public var droppedEmits: Int
    public var errors: Int
    /// Mean execute latency (bolts), microseconds.
    public var executeLatencyMicros: Double
    /// Complete latency percentiles (spouts, at-least-once), microseconds.
    public var completeLatencyP50Micros: Double
    public var completeLatencyP99Micros: Double
    public var queueDepth: Int
    /// Time this task's input queue spent above its high watermark, milliseconds.
    public var backpressureMillis: Double
}

/// A snapshot of a running topology's metrics.
public struct TopologyMetrics: Sendable, Codable, Equatable {
    public var topology: String
    public var tasks: [TaskMetrics]
    /// Time spouts were held back by backpressure, milliseconds, and how often.
    public var backpressureMillis: Double
    public var backpressureEpisodes: Int

    /// Sums per component, in declaration order.
    public func component(_ id: String) -> TaskMetrics? {
        let tasks = self.tasks.filter { $0.component == id }
        guard var total = tasks.first else { return nil }
        for task in tasks.dropFirst() {
            total.emitted += task.emitted
            total.executed += task.executed
            total.acked += task.acked
            total.failed += task.failed
            total.timedOut += task.timedOut
            total.droppedEmits += task.droppedEmits
            total.errors += task.errors
            total.queueDepth += task.queueDepth
            total.backpressureMillis += task.backpressureMillis
            total.completeLatencyP50Micros = max(total.completeLatencyP50Micros, task.completeLatencyP50Micros)
            total.completeLatencyP99Micros = max(total.completeLatencyP99Micros, task.completeLatencyP99Micros)
        }
        total.task = -1
        return total
    }
}
