import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductLog
import AqueductRecords
import Foundation
import Metrics
import Synchronization

/// Idempotent producers (KIP-98): per producer id and partition, the epoch and the
/// last batches' sequence ranges, so a batch retried by the client is recognised and
/// answered with its first offset instead of being stored twice, and a batch with a
/// gap before it is refused (OUT_OF_ORDER_SEQUENCE_NUMBER) so the client resends in
/// order.
///
/// `admit` checks a batch and records it in one step; the Kafka handler calls it under
/// the partition's log lock, as the offsets are assigned, so the same batch retried on
/// two connections at once is stored once.
///
/// The state lives in memory and is bounded: a producer's state on a partition expires
/// `expirationMilliseconds` after its last batch (Kafka's producer.id.expiration.ms),
/// and past `statesMax` the states written longest ago are dropped. After a restart,
/// the first idempotent batch on a partition makes the table read the partition's
/// recent batches once (the last `restoreOffsetsMax` offsets) for every producer, so a
/// retry of a batch stored before the restart is still recognised and a new producer id
/// costs a lookup, not a scan.
final class ProducerStateTable: Sendable {
    /// Batches remembered per producer and partition (Kafka: the client's
    /// max.in.flight.requests.per.connection must be at most 5 for idempotence).
    static let batchesRemembered = 5
    /// How far back (in offsets) a restore reads a partition.
    static let restoreOffsetsMax: Int64 = 20_000
    /// Partitions remembered as restored before those of deleted topics are dropped.
    static let restoresBeforePruning = 10_000
    /// How often expired states are swept out, in milliseconds.
    static let sweepIntervalMilliseconds: Int64 = 60_000

    struct Limits: Sendable {
        /// Producer and partition pairs kept (each a few hundred bytes).
        var statesMax = 200_000
        /// Kafka's producer.id.expiration.ms (1 day).
        var expirationMilliseconds: Int64 = 86_400_000
    }

    struct Batch: Equatable {
        var firstSequence: Int32
        var lastSequence: Int32
        var baseOffset: Int64
    }

    struct Entry {
        var epoch: Int16
        var batches: [Batch] = []
        var lastWriteMilliseconds: Int64
    }

    struct Key: Hashable {
        var producerID: Int64
        var partition: TopicPartition
    }

    enum Verdict: Equatable {
        case append
        /// Already stored at this base offset.
        case duplicate(baseOffset: Int64)
        case reject(code: Int16, message: String)
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var lastSweepMilliseconds: Int64 = 0
    }

    /// A partition's restore: running (others wait for it) or done.
    private enum Restore {
        case running(Task<Void, Never>)
        case done
    }

    let limits: Limits
    private let clock: any WallClock
    private let state = Mutex(State())
    private let restores = Mutex<[TopicPartition: Restore]>([:])
    private let nextProducerID: Atomic<Int64>
    private let evicted = Counter(label: "aqueduct_kafka_producer_states_evicted_total")
    /// Partitions read back for producer state since start (one each at most).
    let restoreScans = Atomic<Int>(0)
    private let expired = Counter(label: "aqueduct_kafka_producer_states_expired_total")

    init(limits: Limits = Limits(), clock: any WallClock = SystemWallClock(), seedMilliseconds: Int64? = nil) {
        self.limits = limits
        self.clock = clock
        // Unique across restarts while fewer than 1,024 ids are handed out per millisecond.
        nextProducerID = Atomic((seedMilliseconds ?? clock.nowMilliseconds()) << 10)
    }

    /// A new producer id at epoch 0, or, for a client that names its id (KIP-360),
    /// the same id with the next epoch.
    func allocate(existing producerID: Int64, epoch: Int16) -> (Int64, Int16) {
        if producerID >= 0 {
            let next = epoch == Int16.max ? 0 : epoch + 1
            return (producerID, next)
        }
        return (nextProducerID.wrappingAdd(1, ordering: .relaxed).newValue, 0)
    }

    private static func lastSequence(_ header: RecordBatchHeader) -> Int32 {
        let last = Int64(header.baseSequence) + Int64(header.lastOffsetDelta)
        return Int32(truncatingIfNeeded: last > Int64(Int32.max) ? last - Int64(Int32.max) - 1 : last)
    }

    private static func follows(_ next: Int32, _ last: Int32) -> Bool {
        last == Int32.max ? next == 0 : next == last + 1
    }

    /// Decides what to do with a batch, and records it when it is to be appended at
    /// `baseOffset`: one step, so two copies of a batch cannot both pass.
    func admit(_ header: RecordBatchHeader, partition: TopicPartition, baseOffset: Int64) -> Verdict {
        guard header.producerId >= 0 else { return .append }
        let now = clock.nowMilliseconds()
        return state.withLock { state in
            let verdict = Self.check(header, entry: state.entries[Key(producerID: header.producerId, partition: partition)])
            if verdict == .append { record(header, partition: partition, baseOffset: baseOffset, now: now, in: &state) }
            return verdict
        }
    }

    /// Decides what to do with a batch before it is appended (without recording it).
    func check(_ header: RecordBatchHeader, partition: TopicPartition) -> Verdict {
        guard header.producerId >= 0 else { return .append }
        return state.withLock { Self.check(header, entry: $0.entries[Key(producerID: header.producerId, partition: partition)]) }
    }

    private static func check(_ header: RecordBatchHeader, entry: Entry?) -> Verdict {
        guard let entry else { return .append }
        if header.producerEpoch < entry.epoch {
            return .reject(code: KafkaErrorCode.invalidProducerEpoch,
                message: "producer epoch \(header.producerEpoch) is older than the current \(entry.epoch)")
        }
        if header.producerEpoch > entry.epoch {
            return header.baseSequence == 0 ? .append : .reject(code: KafkaErrorCode.outOfOrderSequenceNumber,
                message: "a new producer epoch must start at sequence 0, not \(header.baseSequence)")
        }
        let last = lastSequence(header)
        if let stored = entry.batches.first(where: { $0.firstSequence == header.baseSequence && $0.lastSequence == last }) {
            return .duplicate(baseOffset: stored.baseOffset)
        }
        guard let previous = entry.batches.last else { return .append }
        if follows(header.baseSequence, previous.lastSequence) { return .append }
        return .reject(code: KafkaErrorCode.outOfOrderSequenceNumber,
            message: "sequence \(header.baseSequence) does not follow \(previous.lastSequence) for producer \(header.producerId)")
    }

    /// Reads the partition's recent batches once per partition since start (every
    /// producer's), so the checks see what was stored before a restart. Callers that
    /// come while it runs wait for it.
    func restoreIfNeeded(partition: TopicPartition, broker: Broker) async {
        let task: Task<Void, Never>? = restores.withLock { restores in
            switch restores[partition] {
            case .done: return nil
            case .running(let task): return task
            case nil:
                if restores.count > Self.restoresBeforePruning {
                    // Partitions of deleted topics need no restore state.
                    restores = restores.filter { (try? broker.partitionCount($0.key.topic)) != nil }
                }
                let task = Task { await self.restore(partition, broker: broker) }
                restores[partition] = .running(task)
                return task
            }
        }
        guard let task else { return }
        await task.value
        restores.withLock { $0[partition] = .done }
    }

    private func restore(_ partition: TopicPartition, broker: Broker) async {
        restoreScans.add(1, ordering: .relaxed)
        guard let (start, end) = try? broker.offsets(topic: partition.topic, partition: partition.partition) else { return }
        var offset = max(start, end - Self.restoreOffsetsMax)
        var found: [Int64: [(RecordBatchHeader, Int64)]] = [:]
        while offset < end {
            guard let read = try? await broker.fetch(
                topic: partition.topic, partition: partition.partition, offset: offset, maxBytes: 4 << 20, maxWaitMilliseconds: 0),
                !read.batches.isEmpty
            else { break }
            for batch in read.batches {
                guard let header = RecordBatchHeader(from: batch), header.producerId >= 0 else { continue }
                found[header.producerId, default: []].append((header, header.baseOffset))
                if found[header.producerId]!.count > Self.batchesRemembered { found[header.producerId]!.removeFirst() }
            }
            offset = read.nextOffset
        }
        let now = clock.nowMilliseconds()
        state.withLock { state in
            for (producerID, batches) in found where state.entries[Key(producerID: producerID, partition: partition)] == nil {
                for (header, baseOffset) in batches { record(header, partition: partition, baseOffset: baseOffset, now: now, in: &state) }
            }
        }
    }

    /// Forgets a recorded batch whose append failed, so a retry of it is stored.
    func forget(_ appended: AppendResult, producerID: Int64, partition: TopicPartition) {
        state.withLock { state in
            state.entries[Key(producerID: producerID, partition: partition)]?.batches.removeAll { $0.baseOffset == appended.baseOffset }
        }
    }

    /// Forgets the last batch recorded for a producer on a partition (its append was
    /// refused after `admit` recorded it).
    func forgetLast(producerID: Int64, partition: TopicPartition) {
        state.withLock { state in
            _ = state.entries[Key(producerID: producerID, partition: partition)]?.batches.popLast()
        }
    }

    /// Records a batch appended at `baseOffset` (tests and restores).
    func record(_ header: RecordBatchHeader, partition: TopicPartition, baseOffset: Int64) {
        let now = clock.nowMilliseconds()
        state.withLock { record(header, partition: partition, baseOffset: baseOffset, now: now, in: &$0) }
    }

    private func record(_ header: RecordBatchHeader, partition: TopicPartition, baseOffset: Int64, now: Int64, in state: inout State) {
        guard header.producerId >= 0 else { return }
        let key = Key(producerID: header.producerId, partition: partition)
        var entry = state.entries[key] ?? Entry(epoch: header.producerEpoch, lastWriteMilliseconds: now)
        if header.producerEpoch != entry.epoch { entry = Entry(epoch: header.producerEpoch, lastWriteMilliseconds: now) }
        entry.batches.append(Batch(firstSequence: header.baseSequence, lastSequence: Self.lastSequence(header), baseOffset: baseOffset))
        if entry.batches.count > Self.batchesRemembered { entry.batches.removeFirst() }
        entry.lastWriteMilliseconds = now
        let isNew = state.entries.updateValue(entry, forKey: key) == nil
        if now - state.lastSweepMilliseconds >= Self.sweepIntervalMilliseconds {
            state.lastSweepMilliseconds = now
            sweep(now: now, in: &state)
        }
        if isNew && state.entries.count > limits.statesMax { evict(in: &state) }
    }

    /// Drops states whose producer wrote nothing for the expiration time.
    private func sweep(now: Int64, in state: inout State) {
        let before = state.entries.count
        state.entries = state.entries.filter { now - $0.value.lastWriteMilliseconds < limits.expirationMilliseconds }
        expired.increment(by: before - state.entries.count)
    }

    /// Past the bound, drops the tenth of the states written longest ago (amortised:
    /// one sort per `statesMax / 10` new states).
    private func evict(in state: inout State) {
        let drop = max(1, limits.statesMax / 10)
        let oldest = state.entries.sorted { $0.value.lastWriteMilliseconds < $1.value.lastWriteMilliseconds }.prefix(drop)
        for (key, _) in oldest { state.entries[key] = nil }
        evicted.increment(by: oldest.count)
    }

    /// States kept now.
    var count: Int { state.withLock { $0.entries.count } }
}
