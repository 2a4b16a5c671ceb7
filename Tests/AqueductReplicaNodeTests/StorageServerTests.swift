import AqueductReplicaClient
import AqueductReplicaNode
import AqueductReplication
import AqueductTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The storage protocol over a real loopback socket: requests pipelined and answered
/// by id, long polls answered out of order, hostile frames closing only their own
/// connection, timeouts and closes reported to the caller.
@Suite struct StorageServerTests {
    struct Node {
        var store: ReplicaStore
        var server: StorageServer
        var port: Int

        static func start(_ directory: String = temporaryDirectory(), listener: StorageListenerConfiguration = .init()) async throws -> Node {
            let store = try ReplicaStore(configuration: ReplicaStoreConfiguration(directory: directory))
            let server = StorageServer(store: store, configuration: listener)
            let address = try await server.start()
            return Node(store: store, server: server, port: address.port!)
        }

        func stop() async {
            await server.stop()
            await store.close()
        }
    }

    func entry(_ segment: UInt64, _ id: Int64, lac: Int64) -> StorageProtocol.Entry {
        StorageProtocol.Entry(segment: segment, entry: id, lastAddConfirmed: lac, payload: ByteBuffer(string: "entry \(segment)/\(id)"))
    }

    @Test func addReadFenceAndLongPollOverTheWire() async throws {
        let node = try await Node.start()
        let connection = try await StorageConnection.connect(host: "127.0.0.1", port: node.port)
        // Pipelined adds: all answered ok.
        try await withThrowingTaskGroup(of: StorageProtocol.Answer.self) { group in
            for id in 0..<50 as Range<Int64> {
                group.addTask { try await connection.request(.add(entry(1, id, lac: id - 1), isRecovery: false)) }
            }
            for try await answer in group { #expect(answer == .added(.ok)) }
        }
        #expect(try await connection.request(.read(segment: 1, entry: 17, fence: false)) == .read(.ok, entry(1, 17, lac: 16)))
        #expect(try await connection.request(.read(segment: 1, entry: 50, fence: false)) == .read(.noSuchEntry, nil))
        // A long poll parked, then answered by an add on another connection.
        let reader = try await StorageConnection.connect(host: "127.0.0.1", port: node.port)
        async let poll = reader.request(.readLastAddConfirmed(segment: 1, fence: false, after: 48, waitMilliseconds: 60_000))
        try await waitUntil { node.store.waitingPolls == 1 }
        #expect(try await connection.request(.advertise(segment: 1, lastAddConfirmed: 49)) == .advertised(.ok))
        #expect(try await poll == .lastAddConfirmed(.ok, lastAddConfirmed: 49, lastEntry: 49))
        // Fence: the deposed writer's next add is refused, a recovery add is taken.
        #expect(try await reader.request(.readLastAddConfirmed(segment: 1, fence: true, after: nil, waitMilliseconds: 0))
            == .lastAddConfirmed(.ok, lastAddConfirmed: 49, lastEntry: 49))
        #expect(try await connection.request(.add(entry(1, 50, lac: 49), isRecovery: false)) == .added(.fenced))
        #expect(try await reader.request(.add(entry(1, 50, lac: 49), isRecovery: true)) == .added(.ok))
        await connection.close()
        await reader.close()
        await node.stop()
    }

    @Test func aBadFrameClosesOnlyItsConnection() async throws {
        var listener = StorageListenerConfiguration()
        listener.frameBytesMax = 1_024
        let node = try await Node.start(listener: listener)
        let good = try await StorageConnection.connect(host: "127.0.0.1", port: node.port)
        #expect(try await good.request(.add(entry(2, 0, lac: -1), isRecovery: false)) == .added(.ok))
        // Too long for the limit, a version from the future, shorter than its header.
        for garbage in [[UInt8](repeating: 0xFF, count: 16), [0, 0, 0, 10, 9, 1, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 3, 1, 1, 0]] {
            let socket = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: node.port).get()
            try await socket.writeAndFlush(ByteBuffer(bytes: garbage))
            try await socket.closeFuture.get()  // the node closes it
        }
        #expect(try await good.request(.read(segment: 2, entry: 0, fence: false)) == .read(.ok, entry(2, 0, lac: -1)))
        await good.close()
        await node.stop()
    }

    @Test func aNodeThatGoesAwayFailsEverythingPendingAndTimeoutsAreReported() async throws {
        let node = try await Node.start()
        let connection = try await StorageConnection.connect(host: "127.0.0.1", port: node.port)
        #expect(try await connection.request(.add(entry(3, 0, lac: -1), isRecovery: false)) == .added(.ok))
        // A long poll that the node never answers within the client's timeout.
        await #expect(throws: StorageClientError.timedOut(milliseconds: 50)) {
            try await connection.request(.readLastAddConfirmed(segment: 3, fence: false, after: 0, waitMilliseconds: 60_000), timeoutMilliseconds: 50)
        }
        async let parked = connection.request(.readLastAddConfirmed(segment: 3, fence: false, after: 0, waitMilliseconds: 60_000))
        try await waitUntil { node.store.waitingPolls == 2 }
        await node.stop()
        do {
            let answer = try await parked
            #expect(answer == .lastAddConfirmed(.unavailable, lastAddConfirmed: -1, lastEntry: -1), "closing answers parked polls")
        } catch {
            #expect(error is StorageClientError)
        }
        await #expect(throws: StorageClientError.self) {
            try await connection.request(.read(segment: 3, entry: 0, fence: false), timeoutMilliseconds: 10_000)
        }
        await connection.close()
    }
}
