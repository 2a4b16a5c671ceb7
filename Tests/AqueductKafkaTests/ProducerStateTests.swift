@testable import AqueductKafka
import AqueductBroker
import AqueductCommon
import AqueductRecords
import Testing

@Suite struct ProducerStateTests {
    let partition = TopicPartition("t", 0)

    func header(producer: Int64, epoch: Int16 = 0, sequence: Int32, records: Int32 = 1) -> RecordBatchHeader {
        var builder = RecordBatchBuilder()
        for _ in 0..<records { builder.append(timestamp: 1, key: nil, value: [1]) }
        var header = RecordBatchHeader(from: builder.build())!
        header.producerId = producer
        header.producerEpoch = epoch
        header.baseSequence = sequence
        return header
    }

    @Test func retriesAreRecognisedAndGapsRefused() {
        let table = ProducerStateTable()
        let first = header(producer: 7, sequence: 0, records: 3)
        #expect(table.check(first, partition: partition) == .append)
        table.record(first, partition: partition, baseOffset: 100)
        // The same batch again (the client retried after a lost response).
        #expect(table.check(first, partition: partition) == .duplicate(baseOffset: 100))
        // The next batch must start at sequence 3.
        let next = header(producer: 7, sequence: 3)
        #expect(table.check(next, partition: partition) == .append)
        table.record(next, partition: partition, baseOffset: 103)
        guard case .reject(let code, _) = table.check(header(producer: 7, sequence: 9), partition: partition) else {
            Issue.record("a gap must be refused")
            return
        }
        #expect(code == KafkaErrorCode.outOfOrderSequenceNumber)
        // An older epoch is fenced; a newer one starts over at 0.
        guard case .reject(let fenced, _) = table.check(header(producer: 7, epoch: -1, sequence: 4), partition: partition) else {
            Issue.record("an old epoch must be refused")
            return
        }
        #expect(fenced == KafkaErrorCode.invalidProducerEpoch)
        #expect(table.check(header(producer: 7, epoch: 1, sequence: 0), partition: partition) == .append)
        // Other partitions and non-idempotent batches are independent.
        #expect(table.check(header(producer: 7, sequence: 5), partition: TopicPartition("t", 1)) == .append)
        #expect(table.check(header(producer: -1, sequence: -1), partition: partition) == .append)
    }

    @Test func producerIDsAreFreshAndEpochsBump() {
        let table = ProducerStateTable(seedMilliseconds: 1_000)
        let (a, epochA) = table.allocate(existing: -1, epoch: -1)
        let (b, _) = table.allocate(existing: -1, epoch: -1)
        #expect(a != b && epochA == 0)
        let (same, bumped) = table.allocate(existing: a, epoch: 0)
        #expect(same == a && bumped == 1)
    }
}

@Suite struct ProducerStateBoundsTests {
    let partition = TopicPartition("t", 0)

    func header(producer: Int64, sequence: Int32 = 0) -> RecordBatchHeader {
        var builder = RecordBatchBuilder()
        builder.append(timestamp: 1, key: nil, value: [1])
        var header = RecordBatchHeader(from: builder.build())!
        header.producerId = producer
        header.producerEpoch = 0
        header.baseSequence = sequence
        return header
    }

    @Test func statesExpireAfterTheProducerIsIdleForTheExpirationTime() {
        let clock = ManualWallClock()
        var limits = ProducerStateTable.Limits()
        limits.expirationMilliseconds = 3_600_000
        let table = ProducerStateTable(limits: limits, clock: clock)
        #expect(table.admit(header(producer: 1), partition: partition, baseOffset: 0) == .append)
        clock.advance(byMilliseconds: 1_800_000)
        #expect(table.admit(header(producer: 2), partition: partition, baseOffset: 1) == .append)
        clock.advance(byMilliseconds: 1_900_000)
        // Producer 1 was idle for 3.7 h: gone at the next sweep; producer 2 (1.9 h) stays.
        #expect(table.admit(header(producer: 3), partition: partition, baseOffset: 2) == .append)
        #expect(table.count == 2)
        #expect(table.check(header(producer: 2), partition: partition) == .duplicate(baseOffset: 1))
    }

    @Test func pastTheBoundTheStatesWrittenLongestAgoAreDropped() {
        let clock = ManualWallClock()
        var limits = ProducerStateTable.Limits()
        limits.statesMax = 100
        let table = ProducerStateTable(limits: limits, clock: clock)
        for producer in 0..<1_000 {
            clock.advance(byMilliseconds: 1)
            #expect(table.admit(header(producer: Int64(producer)), partition: partition, baseOffset: Int64(producer)) == .append)
            #expect(table.count <= 100)
        }
        // The most recent producers are still known.
        #expect(table.check(header(producer: 999), partition: partition) == .duplicate(baseOffset: 999))
    }
}
