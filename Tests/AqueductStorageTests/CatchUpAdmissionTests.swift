@testable import AqueductStorage
import AqueductCommon
import AqueductTestSupport
import Testing

/// The catch-up read budget as scripts of events: syncs, reads, windows ending.
@Suite struct CatchUpAdmissionTests {
    let ms: UInt64 = 1_000_000
    var configuration: CatchUpAdmission.Configuration {
        var configuration = CatchUpAdmission.Configuration()
        configuration.bytesPerSecondMin = 1 << 20
        configuration.bytesPerSecondStart = 8 << 20
        configuration.bytesPerSecondMax = 64 << 20
        configuration.increaseBytesPerSecond = 2 << 20
        return configuration
    }

    /// One window: `syncs` syncs of `syncMicros` each, reads of `readBytes` every 5 ms
    /// (as long as they are admitted), then the window ends.
    func window(_ admission: inout CatchUpAdmission, at start: UInt64, syncs: Int, syncMicros: UInt64, readBytes: Int) -> UInt64 {
        var now = start
        for step in 0..<20 {
            now = start + UInt64(step) * 5 * ms
            if step < syncs { admission.syncObserved(nanoseconds: syncMicros * 1_000) }
            if readBytes > 0 { _ = admission.request(readBytes, now: now) }
        }
        now = start + 100 * ms
        admission.tick(now: now)
        return now
    }

    @Test func readersWantingMoreGetItWhileSyncsStayNearIdle() {
        var admission = CatchUpAdmission(configuration: configuration, now: 0)
        var now = window(&admission, at: 0, syncs: 10, syncMicros: 200, readBytes: 0)
        #expect(admission.idleSyncNanoseconds == 200_000 && admission.budget == 8 << 20, "an idle window teaches the idle latency, nothing else")
        for _ in 0..<10 { now = window(&admission, at: now, syncs: 10, syncMicros: 250, readBytes: 256 << 10) }
        #expect(admission.budget == (8 << 20) + 10 * (2 << 20), "additive increase, one step per window where readers waited")
        #expect(admission.decreases == 0)
    }

    @Test func slowSyncsWhileReadingHalveTheBudgetDownToItsFloor() {
        var admission = CatchUpAdmission(configuration: configuration, now: 0)
        var now = window(&admission, at: 0, syncs: 10, syncMicros: 200, readBytes: 0)
        now = window(&admission, at: now, syncs: 10, syncMicros: 2_000, readBytes: 256 << 10)
        #expect(admission.budget == 4 << 20)
        for _ in 0..<10 { now = window(&admission, at: now, syncs: 10, syncMicros: 2_000, readBytes: 256 << 10) }
        #expect(admission.budget == 1 << 20, "never below the floor: the slow reader still progresses")
        // A slow journal with no reads running (the last one's debt paid off: 1 s of
        // quiet) is not the readers' doing.
        now += 1_000 * ms
        let (budget, decreases) = (admission.budget, admission.decreases)
        now = window(&admission, at: now, syncs: 10, syncMicros: 5_000, readBytes: 0)
        #expect(admission.budget == budget && admission.decreases == decreases)
    }

    @Test func aLargeReadGoesWhenTheBucketIsNotInDebtAndTheNextOneWaitsOutTheDebt() {
        var admission = CatchUpAdmission(configuration: configuration, now: 0)
        // The bucket starts with one window of budget (8 MiB/s × 100 ms ≈ 0.8 MiB).
        #expect(admission.request(4 << 20, now: 0) == .admit, "one large fetch is not refused outright")
        guard case .waitUntil(let when) = admission.request(1, now: 0) else {
            Issue.record("the next read must wait out the debt")
            return
        }
        // Debt ≈ 4 MiB − 0.8 MiB at 8 MiB/s ≈ 0.4 s.
        #expect(when >= 390 * ms && when <= 410 * ms)
        #expect(admission.request(1, now: when) == .admit)
    }

    /// Random syncs and reads from a seed: the budget stays within its bounds, moves
    /// down only after a window with reads and slow syncs, and a waiting read is told a
    /// time in the future.
    @Test func randomScriptsKeepTheBudgetInBoundsAndDecreasesExplained() {
        let seed = testSeed()
        var random = SplitMix64(seed: seed)
        var admission = CatchUpAdmission(configuration: configuration, now: 0)
        var now: UInt64 = 0
        for _ in 0..<2_000 {
            now += UInt64.random(in: 1...20, using: &random) * ms
            switch Int.random(in: 0..<3, using: &random) {
            case 0: admission.syncObserved(nanoseconds: UInt64.random(in: 50...5_000, using: &random) * 1_000)
            case 1:
                if case .waitUntil(let when) = admission.request(Int.random(in: 1...(2 << 20), using: &random), now: now) {
                    #expect(when > now, "seed \(seed)")
                }
            default:
                let decreasesBefore = admission.decreases
                let budgetBefore = admission.budget
                admission.tick(now: now)
                if admission.budget < budgetBefore { #expect(admission.decreases == decreasesBefore + 1, "seed \(seed)") }
            }
            #expect(admission.budget >= configuration.bytesPerSecondMin && admission.budget <= configuration.bytesPerSecondMax, "seed \(seed)")
        }
    }
}
