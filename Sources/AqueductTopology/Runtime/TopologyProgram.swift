#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// The last signal this process received (SIGTERM, SIGINT, SIGUSR1, SIGUSR2), 0 if none.
private let receivedSignal = Atomic<Int32>(0)

/// The entry point of a topology executable: `TopologyProgram.run(topology)` from the
/// user's `main`. What it does depends on how it was started:
///
/// - `--describe` (or `AQUEDUCT_DESCRIBE=1`): prints the physical plan as JSON and exits;
///   the server's topology master asks this before starting containers.
/// - `AQUEDUCT_CONTAINER=<i>` with `AQUEDUCT_STMGR_ADDRESSES=host:port,…` (one per
///   container, in order): runs container i's tasks and its stream manager, as the
///   server's scheduler starts it. SIGUSR1 deactivates the spouts, SIGUSR2 activates
///   them, SIGTERM stops; `AQUEDUCT_METRICS_FILE` gets the container's metrics (JSON)
///   every second. Exits 1 when user code fails (the scheduler restarts it).
/// - otherwise: local mode, every task in this process, until SIGINT or SIGTERM.
///
/// `AQUEDUCT_TOPOLOGY_NAME`, `AQUEDUCT_CONTAINERS=<n>`, `AQUEDUCT_PARALLELISM=component=n,…`
/// and `AQUEDUCT_MESSAGE_TIMEOUT_MS=<ms>` override the topology's settings;
/// `AQUEDUCT_START_INACTIVE=1` starts a container with its spouts deactivated.
public enum TopologyProgram {
    public struct Description: Codable, Sendable, Equatable {
        public struct Component: Codable, Sendable, Equatable {
            public var id: String
            public var spout: Bool
            public var parallelism: Int
        }
        public var name: String
        public var containers: Int
        public var components: [Component]
        /// Task id → container.
        public var taskContainers: [Int]

        public init(name: String, containers: Int, components: [Component], taskContainers: [Int]) {
            self.name = name
            self.containers = containers
            self.components = components
            self.taskContainers = taskContainers
        }
    }

    public static func describe(_ topology: Topology) -> Description {
        let plan = PhysicalPlan(topology: topology)
        return Description(
            name: topology.name, containers: plan.containers,
            components: topology.components.map { Description.Component(id: $0.id, spout: $0.isSpout, parallelism: $0.parallelism) },
            taskContainers: plan.tasks.map(\.container))
    }

    /// Applies the AQUEDUCT_* overrides of the environment.
    public static func configured(_ topology: Topology, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Topology {
        var topology = topology
        if let text = environment["AQUEDUCT_PARALLELISM"], !text.isEmpty {
            var parallelism: [String: Int] = [:]
            for entry in text.split(separator: ",") {
                let parts = entry.split(separator: "=")
                guard parts.count == 2, let count = Int(parts[1]) else {
                    throw TopologyError(problems: ["AQUEDUCT_PARALLELISM entry \"\(entry)\" is not component=count"])
                }
                parallelism[String(parts[0])] = count
            }
            topology = try topology.withParallelism(parallelism)
        }
        var config = topology.config
        let name = environment["AQUEDUCT_TOPOLOGY_NAME"].flatMap { $0.isEmpty ? nil : $0 } ?? topology.name
        if let containers = environment["AQUEDUCT_CONTAINERS"].flatMap(Int.init) { config.containers = containers }
        if let timeout = environment["AQUEDUCT_MESSAGE_TIMEOUT_MS"].flatMap(Int.init) { config.messageTimeoutMilliseconds = timeout }
        return try Topology.validated(name: name, config: config, components: topology.components)
    }

    public static func run(_ declared: Topology) -> Never {
        let environment = ProcessInfo.processInfo.environment
        let topology: Topology
        do {
            topology = try configured(declared)
        } catch {
            FileHandle.standardError.write(Data("aqueduct topology: \(error)\n".utf8))
            exit(2)
        }
        if CommandLine.arguments.contains("--describe") || environment["AQUEDUCT_DESCRIBE"] == "1" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: (try? encoder.encode(describe(topology))) ?? Data(), as: UTF8.self))
            exit(0)
        }
        // A parent may start us with these blocked (the mask is inherited): unblock them
        // before any task thread starts, so every thread may take them.
        var wanted = sigset_t()
        sigemptyset(&wanted)
        for signalNumber in [SIGTERM, SIGINT, SIGUSR1, SIGUSR2] {
            sigaddset(&wanted, signalNumber)
            signal(signalNumber) { number in receivedSignal.store(number, ordering: .relaxed) }
        }
        pthread_sigmask(SIG_UNBLOCK, &wanted, nil)
        if let containerText = environment["AQUEDUCT_CONTAINER"], let container = Int(containerText) {
            exit(runContainer(topology, container: container, environment: environment))
        }
        let running = LocalCluster().submit(topology)
        FileHandle.standardError.write(Data("topology \(topology.name): \(running.plan.tasks.count) tasks in local mode; Ctrl-C stops\n".utf8))
        exit(supervise(containers: [running], metricsFile: environment["AQUEDUCT_METRICS_FILE"]))
    }

    private static func runContainer(_ topology: Topology, container: Int, environment: [String: String]) -> Int32 {
        let addresses = (environment["AQUEDUCT_STMGR_ADDRESSES"] ?? "").split(separator: ",").map(String.init)
        guard container >= 0, container < topology.config.containers, addresses.count == topology.config.containers else {
            FileHandle.standardError.write(Data("aqueduct topology: container \(container) of \(topology.config.containers) needs AQUEDUCT_STMGR_ADDRESSES with \(topology.config.containers) host:port entries (has \(addresses.count))\n".utf8))
            return 2
        }
        var peers: [Int: (host: String, port: Int)] = [:]
        for (index, address) in addresses.enumerated() {
            let parts = address.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else {
                FileHandle.standardError.write(Data("aqueduct topology: bad stream manager address \(address)\n".utf8))
                return 2
            }
            peers[index] = (String(parts[0]), port)
        }
        let running = RunningTopology(topology: topology, clock: MonotonicClock(), container: container, deferStart: true)
        let manager: StreamManager
        do {
            manager = try StreamManager(fabric: running.fabric, container: container, port: peers[container]!.port)
        } catch {
            FileHandle.standardError.write(Data("aqueduct topology: \(error)\n".utf8))
            return 1
        }
        running.fabric.connect(manager)
        manager.setPeers(peers)
        if environment["AQUEDUCT_START_INACTIVE"] == "1" { running.deactivate() }
        running.startTasks()
        let status = supervise(
            containers: [running], metricsFile: environment["AQUEDUCT_METRICS_FILE"],
            serverPID: environment["AQUEDUCT_SERVER_PID"].flatMap { pid_t($0) })
        manager.stop()
        return status
    }

    /// Waits for a signal or a failure of user code, writing metrics now and then. A
    /// container whose server is gone (killed: nobody is left to stop it) stops itself,
    /// so it never runs next to the copy another node starts.
    private static func supervise(containers: [RunningTopology], metricsFile: String?, serverPID: pid_t? = nil) -> Int32 {
        var lastMetrics = Date.distantPast
        while true {
            if let serverPID, getppid() != serverPID {
                FileHandle.standardError.write(Data("aqueduct topology: the server that started this container (pid \(serverPID)) is gone; stopping\n".utf8))
                for running in containers { running.kill() }
                return 3
            }
            switch receivedSignal.exchange(0, ordering: .relaxed) {
            case SIGTERM, SIGINT:
                for running in containers { running.kill() }
                return 0
            case SIGUSR1: for running in containers { running.deactivate() }
            case SIGUSR2: for running in containers { running.activate() }
            default: break
            }
            if let failed = containers.first(where: { !$0.isRunning && !$0.errors.isEmpty }) {
                FileHandle.standardError.write(Data("aqueduct topology: \(failed.errors.joined(separator: "; "))\n".utf8))
                for running in containers { running.kill() }
                return 1
            }
            if let metricsFile, Date().timeIntervalSince(lastMetrics) >= 1 {
                lastMetrics = Date()
                if let data = try? JSONEncoder().encode(containers[0].metrics()) {
                    try? data.write(to: URL(fileURLWithPath: metricsFile), options: .atomic)
                }
            }
            usleep(50_000)
        }
    }
}
