/// What the server remembers of a submitted topology, to start it again after a restart.
public struct TopologyRecord: Codable, Sendable, Equatable {
    /// The registered name (nil: the program's own, learnt from `--describe`).
    public var name: String?
    public var executable: String
    public var arguments: [String]
    public var parallelism: [String: Int]
    public var active: Bool
    /// Cluster mode: the id it is owned under (`cluster/owners/<id>`, shared with logs).
    public var id: UInt64?

    public init(name: String?, executable: String, arguments: [String], parallelism: [String: Int], active: Bool, id: UInt64? = nil) {
        self.id = id
        self.name = name
        self.executable = executable
        self.arguments = arguments
        self.parallelism = parallelism
        self.active = active
    }
}

/// Durable storage of topology records (the server keeps them in its metadata store).
public protocol TopologyRegistryStore: Sendable {
    func save(_ record: TopologyRecord) async
    func delete(_ name: String) async
    func loadAll() async -> [TopologyRecord]
}
