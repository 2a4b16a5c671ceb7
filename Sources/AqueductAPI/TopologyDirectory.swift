/// What the HTTP API asks of the topology master (in the server), so that this module
/// does not depend on the processing engine.
public protocol TopologyDirectory: Sendable {
    func submit(_ request: TopologySubmitRequest) async throws(BrokerError) -> TopologyStatusJSON
    func list() -> [TopologyStatusJSON]
    func status(_ name: String) throws(BrokerError) -> TopologyStatusJSON
    func kill(_ name: String) throws(BrokerError)
    func setActive(_ name: String, _ active: Bool) throws(BrokerError)
    func update(_ name: String, parallelism: [String: Int]) async throws(BrokerError) -> TopologyStatusJSON

    /// The only directory topology programs run from; uploads are written here first.
    var programsDirectory: String { get }
    /// Most bytes one uploaded program may take.
    var programBytesMax: Int { get }
    /// Makes a file uploaded into `programsDirectory` the program `name` (executable,
    /// replacing an earlier one of that name).
    func installProgram(name: String, uploadedFile: String) async throws(BrokerError) -> ProgramJSON
    func listPrograms() -> [ProgramJSON]
}

/// Names of topologies and programs: they become file names on the server, so 1 to 100
/// characters from a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.'.
public enum TopologyNames {
    public static let bytesMax = 100

    public static func validate(_ name: String, what: String) throws(BrokerError) {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2e || byte == 0x5f || byte == 0x2d
        }
        guard !name.isEmpty, name.utf8.count <= bytesMax, allowed, !name.hasPrefix(".") else {
            throw BrokerError(.invalidRequest, "'\(name.prefix(bytesMax))' is not a valid \(what) name",
                hint: "use 1 to \(bytesMax) characters from a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.'")
        }
    }
}

/// `GET /v1/programs`, and the answer of `PUT /v1/programs/{name}`.
public struct ProgramJSON: Codable, Sendable, Equatable {
    public var name: String
    public var bytes: Int
    public var modifiedAtMilliseconds: Int64

    public init(name: String, bytes: Int, modifiedAtMilliseconds: Int64) {
        self.name = name
        self.bytes = bytes
        self.modifiedAtMilliseconds = modifiedAtMilliseconds
    }
}

public struct ProgramList: Codable, Sendable {
    public var programs: [ProgramJSON]
    public init(programs: [ProgramJSON]) { self.programs = programs }
}
