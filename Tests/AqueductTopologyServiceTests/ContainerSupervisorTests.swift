import AqueductTopology
@testable import AqueductTopologyService
import Testing

/// The scheduler's decisions as scripts of events.
@Suite struct ContainerSupervisorTests {
    func plan(_ name: String = "wc", containers: Int = 2) -> TopologyProgram.Description {
        TopologyProgram.Description(name: name, containers: containers, components: [], taskContainers: [])
    }

    func running(_ supervisor: inout ContainerSupervisor, containers: Int = 2) throws -> [Int32] {
        let actions = try supervisor.submit(plan(containers: containers), now: 0)
        #expect(actions == (0..<containers).map { .start(topology: "wc", container: $0, generation: 0, active: true) })
        return (0..<containers).map { index in
            let pid = Int32(100 + index)
            #expect(supervisor.started("wc", container: index, generation: 0, pid: pid, now: 0).isEmpty)
            return pid
        }
    }

    @Test func crashedContainersRestartWithDoublingBackoff() throws {
        var supervisor = ContainerSupervisor()
        _ = try running(&supervisor)
        #expect(supervisor.exited("wc", container: 1, pid: 101, status: 9, now: 5_000).isEmpty)
        #expect(supervisor.tick(now: 5_999).isEmpty)
        #expect(supervisor.tick(now: 6_000) == [.start(topology: "wc", container: 1, generation: 0, active: true)])
        _ = supervisor.started("wc", container: 1, generation: 0, pid: 201, now: 6_000)
        _ = supervisor.exited("wc", container: 1, pid: 201, status: 1, now: 6_500)  // crashed again quickly: 2 s
        #expect(supervisor.tick(now: 8_499).isEmpty)
        #expect(supervisor.tick(now: 8_500).count == 1)
        _ = supervisor.started("wc", container: 1, generation: 0, pid: 301, now: 8_500)
        _ = supervisor.exited("wc", container: 1, pid: 301, status: 1, now: 100_000)  // ran a long time: back to 1 s
        #expect(supervisor.tick(now: 101_000).count == 1)
        #expect(supervisor.topologies["wc"]?.containers[1].restarts == 3)
        #expect(supervisor.exited("wc", container: 0, pid: 999, status: 0, now: 1).isEmpty, "an unknown pid is ignored")
    }

    @Test func backoffIsCapped() throws {
        var supervisor = ContainerSupervisor()
        _ = try running(&supervisor, containers: 1)
        var pid: Int32 = 100
        var now: Int64 = 0
        var delays: [Int64] = []
        for _ in 0..<8 {
            _ = supervisor.exited("wc", container: 0, pid: pid, status: 1, now: now)
            let due = supervisor.topologies["wc"]!.containers[0].nextStartAtMilliseconds!
            delays.append(due - now)
            now = due
            #expect(supervisor.tick(now: now).count == 1)
            pid += 1
            _ = supervisor.started("wc", container: 0, generation: 0, pid: pid, now: now)
        }
        #expect(delays == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
    }

    @Test func killTerminatesAndForgetsOnceAllExited() throws {
        var supervisor = ContainerSupervisor()
        _ = try running(&supervisor)
        _ = supervisor.exited("wc", container: 1, pid: 101, status: 9, now: 10)  // restart pending
        #expect(try supervisor.kill("wc") == [.signal(pid: 100, .terminate)])
        #expect(supervisor.tick(now: 100_000).isEmpty, "no restart while killing")
        #expect(supervisor.exited("wc", container: 0, pid: 100, status: 0, now: 20) == [.forget(topology: "wc")])
        #expect(supervisor.topologies.isEmpty)
        #expect(throws: ContainerSupervisor.SupervisorError.self) { try supervisor.kill("wc") }
        #expect(try supervisor.submit(plan(), now: 30).count == 2, "the name is free again")
    }

    @Test func activationReachesLiveAndRestartedContainers() throws {
        var supervisor = ContainerSupervisor()
        _ = try running(&supervisor)
        #expect(try supervisor.setActive("wc", false) == [.signal(pid: 100, .deactivate), .signal(pid: 101, .deactivate)])
        _ = supervisor.exited("wc", container: 0, pid: 100, status: 9, now: 0)
        #expect(supervisor.tick(now: 1_000) == [.start(topology: "wc", container: 0, generation: 0, active: false)])
        #expect(throws: ContainerSupervisor.SupervisorError.self) { try supervisor.submit(plan(), now: 0) }
    }

    @Test func updateReplacesEveryContainer() throws {
        var supervisor = ContainerSupervisor()
        _ = try running(&supervisor)
        // Three containers now: the two old ones are stopped; the third starts at once.
        let actions = try supervisor.update(plan(containers: 3), now: 10)
        #expect(actions == [.signal(pid: 100, .terminate), .signal(pid: 101, .terminate), .start(topology: "wc", container: 2, generation: 1, active: true)])
        // An old one exits: its replacement starts without backoff.
        #expect(supervisor.exited("wc", container: 0, pid: 100, status: 0, now: 20) == [.start(topology: "wc", container: 0, generation: 1, active: true)])
        // A start that raced the update (old generation) is terminated.
        #expect(supervisor.started("wc", container: 1, generation: 0, pid: 555, now: 21) == [.signal(pid: 555, .terminate)])
        // Down to one container: the others stop and are not restarted.
        _ = supervisor.started("wc", container: 0, generation: 1, pid: 200, now: 30)
        let shrink = try supervisor.update(plan(containers: 1), now: 40)
        #expect(shrink.contains(.signal(pid: 200, .terminate)))
        #expect(supervisor.topologies["wc"]?.containers.count == 1)
    }
}
