@testable import AqueductReplication
import AqueductTestSupport
import Testing

@Suite struct QuorumShapeTests {
    @Test func shapesOutsideEnsembleWriteAckOrderAreRefused() {
        #expect(throws: QuorumShape.Invalid.self) { try QuorumShape(ensemble: 3, write: 2, ack: 3) }
        #expect(throws: QuorumShape.Invalid.self) { try QuorumShape(ensemble: 2, write: 3, ack: 2) }
        #expect(throws: QuorumShape.Invalid.self) { try QuorumShape(ensemble: 3, write: 3, ack: 0) }
        #expect((try? QuorumShape(ensemble: 5, write: 3, ack: 2))?.description == "5/3/2")
    }

    @Test func entriesAreStripedRoundRobinOverTheEnsemble() throws {
        // BookKeeper's own example: E=4, Qw=3.
        let shape = try QuorumShape(ensemble: 4, write: 3, ack: 2)
        #expect(shape.writeSet(of: 0) == [0, 1, 2])
        #expect(shape.writeSet(of: 1) == [1, 2, 3])
        #expect(shape.writeSet(of: 2) == [2, 3, 0])
        #expect(shape.writeSet(of: 3) == [3, 0, 1])
        #expect(shape.writeSet(of: 4) == [0, 1, 2])
        for entry in Int64(0)..<40 {
            for position in 0..<4 {
                #expect(shape.isInWriteSet(position, of: entry) == shape.writeSet(of: entry).contains(position))
            }
        }
    }

    /// The coverage rule, checked against its definition over every subset of answers:
    /// covered exactly when no write set can still hold Qa unfenced nodes.
    @Test func fencingIsCoveredExactlyWhenNoWriteSetCanStillAckAnEntry() throws {
        for ensemble in 1...7 {
            for write in 1...ensemble {
                for ack in 1...write {
                    let shape = try QuorumShape(ensemble: ensemble, write: write, ack: ack)
                    for mask in 0..<(1 << ensemble) {
                        let answered = Set((0..<ensemble).filter { mask & (1 << $0) != 0 })
                        let deposedWriterCanAck = (Int64(0)..<Int64(ensemble)).contains { entry in
                            shape.writeSet(of: entry).filter { !answered.contains($0) }.count >= ack
                        }
                        #expect(shape.fenceIsCovered(answered: answered) == !deposedWriterCanAck, "\(shape) \(answered.sorted())")
                    }
                }
            }
        }
    }

    /// The table of docs/REPLICATION.md (from the BookKeeper notes): the fewest answers
    /// that can cover, and how many always do (E − Qa + 1).
    @Test func fewestAndAlwaysSufficientAnswersMatchTheTable() throws {
        let table: [(Int, Int, Int, fewest: Int, always: Int)] = [
            (3, 3, 2, 2, 2), (3, 3, 3, 1, 1), (3, 2, 2, 2, 2), (4, 3, 2, 3, 3),
            (5, 3, 2, 4, 4), (6, 3, 2, 4, 5), (5, 2, 2, 3, 4), (5, 3, 3, 2, 3),
        ]
        for row in table {
            let shape = try QuorumShape(ensemble: row.0, write: row.1, ack: row.2)
            var fewest = Int.max
            var always = 0
            for count in 0...row.0 {
                let subsets = (0..<(1 << row.0)).filter { $0.nonzeroBitCount == count }
                let covering = subsets.filter { mask in shape.fenceIsCovered(answered: Set((0..<row.0).filter { mask & (1 << $0) != 0 })) }
                if !covering.isEmpty { fewest = min(fewest, count) }
                if covering.count == subsets.count && always == 0 { always = count }
            }
            #expect(fewest == row.fewest && always == row.always, "\(shape): fewest \(fewest), always \(always)")
        }
    }

    @Test func anEntryIsProvablyMissingAfterQwMinusQaPlusOneNegativeAnswersFromItsWriteSet() throws {
        let shape = try QuorumShape(ensemble: 5, write: 3, ack: 2)  // entry 1 → positions 1, 2, 3
        #expect(shape.missingProofCount == 2)
        #expect(!shape.entryIsProvablyMissing(1, negativeFrom: [1]))
        #expect(!shape.entryIsProvablyMissing(1, negativeFrom: [1, 4, 0]))  // 4 and 0 never held it
        #expect(shape.entryIsProvablyMissing(1, negativeFrom: [1, 3]))
        #expect(QuorumShape.single.entryIsProvablyMissing(7, negativeFrom: [0]))
    }
}
