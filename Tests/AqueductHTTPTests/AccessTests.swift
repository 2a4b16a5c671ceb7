import AqueductAPI
import AqueductCommon
import AqueductHTTP
import AqueductServer
import AqueductTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// Tokens and roles on the HTTP API, and the server's refusal to listen beyond loopback
/// without them.
@Suite struct AccessTests {
    static let admin = "admin-token-0123456789abcdef"
    static let writer = "write-token-0123456789abcdef"
    static let reader = "read-token-0123456789abcdef0"

    func withGuardedAPI(_ name: String = #function, _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        var configuration = ServerConfiguration()
        configuration.dataDirectory = temporaryDirectory(name)
        let components = try await Server.open(configuration, logger: Logger(label: "test"))
        let access = try HTTPAccess.parse("admin:\(Self.admin), write:\(Self.writer),read:\(Self.reader)")
        let router = HTTPAPI.router(broker: components.broker, access: access, metricsText: { "" })
        try await Application(router: router).test(.router) { client in try await body(client) }
        await components.close()
    }

    func headers(_ token: String?) -> HTTPFields {
        var fields = HTTPFields()
        if let token { fields[.authorization] = "Bearer \(token)" }
        return fields
    }

    @Test func eachRoleMayDoWhatItCoversAndNothingMore() async throws {
        try await withGuardedAPI { client in
            // Health is public; everything else needs a token.
            try await client.execute(uri: "/health", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/topics", method: .get) { response throws in
                #expect(response.status == .unauthorized)
                #expect(try errorCode(response) == "UNAUTHORIZED")
            }
            try await client.execute(uri: "/v1/topics", method: .get, headers: headers("wrong-token-0123456789abcdef")) { response throws in
                #expect(response.status == .unauthorized)
            }
            let create = jsonBody(#"{"name":"t","partitions":1}"#)
            try await client.execute(uri: "/v1/topics", method: .post, headers: headers(Self.reader), body: create) { response throws in
                #expect(response.status == .forbidden)
                #expect(try errorCode(response) == "FORBIDDEN")
            }
            try await client.execute(uri: "/v1/topics", method: .post, headers: headers(Self.writer), body: create) { #expect($0.status == .created) }
            try await client.execute(uri: "/v1/topics/t/records", method: .post, headers: headers(Self.writer), body: jsonBody(#"{"value":"v"}"#)) {
                #expect($0.status == .ok)
            }
            try await client.execute(uri: "/v1/topics/t/partitions/0/records", method: .get, headers: headers(Self.reader)) { #expect($0.status == .ok) }
            // Deleting topics and running programs are the admin's.
            try await client.execute(uri: "/v1/topics/t", method: .delete, headers: headers(Self.writer)) { #expect($0.status == .forbidden) }
            try await client.execute(uri: "/v1/topologies", method: .post, headers: headers(Self.writer), body: jsonBody(#"{"executable":"x","arguments":[]}"#)) {
                #expect($0.status == .forbidden)
            }
            try await client.execute(uri: "/v1/programs/x", method: .put, headers: headers(Self.writer), body: ByteBuffer(string: "#!/bin/sh")) {
                #expect($0.status == .forbidden)
            }
            // A program's bytes are the admin's too (cluster nodes copy programs with one).
            try await client.execute(uri: "/v1/programs/x", method: .get, headers: headers(Self.reader)) { #expect($0.status == .forbidden) }
            try await client.execute(uri: "/v1/programs", method: .get, headers: headers(Self.reader)) { #expect($0.status != .forbidden) }
            try await client.execute(uri: "/v1/topics/t", method: .delete, headers: headers(Self.admin)) { #expect($0.status == .noContent) }
        }
    }

    @Test func tokensAreParsedAndCheckedWhole() throws {
        let access = try HTTPAccess.parse("read:\(Self.reader)")
        #expect(access.role(authorization: "Bearer \(Self.reader)") == .read)
        #expect(access.role(authorization: "Bearer \(Self.reader.dropLast())") == nil)
        #expect(access.role(authorization: "Bearer \(Self.reader)x") == nil)
        #expect(access.role(authorization: Self.reader) == nil)
        #expect(throws: BrokerError.self) { try HTTPAccess.parse("root:\(Self.reader)") }
        #expect(throws: BrokerError.self) { try HTTPAccess.parse("admin:short") }
    }

    @Test func aServerReachableFromOtherMachinesNeedsTokens() async throws {
        await #expect(throws: ConfigurationError.self) {
            _ = try await ServerConfiguration.load(overrides: ["http.listen": "0.0.0.0:8092"], environment: [:], file: nil)
        }
        let guarded = try await ServerConfiguration.load(
            overrides: ["http.listen": "0.0.0.0:8092"], environment: ["AQUEDUCT_HTTP_TOKENS": "admin:\(Self.admin)"], file: nil)
        #expect(!guarded.httpAccess.isOpen)
        let local = try await ServerConfiguration.load(overrides: [:], environment: [:], file: nil)
        #expect(local.httpAccess.isOpen)
    }
}

@Suite struct HTTPConnectionLimitTests {
    func connected(_ limiter: ConnectionLimiter, from host: String) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: host, port: 40_000)).wait()
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionLimitHandler(limiter: limiter))
        return channel
    }

    @Test func connectionsPastThePerAddressLimitAreClosed() throws {
        let limiter = ConnectionLimiter(total: 10, perAddress: 2)
        let first = try connected(limiter, from: "10.0.0.1")
        let second = try connected(limiter, from: "10.0.0.1")
        let third = try connected(limiter, from: "10.0.0.1")
        let other = try connected(limiter, from: "10.0.0.2")
        #expect(first.isActive && second.isActive && other.isActive)
        #expect(!third.isActive)
        #expect(limiter.open == 3)
        // A closed connection makes room for the next one from that address.
        _ = try first.finish(acceptAlreadyClosed: true)
        #expect(limiter.open == 2)
        let fourth = try connected(limiter, from: "10.0.0.1")
        #expect(fourth.isActive)
        for channel in [second, third, other, fourth] { _ = try? channel.finish(acceptAlreadyClosed: true) }
        #expect(limiter.open == 0)
    }
}
