import AqueductCommon
import AqueductReplication
import AqueductTestSupport
import Foundation
import Testing

/// Seeded runs of the whole-log simulation (ClusterSimulation): crashes with torn
/// tails, lost and delayed messages, cut links and takeovers racing the old writer.
/// `AQUEDUCT_SIM_SEEDS` sets how many runs (scripts/simulate.sh runs thousands);
/// `AQUEDUCT_TEST_SEED` replays one.
@Suite struct ClusterSimulationTests {
    static let shapes: [(QuorumShape, Int)] = [
        (try! QuorumShape(ensemble: 3, write: 3, ack: 2), 4),
        (try! QuorumShape(ensemble: 3, write: 2, ack: 2), 4),
        (try! QuorumShape(ensemble: 4, write: 3, ack: 2), 5),
        (try! QuorumShape(ensemble: 5, write: 3, ack: 2), 6),
        (try! QuorumShape(ensemble: 3, write: 3, ack: 3), 4),
    ]

    @Test func acknowledgedEntriesSurviveCrashesPartitionsAndTakeovers() {
        let first = testSeed()
        let runs = ProcessInfo.processInfo.environment["AQUEDUCT_SIM_SEEDS"].flatMap(Int.init) ?? 200
        let replaying = ProcessInfo.processInfo.environment["AQUEDUCT_TEST_SEED"] != nil && runs == 1
        var confirmed = 0
        var seals = 0
        var stats: [String: Int] = [:]
        for run in 0..<UInt64(runs) {
            let seed = first &+ run
            let (shape, nodes) = Self.shapes[Int(seed % UInt64(Self.shapes.count))]
            var simulation = ClusterSimulation(seed: seed, configuration: .init(shape: shape, nodes: nodes))
            simulation.run()
            confirmed += simulation.totalConfirmed
            seals += simulation.seals
            stats.merge(simulation.stats, uniquingKeysWith: +)
            if !simulation.violations.isEmpty || replaying {
                print("simulation seed \(seed) (\(shape), \(nodes) nodes): \(simulation.totalConfirmed) confirmations, \(simulation.seals) seals, "
                      + "\(simulation.segments.count) segments; replay with AQUEDUCT_TEST_SEED=\(seed) AQUEDUCT_SIM_SEEDS=1")
            }
            #expect(simulation.violations.isEmpty, "seed \(seed): \(simulation.violations.first ?? "")")
            if !simulation.violations.isEmpty { return }
        }
        print("simulation: \(runs) runs from seed \(first): \(confirmed) entries confirmed, \(seals) segments sealed, "
              + stats.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
        #expect(seals >= runs, "every run seals at least its last segment")
    }
}
