/// BookKeeper's quorum arithmetic for one segment: an ensemble of E storage nodes, each
/// entry written to Qw of them (round-robin striping), acknowledged once Qa of those made
/// it durable. Pure functions of (E, Qw, Qa); positions are indexes into the ensemble.
/// The rules and their sources are in docs/REPLICATION.md.
public struct QuorumShape: Sendable, Hashable, CustomStringConvertible {
    /// E: nodes a segment's fragment is spread over.
    public let ensembleSize: Int
    /// Qw: nodes each entry is written to.
    public let writeQuorumSize: Int
    /// Qa: durable copies that acknowledge an entry.
    public let ackQuorumSize: Int

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// E ≥ Qw ≥ Qa ≥ 1, as BookKeeper requires at ledger creation.
    public init(ensemble: Int, write: Int, ack: Int) throws(Invalid) {
        guard ack >= 1, write >= ack, ensemble >= write else {
            throw Invalid(description: "replication needs ensemble ≥ write quorum ≥ ack quorum ≥ 1, not \(ensemble)/\(write)/\(ack)")
        }
        ensembleSize = ensemble
        writeQuorumSize = write
        ackQuorumSize = ack
    }

    /// One node keeps everything: today's single-node path.
    public static let single = try! QuorumShape(ensemble: 1, write: 1, ack: 1)

    public var description: String { "\(ensembleSize)/\(writeQuorumSize)/\(ackQuorumSize)" }

    /// The ensemble positions entry `entry` is written to: Qw consecutive positions from
    /// `entry mod E`, wrapping.
    public func writeSet(of entry: Int64) -> [Int] {
        precondition(entry >= 0, "entry ids start at 0")
        let first = Int(entry % Int64(ensembleSize))
        return (0..<writeQuorumSize).map { (first + $0) % ensembleSize }
    }

    /// Whether `position` holds a copy of `entry`.
    public func isInWriteSet(_ position: Int, of entry: Int64) -> Bool {
        let first = Int(entry % Int64(ensembleSize))
        let distance = (position - first + ensembleSize) % ensembleSize
        return distance < writeQuorumSize
    }

    /// Answers (OK or "no such entry/segment") from these positions make fencing
    /// complete: in every one of the E write sets fewer than Qa positions are still
    /// unknown, so a deposed writer can never again collect Qa acknowledgements. The
    /// check is per write set, not a count (E − Qa + 1 answers always suffice, but
    /// fewer may: 4 of 6 cover 6/3/2).
    public func fenceIsCovered(answered: Set<Int>) -> Bool {
        for first in 0..<ensembleSize {
            var unknown = 0
            for offset in 0..<writeQuorumSize where !answered.contains((first + offset) % ensembleSize) {
                unknown += 1
            }
            if unknown >= ackQuorumSize { return false }
        }
        return true
    }

    /// Negative answers ("no such entry") from positions of `entry`'s write set that
    /// prove it was never acknowledged: Qw − Qa + 1 of them leave at most Qa − 1 copies.
    public var missingProofCount: Int { writeQuorumSize - ackQuorumSize + 1 }

    /// Whether these negative answers prove `entry` was never acknowledged (recovery may
    /// end the segment before it).
    public func entryIsProvablyMissing(_ entry: Int64, negativeFrom positions: Set<Int>) -> Bool {
        positions.filter { isInWriteSet($0, of: entry) }.count >= missingProofCount
    }
}
