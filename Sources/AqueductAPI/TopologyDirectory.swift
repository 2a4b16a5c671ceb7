/// What the HTTP API asks of the topology master (in the server), so that this module
/// does not depend on the processing engine.
public protocol TopologyDirectory: Sendable {
    func submit(_ request: TopologySubmitRequest) async throws(BrokerError) -> TopologyStatusJSON
    func list() -> [TopologyStatusJSON]
    func status(_ name: String) throws(BrokerError) -> TopologyStatusJSON
    func kill(_ name: String) throws(BrokerError)
    func setActive(_ name: String, _ active: Bool) throws(BrokerError)
    func update(_ name: String, parallelism: [String: Int]) async throws(BrokerError) -> TopologyStatusJSON
}
