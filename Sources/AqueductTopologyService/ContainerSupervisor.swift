import AqueductTopology

/// The local scheduler's decisions, as a pure state machine: which container processes
/// of which topology to start, signal or restart, given what happened to them (started,
/// exited) and the time. The I/O shell (spawning processes, sending signals, waiting
/// for exits) performs the actions it returns; tests drive it as scripts of events.
///
/// A container that exits while its topology should run is started again after a
/// backoff that doubles from `restartBackoffMinMilliseconds` to
/// `restartBackoffMaxMilliseconds`, and falls back to the minimum once a container has
/// run for `stableMilliseconds`. Kill terminates every container and forgets the
/// topology once all have exited; update terminates them and starts the new plan's.
public struct ContainerSupervisor: Sendable {
    public enum Signal: String, Sendable, Equatable {
        case terminate, activate, deactivate
    }

    public enum Action: Sendable, Equatable {
        /// Start container `container` of `topology` at plan `generation`, with its spouts
        /// active or not.
        case start(topology: String, container: Int, generation: Int, active: Bool)
        case signal(pid: Int32, Signal)
        /// Every container of a killed topology has exited: drop its files and metadata.
        case forget(topology: String)
    }

    public struct Limits: Sendable {
        public var restartBackoffMinMilliseconds: Int64 = 1_000
        public var restartBackoffMaxMilliseconds: Int64 = 30_000
        public var stableMilliseconds: Int64 = 60_000
        public init() {}
    }

    public enum State: String, Sendable, Codable {
        case running, deactivated, killing
    }

    public struct Container: Sendable, Equatable, Codable {
        public var index: Int
        public var pid: Int32?
        public var generation: Int
        public var startedAtMilliseconds: Int64?
        public var restarts: Int = 0
        public var backoffMilliseconds: Int64 = 0
        public var nextStartAtMilliseconds: Int64?
        public var lastExitStatus: Int32?
    }

    public struct Topology: Sendable, Equatable, Codable {
        public var name: String
        public var description: TopologyProgram.Description
        public var generation: Int
        public var state: State
        public var containers: [Container]
    }

    public struct SupervisorError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public let limits: Limits
    public private(set) var topologies: [String: Topology] = [:]

    public init(limits: Limits = Limits()) { self.limits = limits }

    public mutating func submit(_ description: TopologyProgram.Description, now: Int64, active: Bool = true) throws(SupervisorError) -> [Action] {
        guard topologies[description.name] == nil else {
            throw SupervisorError(description: "a topology named \(description.name) is running: kill it first, or update it")
        }
        guard description.containers >= 1 else { throw SupervisorError(description: "the plan has no containers") }
        let containers = (0..<description.containers).map { Container(index: $0, generation: 0) }
        topologies[description.name] = Topology(name: description.name, description: description, generation: 0, state: active ? .running : .deactivated, containers: containers)
        return containers.map { .start(topology: description.name, container: $0.index, generation: 0, active: active) }
    }

    public mutating func started(_ name: String, container: Int, generation: Int, pid: Int32, now: Int64) -> [Action] {
        guard var topology = topologies[name], container < topology.containers.count else { return [.signal(pid: pid, .terminate)] }
        // A start for an older plan, or for a topology being killed: stop it at once.
        guard generation == topology.generation, topology.state != .killing else { return [.signal(pid: pid, .terminate)] }
        topology.containers[container].pid = pid
        topology.containers[container].generation = generation
        topology.containers[container].startedAtMilliseconds = now
        topology.containers[container].nextStartAtMilliseconds = nil
        topologies[name] = topology
        return []
    }

    /// The start failed (the executable is gone, ...): try again after the backoff.
    public mutating func startFailed(_ name: String, container: Int, now: Int64) {
        guard var topology = topologies[name], container < topology.containers.count, topology.state != .killing else { return }
        scheduleRestart(&topology.containers[container], now: now)
        topologies[name] = topology
    }

    public mutating func exited(_ name: String, container: Int, pid: Int32, status: Int32, now: Int64) -> [Action] {
        guard var topology = topologies[name], container < topology.containers.count, topology.containers[container].pid == pid else { return [] }
        var entry = topology.containers[container]
        entry.pid = nil
        entry.lastExitStatus = status
        var actions: [Action] = []
        switch topology.state {
        case .killing:
            topology.containers[container] = entry
            if topology.containers.allSatisfy({ $0.pid == nil }) {
                topologies[name] = nil
                return [.forget(topology: name)]
            }
        case .running, .deactivated:
            if entry.generation != topology.generation {
                // Stopped for an update: the new plan's container starts now.
                entry.generation = topology.generation
                entry.restarts = 0
                entry.backoffMilliseconds = 0
                actions.append(.start(topology: name, container: container, generation: topology.generation, active: topology.state == .running))
            } else {
                if let started = entry.startedAtMilliseconds, now - started >= limits.stableMilliseconds { entry.backoffMilliseconds = 0 }
                entry.restarts += 1
                scheduleRestart(&entry, now: now)
            }
        }
        topology.containers[container] = entry
        topologies[name] = topology
        return actions
    }

    private func scheduleRestart(_ entry: inout Container, now: Int64) {
        entry.backoffMilliseconds = entry.backoffMilliseconds == 0
            ? limits.restartBackoffMinMilliseconds : min(entry.backoffMilliseconds * 2, limits.restartBackoffMaxMilliseconds)
        entry.nextStartAtMilliseconds = now + entry.backoffMilliseconds
    }

    /// Restarts that are due.
    public mutating func tick(now: Int64) -> [Action] {
        var actions: [Action] = []
        for name in topologies.keys.sorted() {
            guard var topology = topologies[name], topology.state != .killing else { continue }
            for index in topology.containers.indices {
                if let due = topology.containers[index].nextStartAtMilliseconds, due <= now, topology.containers[index].pid == nil {
                    topology.containers[index].nextStartAtMilliseconds = nil
                    actions.append(.start(topology: name, container: index, generation: topology.generation, active: topology.state == .running))
                }
            }
            topologies[name] = topology
        }
        return actions
    }

    public mutating func kill(_ name: String) throws(SupervisorError) -> [Action] {
        guard var topology = topologies[name] else { throw SupervisorError(description: "no topology named \(name)") }
        topology.state = .killing
        let live = topology.containers.compactMap(\.pid)
        for index in topology.containers.indices { topology.containers[index].nextStartAtMilliseconds = nil }
        if live.isEmpty {
            topologies[name] = nil
            return [.forget(topology: name)]
        }
        topologies[name] = topology
        return live.map { .signal(pid: $0, .terminate) }
    }

    public mutating func setActive(_ name: String, _ active: Bool) throws(SupervisorError) -> [Action] {
        guard var topology = topologies[name], topology.state != .killing else { throw SupervisorError(description: "no topology named \(name)") }
        topology.state = active ? .running : .deactivated
        topologies[name] = topology
        return topology.containers.compactMap(\.pid).map { .signal(pid: $0, active ? .activate : .deactivate) }
    }

    /// A new plan (other parallelism or containers): every container stops and the new
    /// plan's start as the old ones exit.
    public mutating func update(_ description: TopologyProgram.Description, now: Int64) throws(SupervisorError) -> [Action] {
        guard var topology = topologies[description.name], topology.state != .killing else {
            throw SupervisorError(description: "no topology named \(description.name)")
        }
        topology.generation += 1
        topology.description = description
        var actions: [Action] = []
        var containers: [Container] = []
        for index in 0..<description.containers {
            if index < topology.containers.count, let pid = topology.containers[index].pid {
                containers.append(topology.containers[index])
                actions.append(.signal(pid: pid, .terminate))
            } else {
                containers.append(Container(index: index, generation: topology.generation))
                actions.append(.start(topology: description.name, container: index, generation: topology.generation, active: topology.state == .running))
            }
        }
        // Containers beyond the new count: stop them; they are not restarted.
        for old in topology.containers.dropFirst(description.containers) {
            if let pid = old.pid { actions.append(.signal(pid: pid, .terminate)) }
        }
        topology.containers = containers
        topologies[description.name] = topology
        return actions
    }
}
