import AqueductAPI
import AqueductTopology
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The topology master and local scheduler of the service: describes a submitted
/// program (`<executable> --describe`), starts its containers as child processes with
/// the environment `TopologyProgram` reads, restarts those that exit (the decisions are
/// `ContainerSupervisor`'s), signals them to (de)activate or stop, and reports their
/// state and the metrics they write. Containers listen on loopback only.
///
/// Submissions are kept in a `TopologyRegistryStore` (the server's metadata), so a
/// restarted server starts its topologies again (`resume`).
public final class TopologyMaster: TopologyDirectory, @unchecked Sendable {
    struct Registration {
        var executable: String
        var arguments: [String]
        var parallelism: [String: Int] = [:]
        var ports: [Int]
        var processes: [Int: Process] = [:]
        /// Cluster mode: the id the topology is owned under.
        var id: UInt64?
    }

    private struct State {
        var supervisor = ContainerSupervisor()
        var registrations: [String: Registration] = [:]
    }

    private let state = Mutex(State())
    private let runDirectory: String
    /// The only place programs run from (uploaded, or put there by the operator).
    public let programsDirectory: String
    public let programBytesMax: Int
    /// Given to containers (AQUEDUCT_TOKEN) when the server wants tokens.
    private let containerToken: String?
    private let store: (any TopologyRegistryStore)?
    /// Cluster mode: this node's id, shown in status.
    public let nodeID: Int?
    private let serverURL = Mutex("http://127.0.0.1:8080")
    private let logger: Logger
    /// How long `--describe` may take.
    static let describeTimeoutSeconds = 30.0
    /// Most bytes of `--describe` output read (the plan's JSON; the rest is refused).
    static let describeOutputBytesMax = 4 << 20

    public init(
        runDirectory: String, programsDirectory: String? = nil, programBytesMax: Int = 512 << 20, containerToken: String? = nil,
        store: (any TopologyRegistryStore)? = nil, nodeID: Int? = nil, logger: Logger
    ) {
        self.nodeID = nodeID
        self.runDirectory = runDirectory
        self.programsDirectory = Self.canonical(programsDirectory ?? runDirectory + "/programs")
        self.programBytesMax = programBytesMax
        self.containerToken = containerToken
        self.store = store
        self.logger = logger
        try? FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        try? FileManager.default.createDirectory(atPath: self.programsDirectory, withIntermediateDirectories: true)
    }

    /// An absolute path with symbolic links resolved (the directory must exist to be resolved).
    static func canonical(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        try? FileManager.default.createDirectory(atPath: absolute, withIntermediateDirectories: true)
        return URL(fileURLWithPath: absolute).resolvingSymlinksInPath().path
    }

    // MARK: Programs

    /// The program a submission names, as a path inside the programs directory: an
    /// uploaded program's name, or a path that resolves (links followed) to a file
    /// directly or deeper inside it. Anything else is refused.
    func resolveProgram(_ executable: String) throws(BrokerError) -> String {
        let candidate = executable.contains("/") ? executable : programsDirectory + "/" + executable
        let resolved = URL(fileURLWithPath: candidate).resolvingSymlinksInPath().path
        guard resolved.hasPrefix(programsDirectory + "/") else {
            throw BrokerError(.programNotAllowed, "\(executable) is not in the programs directory (\(programsDirectory))",
                hint: "upload it with `aqueduct topology submit <local path>` or `aqueduct topology upload`, or have an operator place it there")
        }
        guard FileManager.default.isExecutableFile(atPath: resolved) else {
            throw BrokerError(.invalidRequest, "no program named \(executable) in \(programsDirectory)",
                hint: "list programs with `aqueduct topology programs`; upload with `aqueduct topology upload <path>`")
        }
        return resolved
    }

    public func installProgram(name: String, uploadedFile: String) throws(BrokerError) -> ProgramJSON {
        try TopologyNames.validate(name, what: "program")
        let target = programsDirectory + "/" + name
        guard uploadedFile.hasPrefix(programsDirectory + "/"), chmod(uploadedFile, 0o755) == 0, rename(uploadedFile, target) == 0 else {
            throw BrokerError(.storageError, "cannot install the program \(name) in \(programsDirectory) (errno \(errno))")
        }
        logger.info("topology program installed", metadata: ["program": "\(name)"])
        return Self.describeProgram(name: name, path: target) ?? ProgramJSON(name: name, bytes: 0, modifiedAtMilliseconds: 0)
    }

    public func listPrograms() -> [ProgramJSON] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: programsDirectory)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { Self.describeProgram(name: $0, path: programsDirectory + "/" + $0) }
    }

    private static func describeProgram(name: String, path: String) -> ProgramJSON? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        let modified = (attributes[.modificationDate] as? Date).map { Int64($0.timeIntervalSince1970 * 1_000) } ?? 0
        return ProgramJSON(name: name, bytes: (attributes[.size] as? Int) ?? 0, modifiedAtMilliseconds: modified)
    }

    public func setServerURL(_ url: String) { serverURL.withLock { $0 = url } }

    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

    // MARK: TopologyDirectory

    public func submit(_ request: TopologySubmitRequest) async throws(BrokerError) -> TopologyStatusJSON {
        if let name = request.name { try TopologyNames.validate(name, what: "topology") }
        _ = try resolveProgram(request.executable)
        let record = TopologyRecord(name: request.name, executable: request.executable, arguments: request.arguments, parallelism: [:], active: true)
        let name = try await launch(record)
        if let saved = state.withLock({ $0.registrations[name] }) {
            await store?.save(TopologyRecord(name: name, executable: saved.executable, arguments: saved.arguments, parallelism: [:], active: true))
        }
        return try status(name)
    }

    /// Starts the topologies the store remembers (at server start).
    public func resume() async {
        guard let store else { return }
        for record in await store.loadAll() {
            do throws(BrokerError) {
                _ = try await launch(record)
                logger.info("topology resumed", metadata: ["topology": "\(record.name ?? "?")"])
            } catch {
                logger.error("cannot resume topology", metadata: ["topology": "\(record.name ?? "?")", "error": "\(error)"])
            }
        }
    }

    private func launch(_ record: TopologyRecord) async throws(BrokerError) -> String {
        let executable = try resolveProgram(record.executable)
        let description = try await describe(executable: executable, arguments: record.arguments, name: record.name, parallelism: record.parallelism)
        try TopologyNames.validate(description.name, what: "topology")
        let actions = try state.withLock { state throws(BrokerError) -> [ContainerSupervisor.Action] in
            do {
                let actions = try state.supervisor.submit(description, now: Self.nowMilliseconds(), active: record.active)
                state.registrations[description.name] = Registration(
                    executable: executable, arguments: record.arguments, parallelism: record.parallelism,
                    ports: (0..<description.containers).map { _ in Self.freeLoopbackPort() }, id: record.id)
                return actions
            } catch {
                throw BrokerError(.invalidRequest, "\(error)", hint: "aqueduct topology kill \(description.name)")
            }
        }
        logger.info("topology started", metadata: ["topology": "\(description.name)", "containers": "\(description.containers)"])
        perform(actions)
        return description.name
    }

    private func remember(_ name: String) async {
        guard let store, let (registration, active) = state.withLock({ state in
            state.registrations[name].flatMap { registration in state.supervisor.topologies[name].map { (registration, $0.state == .running) } }
        }) else { return }
        await store.save(TopologyRecord(name: name, executable: registration.executable, arguments: registration.arguments,
                                        parallelism: registration.parallelism, active: active, id: registration.id))
    }

    // MARK: Cluster mode (the cluster decides where a topology runs)

    /// The name a submission would run under, after checking that its program is allowed
    /// and describes itself (what `submit` checks before starting anything).
    public func validate(_ request: TopologySubmitRequest) async throws(BrokerError) -> String {
        if let name = request.name { try TopologyNames.validate(name, what: "topology") }
        let executable = try resolveProgram(request.executable)
        let description = try await describe(executable: executable, arguments: request.arguments, name: request.name, parallelism: [:])
        try TopologyNames.validate(description.name, what: "topology")
        return description.name
    }

    /// Starts a topology this node now owns; its record stays where the cluster keeps it.
    public func start(_ record: TopologyRecord) async throws(BrokerError) -> String {
        try await launch(record)
    }

    /// Stops a topology's containers here without forgetting its record (it moves to
    /// another node). False if it was not running here.
    @discardableResult
    public func stop(_ name: String) -> Bool {
        let actions = state.withLock { state -> [ContainerSupervisor.Action]? in
            guard state.supervisor.topologies[name]?.state != .killing else { return nil }
            return try? state.supervisor.kill(name)
        }
        guard let actions else { return false }
        logger.info("topology stopped here (it moves)", metadata: ["topology": "\(name)"])
        perform(actions)
        return true
    }

    /// Whether the topology has containers here (running, deactivated or stopping).
    public func runsHere(_ name: String) -> Bool { state.withLock { $0.supervisor.topologies[name] != nil } }

    /// The local topology owned under `id`.
    public func name(ofID id: UInt64) -> String? {
        state.withLock { $0.registrations.first { $0.value.id == id }?.key }
    }

    public func list() -> [TopologyStatusJSON] {
        let names = state.withLock { $0.supervisor.topologies.keys.sorted() }
        return names.compactMap { try? status($0) }
    }

    public func status(_ name: String) throws(BrokerError) -> TopologyStatusJSON {
        let found = state.withLock { state in state.supervisor.topologies[name].map { ($0, state.registrations[name]) } }
        guard let (topology, registration) = found, let registration else {
            throw BrokerError(.invalidRequest, "no topology named '\(name)'", hint: "list them with `aqueduct topology list`")
        }
        var components = topology.description.components.map { TopologyStatusJSON.Component(id: $0.id, spout: $0.spout, parallelism: $0.parallelism) }
        for container in topology.containers {
            guard let data = FileManager.default.contents(atPath: metricsPath(name, container.index)),
                  let metrics = try? JSONDecoder().decode(TopologyMetrics.self, from: data) else { continue }
            for task in metrics.tasks {
                guard let index = components.firstIndex(where: { $0.id == task.component }) else { continue }
                components[index].emitted += task.emitted
                components[index].executed += task.executed
                components[index].acked += task.acked
                components[index].failed += task.failed
                components[index].timedOut += task.timedOut
                components[index].queueDepth += task.queueDepth
                components[index].backpressureMillis += task.backpressureMillis
                components[index].executeLatencyMicros = max(components[index].executeLatencyMicros, task.executeLatencyMicros)
                components[index].completeLatencyP50Micros = max(components[index].completeLatencyP50Micros, task.completeLatencyP50Micros)
                components[index].completeLatencyP99Micros = max(components[index].completeLatencyP99Micros, task.completeLatencyP99Micros)
            }
        }
        return TopologyStatusJSON(
            name: name, state: topology.state.rawValue, executable: registration.executable, arguments: registration.arguments,
            generation: topology.generation,
            containers: topology.containers.map {
                TopologyStatusJSON.Container(index: $0.index, pid: $0.pid, restarts: $0.restarts, lastExitStatus: $0.lastExitStatus, log: logPath(name, $0.index))
            },
            components: components, node: nodeID)
    }

    public func kill(_ name: String) throws(BrokerError) {
        let actions = try state.withLock { state throws(BrokerError) -> [ContainerSupervisor.Action] in
            do { return try state.supervisor.kill(name) } catch { throw BrokerError(.invalidRequest, "\(error)") }
        }
        logger.info("topology killed", metadata: ["topology": "\(name)"])
        perform(actions)
        if let store { Task { await store.delete(name) } }
    }

    public func setActive(_ name: String, _ active: Bool) throws(BrokerError) {
        let actions = try state.withLock { state throws(BrokerError) -> [ContainerSupervisor.Action] in
            do { return try state.supervisor.setActive(name, active) } catch { throw BrokerError(.invalidRequest, "\(error)") }
        }
        perform(actions)
        Task { await remember(name) }
    }

    public func update(_ name: String, parallelism: [String: Int]) async throws(BrokerError) -> TopologyStatusJSON {
        guard let registration = state.withLock({ $0.registrations[name] }) else {
            throw BrokerError(.invalidRequest, "no topology named '\(name)'")
        }
        var merged = registration.parallelism
        merged.merge(parallelism) { _, new in new }
        let description = try await describe(executable: registration.executable, arguments: registration.arguments, name: name, parallelism: merged)
        let actions = try state.withLock { state throws(BrokerError) -> [ContainerSupervisor.Action] in
            do {
                let actions = try state.supervisor.update(description, now: Self.nowMilliseconds())
                state.registrations[name]?.parallelism = merged
                state.registrations[name]?.ports = (0..<description.containers).map { _ in Self.freeLoopbackPort() }
                return actions
            } catch {
                throw BrokerError(.invalidRequest, "\(error)")
            }
        }
        perform(actions)
        await remember(name)
        return try status(name)
    }

    /// Per-task metrics of every running topology in Prometheus text format (the
    /// containers' latest reports).
    public func prometheusText() -> String {
        let topologies = state.withLock { state in state.supervisor.topologies.values.map { ($0.name, $0.containers.map(\.index)) } }
        var samples: [String: [String]] = [:]
        let help: [(String, String, String)] = [
            ("aqueduct_topology_emitted_total", "counter", "Tuples emitted by a task."),
            ("aqueduct_topology_executed_total", "counter", "Tuples executed by a bolt task."),
            ("aqueduct_topology_acked_total", "counter", "Spouts: tuple trees completed; bolts: inputs acked."),
            ("aqueduct_topology_failed_total", "counter", "Spouts: tuple trees failed or timed out; bolts: inputs failed."),
            ("aqueduct_topology_execute_latency_microseconds", "gauge", "Mean execute latency of a bolt task."),
            ("aqueduct_topology_complete_latency_p99_microseconds", "gauge", "Complete latency p99 of a spout task."),
            ("aqueduct_topology_queue_depth", "gauge", "Tuples waiting in a task's input queue."),
            ("aqueduct_topology_backpressure_milliseconds_total", "counter", "Time a task's queue held the spouts back."),
        ]
        for (name, containers) in topologies.sorted(by: { $0.0 < $1.0 }) {
            for container in containers {
                guard let data = FileManager.default.contents(atPath: metricsPath(name, container)),
                      let metrics = try? JSONDecoder().decode(TopologyMetrics.self, from: data) else { continue }
                for task in metrics.tasks {
                    let labels = "{topology=\"\(name)\",component=\"\(task.component)\",task=\"\(task.task)\",container=\"\(task.container)\"}"
                    samples["aqueduct_topology_emitted_total", default: []].append("aqueduct_topology_emitted_total\(labels) \(task.emitted)")
                    samples["aqueduct_topology_executed_total", default: []].append("aqueduct_topology_executed_total\(labels) \(task.executed)")
                    samples["aqueduct_topology_acked_total", default: []].append("aqueduct_topology_acked_total\(labels) \(task.acked)")
                    samples["aqueduct_topology_failed_total", default: []].append("aqueduct_topology_failed_total\(labels) \(task.failed)")
                    samples["aqueduct_topology_execute_latency_microseconds", default: []].append("aqueduct_topology_execute_latency_microseconds\(labels) \(task.executeLatencyMicros)")
                    samples["aqueduct_topology_complete_latency_p99_microseconds", default: []].append("aqueduct_topology_complete_latency_p99_microseconds\(labels) \(task.completeLatencyP99Micros)")
                    samples["aqueduct_topology_queue_depth", default: []].append("aqueduct_topology_queue_depth\(labels) \(task.queueDepth)")
                    samples["aqueduct_topology_backpressure_milliseconds_total", default: []].append("aqueduct_topology_backpressure_milliseconds_total\(labels) \(task.backpressureMillis)")
                }
            }
        }
        var text = ""
        for (metric, type, description) in help {
            guard let lines = samples[metric] else { continue }
            text += "# HELP \(metric) \(description)\n# TYPE \(metric) \(type)\n" + lines.joined(separator: "\n") + "\n"
        }
        return text
    }

    // MARK: Running

    /// Restarts what is due until cancelled, then stops every container (server shutdown).
    public func run() async {
        while !Task.isCancelled {
            let actions = state.withLock { $0.supervisor.tick(now: Self.nowMilliseconds()) }
            perform(actions)
            try? await Task.sleep(for: .milliseconds(200))
        }
        stopAll()
    }

    public func stopAll() {
        let processes = state.withLock { state in state.registrations.values.flatMap { $0.processes.values } }
        for process in processes where process.isRunning { Glibc.kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(10)
        while processes.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for process in processes where process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    private func perform(_ actions: [ContainerSupervisor.Action]) {
        for action in actions {
            switch action {
            case .start(let name, let container, let generation, let active):
                start(name, container: container, generation: generation, active: active)
            case .signal(let pid, let signal):
                let number: Int32 = switch signal {
                case .terminate: SIGTERM
                case .activate: SIGUSR2
                case .deactivate: SIGUSR1
                }
                Glibc.kill(pid, number)
            case .forget(let name):
                state.withLock { _ = $0.registrations.removeValue(forKey: name) }
                logger.info("topology stopped", metadata: ["topology": "\(name)"])
            }
        }
    }

    private func start(_ name: String, container: Int, generation: Int, active: Bool) {
        guard let (registration, containers) = state.withLock({ state in
            state.registrations[name].flatMap { registration in state.supervisor.topologies[name].map { (registration, $0.description.containers) } }
        }) else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: registration.executable)
        process.arguments = registration.arguments
        var environment = ProcessInfo.processInfo.environment
        environment["AQUEDUCT_HTTP"] = serverURL.withLock { $0 }
        environment["AQUEDUCT_TOPOLOGY_NAME"] = name
        environment["AQUEDUCT_CONTAINER"] = String(container)
        environment["AQUEDUCT_CONTAINERS"] = String(containers)
        environment["AQUEDUCT_STMGR_ADDRESSES"] = registration.ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        environment["AQUEDUCT_METRICS_FILE"] = metricsPath(name, container)
        environment["AQUEDUCT_START_INACTIVE"] = active ? "0" : "1"
        environment["AQUEDUCT_TOKEN"] = containerToken
        // The container stops when this server is gone (SIGKILL leaves it orphaned): in
        // a cluster the topology restarts on another node, and must not run twice.
        environment["AQUEDUCT_SERVER_PID"] = String(getpid())
        if !registration.parallelism.isEmpty {
            environment["AQUEDUCT_PARALLELISM"] = registration.parallelism.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        process.environment = environment
        let logFile = logPath(name, container)
        // Appended to across restarts: the output of a crashed container stays readable.
        if !FileManager.default.fileExists(atPath: logFile) { _ = FileManager.default.createFile(atPath: logFile, contents: nil) }
        if let handle = FileHandle(forWritingAtPath: logFile) {
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
        }
        process.terminationHandler = { [weak self] finished in
            guard let self else { return }
            let actions = self.state.withLock { state in
                state.supervisor.exited(name, container: container, pid: finished.processIdentifier, status: finished.terminationStatus, now: Self.nowMilliseconds())
            }
            if finished.terminationStatus != 0 {
                self.logger.warning("topology container exited", metadata: ["topology": "\(name)", "container": "\(container)", "status": "\(finished.terminationStatus)"])
            }
            self.perform(actions)
        }
        do {
            try process.run()
        } catch {
            logger.error("cannot start topology container", metadata: ["topology": "\(name)", "container": "\(container)", "error": "\(error)"])
            state.withLock { $0.supervisor.startFailed(name, container: container, now: Self.nowMilliseconds()) }
            return
        }
        let actions = state.withLock { state in
            state.registrations[name]?.processes[container] = process
            return state.supervisor.started(name, container: container, generation: generation, pid: process.processIdentifier, now: Self.nowMilliseconds())
        }
        perform(actions)
    }

    private func describe(executable: String, arguments: [String], name: String?, parallelism: [String: Int]) async throws(BrokerError) -> TopologyProgram.Description {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments + ["--describe"]
        var environment = ProcessInfo.processInfo.environment
        if let name { environment["AQUEDUCT_TOPOLOGY_NAME"] = name }
        if !parallelism.isEmpty {
            environment["AQUEDUCT_PARALLELISM"] = parallelism.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        // Both pipes are read while the program runs (a program that prints more than
        // a pipe holds would otherwise block, and the server with it), up to a bound.
        let stdout = BoundedReader(output.fileHandleForReading, bytesMax: Self.describeOutputBytesMax)
        let stderr = BoundedReader(errors.fileHandleForReading, bytesMax: 64 << 10)
        do { try process.run() } catch { throw BrokerError(.invalidRequest, "cannot run \(executable): \(error)") }
        let deadline = Date().addingTimeInterval(Self.describeTimeoutSeconds)
        while process.isRunning && Date() < deadline && !stdout.overflowed { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if stdout.overflowed {
                throw BrokerError(.invalidRequest, "\(executable) --describe printed more than \(Self.describeOutputBytesMax) bytes",
                    hint: "a topology program prints its plan and nothing else with --describe")
            }
            throw BrokerError(.invalidRequest, "\(executable) --describe did not finish in \(Int(Self.describeTimeoutSeconds)) s")
        }
        let described = await stdout.finish()
        let message = String(decoding: await stderr.finish(), as: UTF8.self)
        guard process.terminationStatus == 0, !stdout.overflowed, let description = try? JSONDecoder().decode(TopologyProgram.Description.self, from: described) else {
            throw BrokerError(.invalidRequest, "\(executable) --describe failed (exit \(process.terminationStatus)): \(message.trimmingCharacters(in: .whitespacesAndNewlines))",
                hint: "a topology program calls TopologyProgram.run(topology)")
        }
        return description
    }

    private func logPath(_ name: String, _ container: Int) -> String { "\(runDirectory)/\(name).container-\(container).log" }
    private func metricsPath(_ name: String, _ container: Int) -> String { "\(runDirectory)/\(name).container-\(container).metrics.json" }

    /// A TCP port on 127.0.0.1 free at the time of the call (for stream managers).
    public static func freeLoopbackPort() -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Reads a pipe to its end on a thread of its own, keeping at most `bytesMax` bytes
/// (the rest is read and dropped, so the writer never blocks).
final class BoundedReader: Sendable {
    private let state = Mutex<(data: Data, overflow: Bool, done: Bool)>((Data(), false, false))
    private let finished = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle, bytesMax: Int) {
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                self.state.withLock { state in
                    if state.data.count + chunk.count <= bytesMax {
                        state.data.append(chunk)
                    } else {
                        state.overflow = true
                    }
                }
            }
            self.state.withLock { $0.done = true }
            self.finished.signal()
        }
    }

    var overflowed: Bool { state.withLock { $0.overflow } }

    /// The bytes kept, once the pipe is closed.
    func finish() async -> Data {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { [finished] in
                finished.wait()
                finished.signal()
                continuation.resume()
            }
        }
        return state.withLock { $0.data }
    }
}
