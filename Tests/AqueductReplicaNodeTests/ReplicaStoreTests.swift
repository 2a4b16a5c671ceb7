import AqueductReplicaNode
import AqueductReplication
import AqueductTestSupport
import Foundation
import NIOCore
import Synchronization
import Testing

/// The replica store's promises over a real directory: durable before `ok`, fences
/// durable and ordered after earlier adds, restarts that keep both, torn tails cut,
/// deleted segments that stay deleted.
@Suite struct ReplicaStoreTests {
    func entry(_ segment: UInt64, _ id: Int64, lac: Int64, _ text: String = "payload") -> StorageProtocol.Entry {
        StorageProtocol.Entry(segment: segment, entry: id, lastAddConfirmed: lac, payload: ByteBuffer(string: text + " \(segment)/\(id)"))
    }

    func add(_ store: ReplicaStore, _ entry: StorageProtocol.Entry, recovery: Bool = false) async -> StorageProtocol.Status {
        await withCheckedContinuation { continuation in
            store.add(entry, isRecovery: recovery) { continuation.resume(returning: $0) }
        }
    }

    func read(_ store: ReplicaStore, _ segment: UInt64, _ id: Int64, fence: Bool = false) async -> (StorageProtocol.Status, StorageProtocol.Entry?) {
        await withCheckedContinuation { continuation in
            store.read(segment: segment, entry: id, fence: fence) { continuation.resume(returning: ($0, $1)) }
        }
    }

    func lastAddConfirmed(_ store: ReplicaStore, _ segment: UInt64, fence: Bool = false, after: Int64? = nil, wait: UInt32 = 0) async -> ReplicaStore.LastAddConfirmed {
        await withCheckedContinuation { continuation in
            store.readLastAddConfirmed(segment: segment, fence: fence, after: after, waitMilliseconds: wait) { continuation.resume(returning: $0) }
        }
    }

    @Test func entriesAndFencesSurviveARestart() async throws {
        let directory = temporaryDirectory()
        var configuration = ReplicaStoreConfiguration(directory: directory)
        configuration.entryLogFileBytesMax = 4_096  // several files
        do {
            let store = try ReplicaStore(configuration: configuration)
            for id in 0..<100 as Range<Int64> {
                #expect(await add(store, entry(7, id, lac: id - 1, String(repeating: "a", count: 100))) == .ok)
            }
            #expect(await add(store, entry(8, 0, lac: -1)) == .ok)
            let fenced = await lastAddConfirmed(store, 8, fence: true)
            #expect(fenced == .init(status: .ok, lastAddConfirmed: -1, lastEntry: 0))
            await store.close()
        }
        let store = try ReplicaStore(configuration: configuration)
        #expect(store.recoveryReport.files > 3)
        #expect(store.recoveryReport.records == 102)
        let seven = try #require(store.summary(of: 7))
        #expect(seven.entries == Array(0..<100))
        #expect(seven.lastAddConfirmed == 98 && seven.lastEntry == 99 && !seven.isFenced)
        #expect(store.summary(of: 8)?.isFenced == true, "the fenced bit is durable")
        #expect(await add(store, entry(8, 1, lac: 0)) == .fenced)
        #expect(await add(store, entry(8, 1, lac: 0), recovery: true) == .ok)
        for id in [0, 37, 99] as [Int64] {
            let (status, read) = await read(store, 7, id)
            #expect(status == .ok)
            #expect(read == entry(7, id, lac: id - 1, String(repeating: "a", count: 100)))
        }
        #expect(await read(store, 7, 100).0 == .noSuchEntry)
        #expect(await read(store, 9, 0).0 == .noSuchSegment)
        await store.close()
    }

    @Test func aTornWriteAtTheEndIsCutAndEverythingBeforeItKept() async throws {
        let directory = temporaryDirectory()
        let configuration = ReplicaStoreConfiguration(directory: directory)
        do {
            let store = try ReplicaStore(configuration: configuration)
            for id in 0..<10 as Range<Int64> { #expect(await add(store, entry(1, id, lac: id - 1)) == .ok) }
            await store.close()
        }
        // A crash mid-write: the last record's payload half there.
        let files = FileSystem.listDirectory(directory + "/entrylog").sorted()
        let last = try DataFile.open(directory + "/entrylog/" + files.last!, create: false)
        let size = try last.size()
        try last.truncate(to: size - 5)
        last.close()
        let store = try ReplicaStore(configuration: configuration)
        #expect(store.recoveryReport.tornBytes > 0)
        #expect(store.summary(of: 1)?.entries == Array(0..<9))
        #expect(await read(store, 1, 9).0 == .noSuchEntry)
        #expect(await add(store, entry(1, 9, lac: 8)) == .ok, "the writer's retry lands after the cut")
        await store.close()
        let reopened = try ReplicaStore(configuration: configuration)
        #expect(reopened.recoveryReport.tornBytes == 0)
        #expect(reopened.summary(of: 1)?.entries == Array(0..<10))
        await reopened.close()
    }

    @Test func damagedEntriesAreRefusedAndStoredOnesNeverServedDamaged() async throws {
        let directory = temporaryDirectory()
        let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: directory))
        var damaged = entry(3, 0, lac: -1)
        damaged.payload = ByteBuffer(string: "something else")
        #expect(await add(store, damaged) == .badChecksum)
        #expect(await add(store, entry(3, 0, lac: -1, "intact")) == .ok)
        // Flip a payload byte on disk behind the store's back.
        let name = FileSystem.listDirectory(directory + "/entrylog").sorted().last!
        let file = try DataFile.open(directory + "/entrylog/" + name, create: false)
        let size = try file.size()
        try file.write([UInt8(ascii: "X")], at: size - 1)
        file.close()
        #expect(await read(store, 3, 0).0 == .badChecksum)
        await store.close()
    }

    @Test func aFenceIsAnsweredAfterEveryAddAcceptedBeforeIt() async throws {
        let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: temporaryDirectory()))
        let answers = Mutex<[String]>([])
        let done = Atomic<Int>(0)
        for id in 0..<200 as Range<Int64> {
            store.add(entry(5, id, lac: id - 1), isRecovery: false) { status in
                answers.withLock { $0.append("add \(id) \(status)") }
                done.add(1, ordering: .relaxed)
            }
        }
        store.readLastAddConfirmed(segment: 5, fence: true, after: nil, waitMilliseconds: 0) { value in
            answers.withLock { $0.append("fence \(value.lastEntry)") }
            done.add(1, ordering: .relaxed)
        }
        store.add(entry(5, 200, lac: 199), isRecovery: false) { status in
            answers.withLock { $0.append("late add \(status)") }
            done.add(1, ordering: .relaxed)
        }
        try await waitUntil { done.load(ordering: .relaxed) == 202 }
        let order = answers.withLock { $0 }
        #expect(order.last == "fence 199", "the fence reports every add accepted before it")
        #expect(order.contains("late add fenced"))
        #expect(order.filter { $0.hasSuffix(" ok") }.count == 200)
        await store.close()
    }

    @Test func fencingASegmentTheNodeNeverSawRefusesTheDeposedWritersLateAdd() async throws {
        let directory = temporaryDirectory()
        let configuration = ReplicaStoreConfiguration(directory: directory)
        do {
            let store = try ReplicaStore(configuration: configuration)
            #expect(await lastAddConfirmed(store, 11, fence: true).status == .noSuchSegment)
            #expect(await add(store, entry(11, 0, lac: -1)) == .fenced)
            await store.close()
        }
        let store = try ReplicaStore(configuration: configuration)
        #expect(await add(store, entry(11, 0, lac: -1)) == .fenced, "after a restart too")
        await store.close()
    }

    @Test func longPollsWakeOnTheLastAddConfirmedOrTimeOut() async throws {
        let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: temporaryDirectory()))
        #expect(await add(store, entry(2, 0, lac: -1)) == .ok)
        async let woken = lastAddConfirmed(store, 2, after: -1, wait: 60_000)
        try await waitUntil { store.waitingPolls == 1 }
        // An entry carrying last-add-confirmed 0 wakes it.
        #expect(await add(store, entry(2, 1, lac: 0)) == .ok)
        #expect(await woken == .init(status: .ok, lastAddConfirmed: 0, lastEntry: 1))
        async let advertised = lastAddConfirmed(store, 2, after: 0, wait: 60_000)
        try await waitUntil { store.waitingPolls == 1 }
        #expect(store.advertise(segment: 2, lastAddConfirmed: 1) == .ok)
        #expect(await advertised == .init(status: .ok, lastAddConfirmed: 1, lastEntry: 1))
        #expect(store.advertise(segment: 99, lastAddConfirmed: 1) == .noSuchSegment)
        let expired = await lastAddConfirmed(store, 2, after: 5, wait: 20)
        #expect(expired == .init(status: .timedOut, lastAddConfirmed: 1, lastEntry: 1))
        #expect(store.waitingPolls == 0)
        await store.close()
    }

    @Test func deletedSegmentsStayDeletedAndTheirFilesGo() async throws {
        let directory = temporaryDirectory()
        var configuration = ReplicaStoreConfiguration(directory: directory)
        configuration.entryLogFileBytesMax = 2_048
        do {
            let store = try ReplicaStore(configuration: configuration)
            // Segment 1 alone in the first files, then 1 and 2 mixed.
            for id in 0..<40 as Range<Int64> { #expect(await add(store, entry(1, id, lac: id - 1, String(repeating: "b", count: 200))) == .ok) }
            for id in 40..<60 as Range<Int64> {
                #expect(await add(store, entry(1, id, lac: id - 1, String(repeating: "b", count: 200))) == .ok)
                #expect(await add(store, entry(2, id - 40, lac: id - 41, String(repeating: "c", count: 200))) == .ok)
            }
            let filesBefore = FileSystem.listDirectory(directory + "/entrylog").count
            try store.deleteSegments([1])
            let filesAfter = FileSystem.listDirectory(directory + "/entrylog").count
            #expect(filesAfter < filesBefore, "files holding only segment 1 are removed")
            #expect(await read(store, 1, 0).0 == .noSuchSegment)
            #expect(await add(store, entry(1, 60, lac: 59)) == .noSuchSegment, "a deleted segment is not created again")
            await store.close()
        }
        let store = try ReplicaStore(configuration: configuration)
        #expect(store.summary(of: 1) == nil, "files still holding segment 2 do not bring segment 1 back")
        #expect(store.summary(of: 2)?.entries == Array(0..<20))
        try store.deleteSegments([2])
        await store.close()
        let empty = try ReplicaStore(configuration: configuration)
        #expect(empty.segmentIDs.isEmpty)
        await empty.close()
    }
}
