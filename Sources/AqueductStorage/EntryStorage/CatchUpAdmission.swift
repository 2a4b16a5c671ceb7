/// Admission of catch-up reads (reads that miss memory and go to the disk), as a pure
/// state machine: a budget of bytes per second that follows what the journal's syncs
/// experience, additive increase while syncs stay near their idle latency and readers
/// want more, multiplicative decrease when syncs slow down while catch-up reads ran
/// (TCP's congestion control applied to one shared disk). Reads spend the budget from a
/// token bucket; a read larger than what is left goes when the bucket is not in debt
/// and leaves it in debt, so one large fetch cannot monopolise the disk and a slow
/// reader always progresses at the budget's floor.
///
/// Why this and not the kernel: on this machine's disk none of the available I/O
/// schedulers (none, mq-deadline, kyber) kept catch-up reads off the journal's latency,
/// BFQ (ioprio) is not available, and cgroup v1 only offers static throttles
/// (docs/BENCHMARKS.md, "Slow readers"). The shell feeds it sync latencies and reads;
/// time is passed in, so tests replay exactly.
public struct CatchUpAdmission: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// The budget never goes below this (the slow reader's guaranteed progress).
        public var bytesPerSecondMin: Int64 = 4 << 20
        /// ...nor above this.
        public var bytesPerSecondMax: Int64 = 1 << 30
        /// The budget at start.
        public var bytesPerSecondStart: Int64 = 32 << 20
        /// Added per window in which readers wanted more and syncs were fine.
        public var increaseBytesPerSecond: Int64 = 4 << 20
        /// The budget is multiplied by this after a window with slow syncs and reads.
        public var decreaseFactor: Double = 0.5
        /// How long one observation window lasts.
        public var windowNanoseconds: UInt64 = 100_000_000
        /// Syncs are slow when a window's mean passes the idle mean times this...
        public var slowFactor: Double = 1.5
        /// ...and this many nanoseconds (so microsecond jitter on a fast disk is not "slow").
        public var slowMarginNanoseconds: UInt64 = 200_000
        /// Weight of a new idle window in the idle mean (an exponential average).
        public var idleWeight: Double = 0.2

        public init() {}
    }

    public enum Decision: Sendable, Equatable {
        case admit
        /// Ask again at this time (the bucket is in debt until then).
        case waitUntil(UInt64)
    }

    public let configuration: Configuration
    /// Bytes per second catch-up reads may use now.
    public private(set) var budget: Int64
    /// Mean sync latency of windows without catch-up reads (nil until one was seen).
    public private(set) var idleSyncNanoseconds: Double?
    /// Decisions taken, for metrics.
    public private(set) var increases = 0
    public private(set) var decreases = 0

    private var tokens: Double
    private var refilledAt: UInt64
    private var windowStart: UInt64
    private var windowSyncs = 0
    private var windowSyncNanoseconds: UInt64 = 0
    private var windowReadBytes: Int64 = 0
    private var windowWaited = false

    public init(configuration: Configuration = .init(), now: UInt64) {
        self.configuration = configuration
        budget = min(max(configuration.bytesPerSecondStart, configuration.bytesPerSecondMin), configuration.bytesPerSecondMax)
        tokens = Double(budget) * Double(configuration.windowNanoseconds) / 1e9
        refilledAt = now
        windowStart = now
    }

    /// Most tokens the bucket holds: one window's worth of budget.
    private var burst: Double { Double(budget) * Double(configuration.windowNanoseconds) / 1e9 }

    private mutating func refill(_ now: UInt64) {
        guard now > refilledAt else { return }
        tokens = min(burst, tokens + Double(budget) * Double(now - refilledAt) / 1e9)
        refilledAt = now
    }

    /// A catch-up read of `bytes` wants to start.
    public mutating func request(_ bytes: Int, now: UInt64) -> Decision {
        refill(now)
        guard tokens >= 0 else {
            windowWaited = true
            let debtNanoseconds = -tokens / Double(budget) * 1e9
            return .waitUntil(now + UInt64(debtNanoseconds.rounded(.up)))
        }
        tokens -= Double(bytes)
        windowReadBytes += Int64(bytes)
        return .admit
    }

    /// The journal finished a sync that took `nanoseconds`.
    public mutating func syncObserved(nanoseconds: UInt64) {
        windowSyncs += 1
        windowSyncNanoseconds += nanoseconds
    }

    /// Ends the window if it is over: learns the idle latency from windows without
    /// catch-up reads, and moves the budget. Call it at least once per window.
    public mutating func tick(now: UInt64) {
        guard now >= windowStart + configuration.windowNanoseconds else { return }
        refill(now)
        defer {
            windowStart = now
            windowSyncs = 0
            windowSyncNanoseconds = 0
            windowReadBytes = 0
            windowWaited = false
        }
        guard windowSyncs > 0 else {
            // The journal was idle: reads cannot have hurt it; let readers have more.
            if windowWaited { grow() }
            return
        }
        let mean = Double(windowSyncNanoseconds) / Double(windowSyncs)
        // Idle: no read was asked for and none admitted earlier is still being paid
        // off (a read in debt may still be on the disk).
        if windowReadBytes == 0 && !windowWaited && tokens >= 0 {
            idleSyncNanoseconds = idleSyncNanoseconds.map { $0 + configuration.idleWeight * (mean - $0) } ?? mean
            return
        }
        // Without an idle reference yet, the first windows with reads cannot be judged
        // slow: the budget starts modest for that reason.
        if let idle = idleSyncNanoseconds, mean > idle * configuration.slowFactor + Double(configuration.slowMarginNanoseconds) {
            budget = max(configuration.bytesPerSecondMin, Int64(Double(budget) * configuration.decreaseFactor))
            tokens = min(tokens, burst)
            decreases += 1
        } else if windowWaited {
            grow()
        }
    }

    private mutating func grow() {
        budget = min(configuration.bytesPerSecondMax, budget + configuration.increaseBytesPerSecond)
        increases += 1
    }
}
