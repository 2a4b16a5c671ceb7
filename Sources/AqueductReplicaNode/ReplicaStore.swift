import AqueductCommon
import AqueductReplication
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Synchronization

/// Limits and places of a replica store. Every bound is named with its unit.
public struct ReplicaStoreConfiguration: Sendable {
    /// Where the entry log's files and the deleted-segments list live.
    public var directory: String
    /// An entry log file is closed and the next one started past this size.
    public var entryLogFileBytesMax: Int64 = 256 << 20
    /// Most bytes one group-commit write (one RWF_DSYNC) carries.
    public var batchBytesMax = 1 << 20
    /// Largest entry payload stored; a larger one is answered `tooLarge`.
    public var payloadBytesMax = 8 << 20
    /// Segments this node holds copies of (a writer's or a fencer's input creates them).
    public var segmentsMax = 100_000
    /// Long polls parked on one segment at once.
    public var pollsPerSegmentMax = 1_024
    /// Threads reading entries back from the entry log, and reads in flight at once.
    public var readThreads = 2
    public var readsInFlightMax = 8

    public init(directory: String) {
        self.directory = directory
    }
}

/// A storage node's copies of replicated segments (BookKeeper's bookie): the
/// `ReplicaSegment` machine of each segment over a durable `EntryLog`. Entries are
/// answered `ok` only once durable; a fence is durable before it is answered, and is
/// ordered after every add accepted before it, so what the fence reports includes them.
public final class ReplicaStore: Sendable {
    public typealias Status = StorageProtocol.Status

    /// What a node answers to a read-LAC: status, last-add-confirmed, last stored entry.
    public struct LastAddConfirmed: Sendable, Hashable {
        public var status: Status
        public var lastAddConfirmed: Int64
        public var lastEntry: Int64

        public init(status: Status, lastAddConfirmed: Int64, lastEntry: Int64) {
            self.status = status
            self.lastAddConfirmed = lastAddConfirmed
            self.lastEntry = lastEntry
        }
    }

    public typealias PollToken = UInt64

    struct SegmentCopy {
        var machine: ReplicaSegment
        var locations: [Int64: EntryLocation] = [:]
    }

    struct State {
        var segments: [UInt64: SegmentCopy] = [:]
        var deleted: Set<UInt64> = []
        var polls: [PollToken: (segment: UInt64, answer: @Sendable (LastAddConfirmed) -> Void)] = [:]
        var nextPollToken: PollToken = 1
        var closed = false
    }

    public let configuration: ReplicaStoreConfiguration
    let logger: Logger
    let log: EntryLog
    let state: Mutex<State>
    let readPool: NIOThreadPool
    let readSlots: WeightedSemaphore
    let readFiles = Mutex<[UInt64: DataFile]>([:])
    /// What opening found: records read, the torn tail cut, damage in older files.
    public let recoveryReport: RecoveryReport

    let addsRefused = Counter(label: "aqueduct_replica_adds_refused_total")
    let checksumFailures = Counter(label: "aqueduct_replica_checksum_failures_total")

    public struct RecoveryReport: Sendable {
        public var files = 0
        public var records = 0
        /// Bytes cut from the end of the last file (a write torn by a crash: never acknowledged).
        public var tornBytes: Int64 = 0
        /// Older files whose records stop before the file ends (disk damage).
        public var damagedFiles: [String] = []
    }

    private var logDirectory: String { configuration.directory + "/entrylog" }
    private var deletedListPath: String { configuration.directory + "/deleted-segments" }

    /// Opens the store: reads every entry log file back (checking each record), cuts a
    /// torn tail, then starts a new file for appends.
    public init(configuration: ReplicaStoreConfiguration, logger: Logger = Logger(label: "aqueduct.replica")) throws {
        self.configuration = configuration
        self.logger = logger
        let directory = configuration.directory + "/entrylog"
        try FileSystem.createDirectory(directory)
        var state = State()
        state.deleted = try Self.loadDeleted(configuration.directory + "/deleted-segments")
        var report = RecoveryReport()
        var segmentsByFile: [UInt64: Set<UInt64>] = [:]
        let numbers = FileSystem.listDirectory(directory).compactMap(EntryLog.fileNumber(of:)).sorted()
        for number in numbers {
            let path = directory + "/" + EntryLog.fileName(number)
            let file = try DataFile.open(path, create: false)
            var segments = Set<UInt64>()
            let (validBytes, problem) = try EntryLog.scan(file, number: number) { record, location in
                report.records += 1
                let id = record.entry.segment
                segments.insert(id)
                guard !state.deleted.contains(id) else { return }
                var copy = state.segments[id] ?? SegmentCopy(machine: ReplicaSegment(pollsMax: configuration.pollsPerSegmentMax))
                switch record.kind {
                case .fence:
                    _ = copy.machine.fence()
                case .entry:
                    copy.locations[record.entry.entry] = location
                    _ = copy.machine.stored(record.entry)
                }
                state.segments[id] = copy
            }
            report.files += 1
            segmentsByFile[number] = segments
            if let problem {
                if number == numbers.last {
                    let size = try file.size()
                    report.tornBytes = size - validBytes
                    logger.warning("cutting a torn write off the entry log's end", metadata: ["file": "\(path)", "bytes": "\(size - validBytes)", "why": "\(problem)"])
                    try file.truncate(to: validBytes)
                    try file.syncData()
                } else {
                    report.damagedFiles.append(path)
                    logger.error("an entry log file is damaged; its later records are lost on this node", metadata: ["file": "\(path)", "why": "\(problem)"])
                }
            }
            file.close()
        }
        recoveryReport = report
        log = try EntryLog(
            directory: directory, nextFileNumber: (numbers.last ?? 0) + 1, segmentsByFile: segmentsByFile,
            fileBytesMax: configuration.entryLogFileBytesMax, batchBytesMax: configuration.batchBytesMax, logger: logger)
        self.state = Mutex(state)
        readPool = NIOThreadPool(numberOfThreads: configuration.readThreads)
        readSlots = WeightedSemaphore(capacity: configuration.readsInFlightMax)
        readPool.start()
        log.start()
    }

    // MARK: - Requests

    /// Stores an entry and answers once it is durable (or at once when refused).
    public func add(_ entry: StorageProtocol.Entry, isRecovery: Bool, answer: @escaping @Sendable (Status) -> Void) {
        let refusal = state.withLock { state -> Status? in
            if state.closed { return .unavailable }
            if state.deleted.contains(entry.segment) { return .noSuchSegment }
            if state.segments[entry.segment] == nil {
                guard state.segments.count < configuration.segmentsMax else { return .unavailable }
                state.segments[entry.segment] = SegmentCopy(machine: ReplicaSegment(pollsMax: configuration.pollsPerSegmentMax))
            }
            let decision = state.segments[entry.segment]!.machine.add(entry, isRecovery: isRecovery, payloadBytesMax: configuration.payloadBytesMax)
            if case .refuse(let status) = decision { return status }
            // Submitted under the lock: the log's order is the order of decisions, so a
            // fence decided after this add is durable after it.
            do {
                try log.submit(.entry, entry) { [self] result in stored(entry, result, answer: answer) }
            } catch {
                return .unavailable
            }
            return nil
        }
        if let refusal {
            addsRefused.increment()
            if refusal == .badChecksum { checksumFailures.increment() }
            answer(refusal)
        }
    }

    private func stored(_ entry: StorageProtocol.Entry, _ result: Result<EntryLocation, EntryLogError>, answer: @Sendable (Status) -> Void) {
        guard case .success(let location) = result else {
            answer(.unavailable)
            return
        }
        let woken = state.withLock { state -> [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)] in
            guard state.segments[entry.segment] != nil else { return [] }
            state.segments[entry.segment]!.locations[entry.entry] = location
            let answers = state.segments[entry.segment]!.machine.stored(entry)
            return Self.takePolls(answers, from: &state)
        }
        answer(.ok)
        for (deliver, value) in woken { deliver(value) }
    }

    /// Fences a segment (creating it fenced when the node has nothing of it, so a late
    /// add from the deposed writer is refused), durably, after every add accepted
    /// before it; then `then` runs with what the node had before the fence.
    private func fence(_ segment: UInt64, then: @escaping @Sendable (_ hadSegment: Bool, _ failed: Status?) -> Void) {
        let outcome = state.withLock { state -> (hadSegment: Bool, failed: Status?)? in
            if state.closed { return (false, .unavailable) }
            if state.deleted.contains(segment) { return (false, .noSuchSegment) }
            let hadSegment = state.segments[segment].map { !$0.locations.isEmpty } ?? false
            if state.segments[segment] == nil {
                guard state.segments.count < configuration.segmentsMax else { return (false, .unavailable) }
                state.segments[segment] = SegmentCopy(machine: ReplicaSegment(pollsMax: configuration.pollsPerSegmentMax))
            }
            _ = state.segments[segment]!.machine.fence()
            // Always through the log, even when already fenced: the answer must come
            // after every add accepted before it is durable.
            let marker = StorageProtocol.Entry(segment: segment, entry: 0, lastAddConfirmed: -1, payload: ByteBuffer(), checksum: 0)
            do {
                try log.submit(.fence, marker) { result in
                    if case .failure = result { then(hadSegment, .unavailable) } else { then(hadSegment, nil) }
                }
            } catch {
                return (hadSegment, .unavailable)
            }
            return nil
        }
        if let outcome { then(outcome.hadSegment, outcome.failed) }
    }

    /// Reads one entry (fencing first when asked: a recovery read).
    public func read(segment: UInt64, entry: Int64, fence shouldFence: Bool, answer: @escaping @Sendable (Status, StorageProtocol.Entry?) -> Void) {
        if shouldFence {
            fence(segment) { [self] _, failed in
                if let failed { answer(failed, nil) } else { read(segment: segment, entry: entry, fence: false, answer: answer) }
            }
            return
        }
        let lookup = state.withLock { state -> (Status, EntryLocation?) in
            if state.closed { return (.unavailable, nil) }
            guard let copy = state.segments[segment], !state.deleted.contains(segment) else { return (.noSuchSegment, nil) }
            guard let location = copy.locations[entry] else { return (.noSuchEntry, nil) }
            return (.ok, location)
        }
        guard let location = lookup.1 else {
            answer(lookup.0, nil)
            return
        }
        Task {
            let (status, record) = await readRecord(at: location)
            if let record, record.segment == segment, record.entry == entry {
                answer(.ok, record)
            } else {
                if status == .badChecksum {
                    checksumFailures.increment()
                    logger.error("a stored entry fails its checksum; refusing to serve it", metadata: ["segment": "\(segment)", "entry": "\(entry)"])
                }
                answer(status == .ok ? .noSuchEntry : status, nil)
            }
        }
    }

    private func readRecord(at location: EntryLocation) async -> (Status, StorageProtocol.Entry?) {
        let slot = await readSlots.acquire(1)
        defer { readSlots.release(slot) }
        do {
            return try await readPool.runIfActive { [self] in
                let file = try readFiles.withLock { files -> DataFile in
                    if let file = files[location.file] { return file }
                    let file = try DataFile.open(log.directory + "/" + EntryLog.fileName(location.file), create: false, readOnly: true)
                    files[location.file] = file
                    return file
                }
                guard let record = try EntryLog.read(file, at: location) else { return (.badChecksum, nil) }
                return (.ok, record.entry)
            }
        } catch {
            return (.unavailable, nil)
        }
    }

    /// Answers a read-LAC: at once, or (a long poll) once the last-add-confirmed passes
    /// `after` or `waitMilliseconds` pass. Returns a token when parked, to cancel it if
    /// the asker goes away. With `fence`, fences first (how recovery starts).
    @discardableResult
    public func readLastAddConfirmed(
        segment: UInt64, fence shouldFence: Bool, after: Int64?, waitMilliseconds: UInt32,
        answer: @escaping @Sendable (LastAddConfirmed) -> Void
    ) -> PollToken? {
        if shouldFence {
            fence(segment) { [self] hadSegment, failed in
                if let failed {
                    answer(LastAddConfirmed(status: failed, lastAddConfirmed: -1, lastEntry: -1))
                    return
                }
                let now = state.withLock { state in state.segments[segment]?.machine }
                let status: Status = hadSegment ? .ok : .noSuchSegment
                answer(LastAddConfirmed(status: status, lastAddConfirmed: now?.lastAddConfirmed ?? -1, lastEntry: now?.lastEntry ?? -1))
            }
            return nil
        }
        let nowMilliseconds = Int64(monotonicNanoseconds() / 1_000_000)
        let result = state.withLock { state -> (immediate: LastAddConfirmed?, token: PollToken?) in
            if state.closed { return (LastAddConfirmed(status: .unavailable, lastAddConfirmed: -1, lastEntry: -1), nil) }
            guard state.segments[segment] != nil, !state.deleted.contains(segment) else {
                return (LastAddConfirmed(status: .noSuchSegment, lastAddConfirmed: -1, lastEntry: -1), nil)
            }
            let token = state.nextPollToken
            if let now = state.segments[segment]!.machine.readLastAddConfirmed(token, after: after, waitMilliseconds: waitMilliseconds, nowMilliseconds: nowMilliseconds) {
                return (LastAddConfirmed(status: now.status, lastAddConfirmed: now.lastAddConfirmed, lastEntry: now.lastEntry), nil)
            }
            state.nextPollToken += 1
            state.polls[token] = (segment, answer)
            return (nil, token)
        }
        if let immediate = result.immediate {
            answer(immediate)
            return nil
        }
        Task { [self] in
            try? await Task.sleep(for: .milliseconds(Int(waitMilliseconds)))
            expirePolls(segment)
        }
        return result.token
    }

    private func expirePolls(_ segment: UInt64) {
        let nowMilliseconds = Int64(monotonicNanoseconds() / 1_000_000)
        let expired = state.withLock { state -> [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)] in
            guard state.segments[segment] != nil else { return [] }
            let answers = state.segments[segment]!.machine.expirePolls(nowMilliseconds: nowMilliseconds)
            return Self.takePolls(answers, from: &state)
        }
        for (deliver, value) in expired { deliver(value) }
    }

    /// Drops a parked long poll unanswered (its connection closed).
    public func cancelPoll(_ token: PollToken) {
        state.withLock { state in
            guard let poll = state.polls.removeValue(forKey: token) else { return }
            state.segments[poll.segment]?.machine.cancelPoll(token)
        }
    }

    /// An explicit last-add-confirmed from an idle writer.
    public func advertise(segment: UInt64, lastAddConfirmed: Int64) -> Status {
        let woken = state.withLock { state -> [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)]? in
            guard state.segments[segment] != nil, !state.deleted.contains(segment) else { return nil }
            let answers = state.segments[segment]!.machine.advertised(lastAddConfirmed)
            return Self.takePolls(answers, from: &state)
        }
        guard let woken else { return .noSuchSegment }
        for (deliver, value) in woken { deliver(value) }
        return .ok
    }

    private static func takePolls(
        _ answers: [ReplicaSegment.PollAnswer], from state: inout State
    ) -> [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)] {
        answers.compactMap { answer in
            guard let poll = state.polls.removeValue(forKey: answer.request) else { return nil }
            return (poll.answer, LastAddConfirmed(status: answer.status, lastAddConfirmed: answer.lastAddConfirmed, lastEntry: answer.lastEntry))
        }
    }

    // MARK: - Administration

    /// What the node holds of a segment: fenced bit, last entry, last-add-confirmed,
    /// and the entries stored.
    public struct SegmentSummary: Sendable, Hashable {
        public var isFenced: Bool
        public var lastEntry: Int64
        public var lastAddConfirmed: Int64
        public var entries: [Int64]
    }

    public func summary(of segment: UInt64) -> SegmentSummary? {
        state.withLock { state in
            state.segments[segment].map {
                SegmentSummary(
                    isFenced: $0.machine.isFenced, lastEntry: $0.machine.lastEntry, lastAddConfirmed: $0.machine.lastAddConfirmed,
                    entries: $0.locations.keys.sorted())
            }
        }
    }

    /// Long polls parked now, over every segment.
    public var waitingPolls: Int { state.withLock { $0.polls.count } }

    public var segmentIDs: [UInt64] { state.withLock { $0.segments.keys.sorted() } }

    /// Forgets a segment for good (its log's retention passed it): it is listed as
    /// deleted durably first, so a restart cannot bring it back from files still
    /// holding other segments; files holding only deleted segments are removed.
    public func deleteSegments(_ ids: [UInt64]) throws {
        let (deleted, parked) = state.withLock { state -> (Set<UInt64>, [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)]) in
            state.deleted.formUnion(ids)
            var parked: [(@Sendable (LastAddConfirmed) -> Void, LastAddConfirmed)] = []
            for id in ids { state.segments.removeValue(forKey: id) }
            for (token, poll) in state.polls where ids.contains(poll.segment) {
                state.polls.removeValue(forKey: token)
                parked.append((poll.answer, LastAddConfirmed(status: .noSuchSegment, lastAddConfirmed: -1, lastEntry: -1)))
            }
            return (state.deleted, parked)
        }
        for (deliver, value) in parked { deliver(value) }
        try Self.saveDeleted(deleted, to: deletedListPath)
        let removed = log.removeFiles { [self] segment in state.withLock { !$0.deleted.contains(segment) } }
        // A read in flight may still hold a file: it closes when its last reference goes.
        readFiles.withLock { files in for number in removed { files.removeValue(forKey: number) } }
        // Ids no file mentions any more need not be remembered.
        let mentioned = log.segmentsByFile.withLock { files in files.values.reduce(into: Set<UInt64>()) { $0.formUnion($1) } }
        let remaining = state.withLock { state -> Set<UInt64>? in
            let kept = state.deleted.intersection(mentioned)
            guard kept != state.deleted else { return nil }
            state.deleted = kept
            return kept
        }
        if let remaining { try Self.saveDeleted(remaining, to: deletedListPath) }
    }

    /// Stops taking requests, answers parked polls, writes what is queued.
    public func close() async {
        let parked = state.withLock { state -> [@Sendable (LastAddConfirmed) -> Void] in
            state.closed = true
            let parked = state.polls.values.map(\.answer)
            state.polls.removeAll()
            return parked
        }
        for deliver in parked { deliver(LastAddConfirmed(status: .unavailable, lastAddConfirmed: -1, lastEntry: -1)) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { [log] in
                log.stop()
                continuation.resume()
            }
        }
        try? await readPool.shutdownGracefully()
        readFiles.withLock { files in
            for file in files.values { file.close() }
            files.removeAll()
        }
    }

    // MARK: - The deleted-segments list: count u32 | ids u64... | crc32c u32

    static func loadDeleted(_ path: String) throws -> Set<UInt64> {
        guard let bytes = try FileSystem.readWholeFile(path) else { return [] }
        var buffer = ByteBuffer(bytes: bytes)
        guard let count: UInt32 = buffer.readInteger(), buffer.readableBytes == Int(count) * 8 + 4 else {
            throw FileIOError("parse deleted-segments list", path: path, errno: 0)
        }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 4)])) }
        var ids = Set<UInt64>()
        for _ in 0..<count { ids.insert(buffer.readInteger()!) }
        guard buffer.readInteger(as: UInt32.self) == crc else { throw FileIOError("checksum of deleted-segments list", path: path, errno: 0) }
        return ids
    }

    static func saveDeleted(_ ids: Set<UInt64>, to path: String) throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(ids.count))
        for id in ids.sorted() { buffer.writeInteger(id) }
        let crc = buffer.withUnsafeReadableBytes { CRC32C.checksum($0) }
        buffer.writeInteger(crc)
        try FileSystem.atomicReplace(path, contents: Array(buffer.readableBytesView))
    }
}
