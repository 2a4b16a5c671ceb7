@testable import AqueductKafka
import AqueductBroker
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
