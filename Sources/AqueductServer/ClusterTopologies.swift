import AqueductAPI
import AqueductCommon
import AqueductEtcd
import AqueductHTTP
import AqueductMetadata
import AqueductReplication
import AqueductTopologyService
import Foundation
import Logging
import Synchronization

/// Topology records under `/topologies/<name>` in a metadata store: the embedded one on
/// a single node, etcd in a cluster (where every node reads them).
struct MetadataTopologyRegistry: TopologyRegistryStore {
    let metadata: any MetadataStore
    let logger: Logger
    static let prefix = "/topologies/"

    func save(_ record: TopologyRecord) async {
        guard let name = record.name else { return }
        do { _ = try await metadata.putJSON(Self.prefix + name, record) } catch {
            logger.error("cannot store topology record", metadata: ["topology": "\(name)", "error": "\(error)"])
        }
    }

    func delete(_ name: String) async {
        do { _ = try await metadata.delete(Self.prefix + name) } catch {
            logger.error("cannot delete topology record", metadata: ["topology": "\(name)", "error": "\(error)"])
        }
    }

    func loadAll() async -> [TopologyRecord] {
        do {
            return try await metadata.list(prefix: Self.prefix).compactMap { entry in
                try? JSONDecoder().decode(TopologyRecord.self, from: Data(entry.value.value))
            }
        } catch {
            logger.error("cannot read topology records", metadata: ["error": "\(error)"])
            return []
        }
    }
}

/// Cluster mode's topologies. A submitted topology is a record in etcd with an id from
/// the log id allocator, and is owned like a log (`OwnershipAgent`'s workloads, spread
/// over the nodes on their own): its owner runs every container of it with its local
/// `TopologyMaster`; when the owner dies or drains, its lease takes the claim with it and
/// another node starts the topology, whose spouts go on from their committed offsets
/// (at least once, as after any container restart). A topology's containers stay on one
/// node: they exchange tuples over loopback.
///
/// Requests about a topology reach its node (`ClusterForwarding`); this type answers
/// those that do not (submit, list, and topologies no node runs now).
final class ClusterTopologies: TopologyDirectory {
    let master: TopologyMaster
    let programs: ProgramCopies
    let etcd: EtcdMetadataStore
    let nodeID: NodeID
    let allocateID: @Sendable () async throws -> UInt64
    let owners: @Sendable () -> [UInt64: NodeID]
    let poke: @Sendable () -> Void
    let logger: Logger
    /// Every topology record, as of the last read (each ownership pass reads them).
    let records = Mutex<[String: TopologyRecord]>([:])
    /// How long a submission waits for a node to take the new topology.
    static let scheduleWaitSeconds = 30.0

    init(
        master: TopologyMaster, programs: ProgramCopies, etcd: EtcdMetadataStore, nodeID: NodeID,
        allocateID: @escaping @Sendable () async throws -> UInt64, owners: @escaping @Sendable () -> [UInt64: NodeID],
        poke: @escaping @Sendable () -> Void, logger: Logger
    ) {
        self.master = master
        self.programs = programs
        self.etcd = etcd
        self.nodeID = nodeID
        self.allocateID = allocateID
        self.owners = owners
        self.poke = poke
        self.logger = logger
    }

    var programsDirectory: String { master.programsDirectory }
    var programBytesMax: Int { master.programBytesMax }

    // MARK: Ownership

    /// The ids of every topology (read at each ownership pass).
    func ids() async throws -> [UInt64] {
        var fresh: [String: TopologyRecord] = [:]
        for entry in try await etcd.list(prefix: MetadataTopologyRegistry.prefix) {
            guard let record = try? JSONDecoder().decode(TopologyRecord.self, from: Data(entry.value.value)),
                  let name = record.name, record.id != nil else { continue }
            fresh[name] = record
        }
        records.withLock { $0 = fresh }
        return fresh.values.compactMap(\.id)
    }

    func isTopology(_ id: UInt64) -> Bool { record(id: id) != nil || master.name(ofID: id) != nil }

    private func record(id: UInt64) -> TopologyRecord? {
        records.withLock { $0.values.first { $0.id == id } }
    }

    /// The node running `name` now, as of the last ownership pass.
    func owner(of name: String) -> NodeID? {
        if master.runsHere(name) { return nodeID }
        guard let id = records.withLock({ $0[name]?.id }) else { return nil }
        return owners()[id]
    }

    /// This node owns topology `id` now: copy its program if needed, start it.
    func acquire(_ id: UInt64) async -> Bool {
        guard let record = record(id: id) else { return false }
        do {
            if !record.executable.contains("/") { try await programs.ensure(record.executable) }
            _ = try await master.start(record)
            return true
        } catch {
            logger.warning("cannot start an owned topology here; giving it back", metadata: [
                "topology": "\(record.name ?? "?")", "error": "\(error)",
            ])
            return false
        }
    }

    /// This node no longer owns topology `id`: stop its containers (the record stays).
    func release(_ id: UInt64) {
        if let name = master.name(ofID: id) { master.stop(name) }
    }

    // MARK: TopologyDirectory

    func submit(_ request: TopologySubmitRequest) async throws(BrokerError) -> TopologyStatusJSON {
        // An uploaded program may not have reached this node yet.
        if !request.executable.contains("/") {
            do {
                try await programs.ensure(request.executable)
            } catch {
                throw BrokerError(.unavailable, "cannot copy the program \(request.executable) to this node: \(error)",
                    hint: "retry, or upload it again with `aqueduct topology upload`")
            }
        }
        let name = try await master.validate(request)
        let key = MetadataTopologyRegistry.prefix + name
        let exists = BrokerError(.invalidRequest, "a topology named \(name) exists", hint: "kill it first: aqueduct topology kill \(name)")
        let record: TopologyRecord
        do {
            if try await etcd.get(key) != nil { throw exists }
            record = TopologyRecord(
                name: name, executable: request.executable, arguments: request.arguments, parallelism: [:], active: true, id: try await allocateID())
            try await etcd.putJSON(key, record, expect: .absent)
        } catch let error as BrokerError {
            throw error
        } catch MetadataError.conflict {
            throw exists
        } catch {
            throw BrokerError(.unavailable, "cannot record the topology in etcd: \(error)", hint: "check that etcd is running, then retry")
        }
        records.withLock { $0[name] = record }
        logger.info("topology submitted to the cluster", metadata: ["topology": "\(name)", "id": "\(record.id ?? 0)"])
        poke()
        // Answer once a node took it (its containers start there), or say it waits.
        let deadline = Date().addingTimeInterval(Self.scheduleWaitSeconds)
        while Date() < deadline {
            if master.runsHere(name) { return try master.status(name) }
            if let owner = record.id.flatMap({ owners()[$0] }), owner != nodeID { return Self.scheduled(record, node: owner) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return Self.scheduled(record, node: nil)
    }

    /// What this node runs, and the topologies no node runs now (scheduled).
    func list() -> [TopologyStatusJSON] {
        var listed = master.list()
        let here = Set(listed.map(\.name))
        let owners = owners()
        for record in records.withLock({ Array($0.values) }) where !here.contains(record.name ?? "") {
            listed.append(Self.scheduled(record, node: record.id.flatMap { owners[$0] }))
        }
        return listed.sorted { $0.name < $1.name }
    }

    func status(_ name: String) throws(BrokerError) -> TopologyStatusJSON {
        if !master.runsHere(name), let record = records.withLock({ $0[name] }) {
            return Self.scheduled(record, node: owner(of: name))
        }
        return try master.status(name)
    }

    func kill(_ name: String) throws(BrokerError) {
        if master.runsHere(name) {
            records.withLock { _ = $0.removeValue(forKey: name) }
            return try master.kill(name)  // its store deletes the record in etcd
        }
        guard records.withLock({ $0.removeValue(forKey: name) }) != nil else { return try master.kill(name) }
        // No node runs it now: forget the record; a node about to start it lets it go.
        let etcd = etcd
        let poke = poke
        Task {
            _ = try? await etcd.delete(MetadataTopologyRegistry.prefix + name)
            poke()
        }
        logger.info("topology killed (it was not running)", metadata: ["topology": "\(name)"])
    }

    func setActive(_ name: String, _ active: Bool) throws(BrokerError) {
        if master.runsHere(name) { return try master.setActive(name, active) }
        guard var record = records.withLock({ $0[name] }) else { return try master.setActive(name, active) }
        record.active = active
        records.withLock { $0[name] = record }
        let etcd = etcd
        Task { _ = try? await etcd.putJSON(MetadataTopologyRegistry.prefix + name, record) }
    }

    func update(_ name: String, parallelism: [String: Int]) async throws(BrokerError) -> TopologyStatusJSON {
        if !master.runsHere(name), records.withLock({ $0[name] }) != nil {
            throw BrokerError(.unavailable, "topology \(name) is not running on a node now (it is being scheduled or moved)",
                hint: "retry when `aqueduct topology status \(name)` shows it running")
        }
        return try await master.update(name, parallelism: parallelism)
    }

    func installProgram(name: String, uploadedFile: String) async throws(BrokerError) -> ProgramJSON {
        let installed = try master.installProgram(name: name, uploadedFile: uploadedFile)
        try await programs.publish(name)
        return installed
    }

    func listPrograms() -> [ProgramJSON] { master.listPrograms() }

    static func scheduled(_ record: TopologyRecord, node: NodeID?) -> TopologyStatusJSON {
        TopologyStatusJSON(
            name: record.name ?? "", state: "scheduled", executable: record.executable, arguments: record.arguments, generation: 0,
            containers: [], components: [], node: node)
    }
}

/// Uploaded topology programs on every node: an upload is recorded in etcd
/// (`/programs/<name>`: size, CRC-32C, the node that has it); every node copies what it
/// lacks from a node that has it (`GET /v1/programs/{name}`), checks size and checksum
/// and installs it. A topology's new owner copies its program before starting it, so a
/// program outlives the node it was uploaded to once any other node has a copy.
final class ProgramCopies: Sendable {
    struct Record: Codable, Equatable {
        var bytes: Int
        var crc32c: UInt32
        var node: NodeID
    }

    static let prefix = "/programs/"
    let directory: String
    let bytesMax: Int
    let etcd: EtcdMetadataStore
    let nodeID: NodeID
    /// Presented to other nodes (cluster mode with tokens: the cluster's own token).
    let token: String?
    /// The HTTP listeners of live nodes.
    let addresses: @Sendable () -> [NodeID: String]
    /// Installs a checked copy (a file in `directory`) as the program `name`.
    let install: @Sendable (_ name: String, _ file: String) throws -> Void
    let logger: Logger
    /// Checksums of local programs, kept while size and modification time match.
    private let checked = Mutex<[String: (bytes: Int, modified: Date, crc32c: UInt32)]>([:])
    /// Bytes read per step when checksumming a program.
    static let checksumChunkBytes = 1 << 20

    init(
        directory: String, bytesMax: Int, etcd: EtcdMetadataStore, nodeID: NodeID, token: String?,
        addresses: @escaping @Sendable () -> [NodeID: String], install: @escaping @Sendable (String, String) throws -> Void, logger: Logger
    ) {
        self.directory = directory
        self.bytesMax = bytesMax
        self.etcd = etcd
        self.nodeID = nodeID
        self.token = token
        self.addresses = addresses
        self.install = install
        self.logger = logger
    }

    /// Records a program just installed on this node, so the others copy it.
    func publish(_ name: String) async throws(BrokerError) {
        guard let local = localChecksum(name) else {
            throw BrokerError(.storageError, "cannot read the program \(name) just installed in \(directory)")
        }
        do {
            try await etcd.putJSON(Self.prefix + name, Record(bytes: local.bytes, crc32c: local.crc32c, node: nodeID))
        } catch {
            throw BrokerError(.unavailable, "the program \(name) is installed on this node but not recorded in etcd, so other nodes cannot run it: \(error)",
                hint: "check that etcd is running, then upload it again")
        }
    }

    /// Makes this node's copy of `name` the one the cluster recorded, copying it from
    /// another node if it differs or is missing. A program etcd does not name (placed by
    /// an operator) is used as it is.
    func ensure(_ name: String) async throws {
        guard let stored = try await etcd.getJSON(Record.self, Self.prefix + name)?.value else { return }
        if let local = localChecksum(name), local.bytes == stored.bytes, local.crc32c == stored.crc32c { return }
        let live = addresses()
        // The node that recorded it first, then every other live node.
        var candidates = live.filter { $0.key != nodeID && $0.key != stored.node }.sorted { $0.key < $1.key }.map(\.value)
        if stored.node != nodeID, let first = live[stored.node] { candidates.insert(first, at: 0) }
        var lastError: any Error = BrokerError(.unavailable, "no live node has the program \(name)")
        for address in candidates {
            do {
                let path = try await ProgramTransfer.download(name: name, from: address, token: token, into: directory, bytesMax: bytesMax)
                guard let copied = Self.checksum(path: path), copied.bytes == stored.bytes, copied.crc32c == stored.crc32c else {
                    try? FileManager.default.removeItem(atPath: path)
                    lastError = BrokerError(.corruptData, "the copy of \(name) from \(address) differs from the one recorded")
                    continue
                }
                try install(name, path)
                logger.info("topology program copied", metadata: ["program": "\(name)", "from": "\(address)", "bytes": "\(stored.bytes)"])
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Copies every recorded program this node lacks, now and after each change, until
    /// cancelled.
    func run() async {
        await etcd.follow(prefix: Self.prefix, what: "programs", logger: logger) { await self.copyMissing() }
    }

    private func copyMissing() async {
        guard let stored = try? await etcd.list(prefix: Self.prefix) else { return }
        for entry in stored {
            let name = String(entry.key.dropFirst(Self.prefix.count))
            do {
                try await ensure(name)
            } catch {
                logger.warning("cannot copy a topology program yet; a topology's new node copies it when it starts it", metadata: [
                    "program": "\(name)", "error": "\(error)",
                ])
            }
        }
    }

    private func localChecksum(_ name: String) -> (bytes: Int, crc32c: UInt32)? {
        let path = directory + "/" + name
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let bytes = attributes[.size] as? Int, let modified = attributes[.modificationDate] as? Date else { return nil }
        if let known = checked.withLock({ $0[name] }), known.bytes == bytes, known.modified == modified { return (bytes, known.crc32c) }
        guard let computed = Self.checksum(path: path) else { return nil }
        checked.withLock { $0[name] = (computed.bytes, modified, computed.crc32c) }
        return computed
    }

    static func checksum(path: String) -> (bytes: Int, crc32c: UInt32)? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var crc: UInt32 = 0
        var bytes = 0
        while let chunk = try? handle.read(upToCount: checksumChunkBytes), !chunk.isEmpty {
            crc = chunk.withUnsafeBytes { CRC32C.extend(crc, $0) }
            bytes += chunk.count
        }
        return (bytes, crc)
    }
}
