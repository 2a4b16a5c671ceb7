import AqueductReplication
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// How the writer, recovery and readers reach storage nodes by id. The pool below is the
/// real one (TCP); a simulation puts its own network behind the same call.
public protocol StorageTransport: Sendable {
    /// Sends `request` to `node`; `callback` runs once, on any thread, possibly before
    /// this returns (an unknown node, a connection known to be down).
    func send(_ request: StorageProtocol.Request, to node: NodeID, timeoutMilliseconds: Int64, callback: @escaping StorageConnection.Callback)
}

/// Where a storage node listens.
public struct StorageAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// One connection per storage node, opened on first use and opened again after it
/// closes; requests sent while it opens wait for it (failing with it). Addresses come
/// from membership (etcd in cluster mode) and may change.
public final class StorageNodePool: StorageTransport {
    private enum Link {
        case connecting([(StorageProtocol.Request, Int64, StorageConnection.Callback)])
        case open(StorageConnection)
    }

    private struct State {
        var addresses: [NodeID: StorageAddress]
        var links: [NodeID: Link] = [:]
        var closed = false
    }

    public let connectTimeoutMilliseconds: Int64
    /// Requests that may wait for one connection to open; more fail at once.
    public let queuedWhileConnectingMax: Int
    private let state: Mutex<State>
    private let group: any EventLoopGroup
    private let logger: Logger

    public init(
        addresses: [NodeID: StorageAddress] = [:], connectTimeoutMilliseconds: Int64 = 2_000, queuedWhileConnectingMax: Int = 65_536,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "aqueduct.replica.client")
    ) {
        state = Mutex(State(addresses: addresses))
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.queuedWhileConnectingMax = queuedWhileConnectingMax
        self.group = group
        self.logger = logger
    }

    /// Sets or changes where `node` listens; an open connection to an old address closes.
    public func setAddress(_ address: StorageAddress?, of node: NodeID) {
        let stale = state.withLock { state -> StorageConnection? in
            guard state.addresses[node] != address else { return nil }
            state.addresses[node] = address
            if case .open(let connection) = state.links[node] {
                state.links[node] = nil
                return connection
            }
            return nil
        }
        if let stale { Task { await stale.close() } }
    }

    public func send(_ request: StorageProtocol.Request, to node: NodeID, timeoutMilliseconds: Int64, callback: @escaping StorageConnection.Callback) {
        enum Next {
            case send(StorageConnection)
            case connect(StorageAddress)
            case queued
            case fail(String)
        }
        let next = state.withLock { state -> Next in
            if state.closed { return .fail("the pool is closed") }
            switch state.links[node] {
            case .open(let connection) where connection.isActive:
                return .send(connection)
            case .connecting(var queued):
                guard queued.count < queuedWhileConnectingMax else { return .fail("\(queued.count) requests already wait for node \(node)") }
                queued.append((request, timeoutMilliseconds, callback))
                state.links[node] = .connecting(queued)
                return .queued
            case .open, nil:
                guard let address = state.addresses[node] else { return .fail("no address known for node \(node)") }
                state.links[node] = .connecting([(request, timeoutMilliseconds, callback)])
                return .connect(address)
            }
        }
        switch next {
        case .send(let connection):
            connection.send(request, timeoutMilliseconds: timeoutMilliseconds, callback: callback)
        case .queued:
            break
        case .fail(let why):
            callback(.failure(.connectionClosed(why)))
        case .connect(let address):
            let group = group
            let timeout = connectTimeoutMilliseconds
            Task {
                let result: Result<StorageConnection, any Error>
                do {
                    result = .success(try await StorageConnection.connect(host: address.host, port: address.port, timeoutMilliseconds: timeout, group: group))
                } catch {
                    result = .failure(error)
                }
                self.connected(node, result)
            }
        }
    }

    private func connected(_ node: NodeID, _ result: Result<StorageConnection, any Error>) {
        let (queued, extra) = state.withLock { state -> ([(StorageProtocol.Request, Int64, StorageConnection.Callback)], StorageConnection?) in
            guard case .connecting(let queued) = state.links[node] else { return ([], try? result.get()) }
            if case .success(let connection) = result, !state.closed {
                state.links[node] = .open(connection)
                return (queued, nil)
            }
            state.links[node] = nil
            return (queued, try? result.get())
        }
        if let extra { Task { await extra.close() } }
        switch result {
        case .success(let connection) where extra == nil:
            for (request, timeout, callback) in queued { connection.send(request, timeoutMilliseconds: timeout, callback: callback) }
        case .success:
            for (_, _, callback) in queued { callback(.failure(.connectionClosed("the pool is closed"))) }
        case .failure(let error):
            logger.debug("cannot connect to storage node", metadata: ["node": "\(node)", "error": "\(error)"])
            for (_, _, callback) in queued { callback(.failure(.connectionClosed("cannot connect to node \(node): \(error)"))) }
        }
    }

    public func close() async {
        let open = state.withLock { state -> [StorageConnection] in
            state.closed = true
            defer { state.links = [:] }
            return state.links.values.compactMap { if case .open(let connection) = $0 { connection } else { nil } }
        }
        for connection in open { await connection.close() }
    }
}
