import AqueductAPI
import AqueductBroker
import AqueductLog
import AqueductRecords
import Foundation
import Synchronization

/// Idempotent producers (KIP-98): per producer id and partition, the epoch and the
/// last batches' sequence ranges, so a batch retried by the client is recognised and
/// answered with its first offset instead of being stored twice, and a batch with a
/// gap before it is refused (OUT_OF_ORDER_SEQUENCE_NUMBER) so the client resends in
/// order.
///
/// The state lives in memory. After a restart, the first batch of a producer on a
/// partition makes the table read the partition's recent batches (the last
/// `restoreOffsetsMax` offsets) for that producer, so a retry of a batch stored before
/// the restart is still recognised.
final class ProducerStateTable: Sendable {
    /// Batches remembered per producer and partition (Kafka: the client's
    /// max.in.flight.requests.per.connection must be at most 5 for idempotence).
    static let batchesRemembered = 5

    struct Batch: Equatable {
        var firstSequence: Int32
        var lastSequence: Int32
        var baseOffset: Int64
    }

    struct Entry {
        var epoch: Int16
        var batches: [Batch] = []
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

    /// How far back (in offsets) a restore reads a partition for a producer's batches.
    static let restoreOffsetsMax: Int64 = 20_000

    private let entries = Mutex<[Key: Entry]>([:])
    /// Producer and partition pairs already restored or seen since start.
    private let known = Mutex<Set<Key>>([])
    private let nextProducerID: Atomic<Int64>

    init(seedMilliseconds: Int64 = Int64(Date().timeIntervalSince1970 * 1_000)) {
        // Unique across restarts while fewer than 1,024 ids are handed out per millisecond.
        nextProducerID = Atomic(seedMilliseconds << 10)
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

    /// Decides what to do with a batch before it is appended.
    func check(_ header: RecordBatchHeader, partition: TopicPartition) -> Verdict {
        guard header.producerId >= 0 else { return .append }
        let key = Key(producerID: header.producerId, partition: partition)
        return entries.withLock { entries in
            guard let entry = entries[key] else { return .append }
            if header.producerEpoch < entry.epoch {
                return .reject(code: KafkaErrorCode.invalidProducerEpoch,
                    message: "producer epoch \(header.producerEpoch) is older than the current \(entry.epoch)")
            }
            if header.producerEpoch > entry.epoch {
                return header.baseSequence == 0 ? .append : .reject(code: KafkaErrorCode.outOfOrderSequenceNumber,
                    message: "a new producer epoch must start at sequence 0, not \(header.baseSequence)")
            }
            let last = Self.lastSequence(header)
            if let stored = entry.batches.first(where: { $0.firstSequence == header.baseSequence && $0.lastSequence == last }) {
                return .duplicate(baseOffset: stored.baseOffset)
            }
            guard let previous = entry.batches.last else { return .append }
            if Self.follows(header.baseSequence, previous.lastSequence) { return .append }
            return .reject(code: KafkaErrorCode.outOfOrderSequenceNumber,
                message: "sequence \(header.baseSequence) does not follow \(previous.lastSequence) for producer \(header.producerId)")
        }
    }

    /// Reads the partition's recent batches for this producer once per producer and
    /// partition since start, so the checks see what was stored before a restart.
    func restoreIfNeeded(producerID: Int64, partition: TopicPartition, broker: Broker) async {
        guard producerID >= 0 else { return }
        let key = Key(producerID: producerID, partition: partition)
        guard known.withLock({ $0.insert(key).inserted }) else { return }
        guard let (start, end) = try? broker.offsets(topic: partition.topic, partition: partition.partition) else { return }
        var offset = max(start, end - Self.restoreOffsetsMax)
        var found: [(RecordBatchHeader, Int64)] = []
        while offset < end {
            guard let read = try? await broker.fetch(
                topic: partition.topic, partition: partition.partition, offset: offset, maxBytes: 4 << 20, maxWaitMilliseconds: 0),
                !read.batches.isEmpty
            else { break }
            for batch in read.batches {
                guard let header = RecordBatchHeader(from: batch), header.producerId == producerID else { continue }
                found.append((header, header.baseOffset))
            }
            offset = read.nextOffset
        }
        for (header, baseOffset) in found.suffix(Self.batchesRemembered) { record(header, partition: partition, baseOffset: baseOffset) }
    }

    /// Forgets a recorded batch whose append failed, so a retry of it is stored.
    func forget(_ appended: AppendResult, partition: TopicPartition) {
        entries.withLock { entries in
            for key in entries.keys where key.partition == partition {
                entries[key]?.batches.removeAll { $0.baseOffset == appended.baseOffset }
            }
        }
    }

    /// Records a batch that was appended at `baseOffset`.
    func record(_ header: RecordBatchHeader, partition: TopicPartition, baseOffset: Int64) {
        guard header.producerId >= 0 else { return }
        let key = Key(producerID: header.producerId, partition: partition)
        entries.withLock { entries in
            var entry = entries[key] ?? Entry(epoch: header.producerEpoch)
            if header.producerEpoch != entry.epoch { entry = Entry(epoch: header.producerEpoch) }
            entry.batches.append(Batch(firstSequence: header.baseSequence, lastSequence: Self.lastSequence(header), baseOffset: baseOffset))
            if entry.batches.count > Self.batchesRemembered { entry.batches.removeFirst() }
            entries[key] = entry
        }
    }
}
