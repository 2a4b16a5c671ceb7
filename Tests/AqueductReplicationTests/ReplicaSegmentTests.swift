import AqueductReplication
import AqueductTestSupport
import NIOCore
import Testing

@Suite struct ReplicaSegmentTests {
    func entry(_ id: Int64, lac: Int64, _ text: String = "x") -> StorageProtocol.Entry {
        StorageProtocol.Entry(segment: 1, entry: id, lastAddConfirmed: lac, payload: ByteBuffer(string: text))
    }

    @Test func aFencedSegmentRefusesNormalAddsAndTakesRecoveryAdds() {
        var segment = ReplicaSegment()
        #expect(segment.add(entry(0, lac: -1), isRecovery: false, payloadBytesMax: 100) == .store)
        let fencedNow = segment.fence()
        let fencedAgain = segment.fence()
        #expect(fencedNow, "a new fence is persisted before the answer")
        #expect(!fencedAgain, "fencing twice changes nothing")
        #expect(segment.add(entry(1, lac: 0), isRecovery: false, payloadBytesMax: 100) == .refuse(.fenced))
        #expect(segment.add(entry(1, lac: 0), isRecovery: true, payloadBytesMax: 100) == .store)
        // As recovered after a restart: still fenced.
        #expect(ReplicaSegment(isFenced: true).add(entry(2, lac: 1), isRecovery: false, payloadBytesMax: 100) == .refuse(.fenced))
    }

    @Test func damagedOrOversizedEntriesAreNeverStored() {
        let segment = ReplicaSegment()
        var damaged = entry(0, lac: -1, "abc")
        damaged.payload = ByteBuffer(string: "abd")
        #expect(segment.add(damaged, isRecovery: true, payloadBytesMax: 100) == .refuse(.badChecksum))
        #expect(segment.add(entry(0, lac: -1, String(repeating: "y", count: 101)), isRecovery: false, payloadBytesMax: 100) == .refuse(.tooLarge))
    }

    @Test func longPollsWakeWhenTheLastAddConfirmedPassesThemOrTimeOut() {
        var segment = ReplicaSegment(pollsMax: 3)
        _ = segment.stored(entry(0, lac: -1))
        #expect(segment.readLastAddConfirmed(1, after: nil, waitMilliseconds: 0, nowMilliseconds: 0)
            == .init(request: 1, status: .ok, lastAddConfirmed: -1, lastEntry: 0))
        #expect(segment.readLastAddConfirmed(2, after: -1, waitMilliseconds: 1_000, nowMilliseconds: 0) == nil)
        #expect(segment.readLastAddConfirmed(3, after: 0, waitMilliseconds: 1_000, nowMilliseconds: 0) == nil)
        #expect(segment.readLastAddConfirmed(4, after: 0, waitMilliseconds: 500, nowMilliseconds: 0) == nil)
        let refused = segment.readLastAddConfirmed(5, after: 0, waitMilliseconds: 500, nowMilliseconds: 0)
        #expect(refused?.status == .unavailable, "bounded")
        // Entry 1 carries LAC 0: the poll after -1 wakes, the ones after 0 wait.
        #expect(segment.stored(entry(1, lac: 0)) == [.init(request: 2, status: .ok, lastAddConfirmed: 0, lastEntry: 1)])
        #expect(segment.expirePolls(nowMilliseconds: 499).isEmpty)
        #expect(segment.expirePolls(nowMilliseconds: 500) == [.init(request: 4, status: .timedOut, lastAddConfirmed: 0, lastEntry: 1)])
        #expect(segment.advertised(1) == [.init(request: 3, status: .ok, lastAddConfirmed: 1, lastEntry: 1)])
        #expect(segment.advertised(1).isEmpty && segment.waitingPolls == 0)
        // A stale last-add-confirmed never moves it back.
        _ = segment.stored(entry(2, lac: 0))
        #expect(segment.lastAddConfirmed == 1 && segment.lastEntry == 2)
    }
}
