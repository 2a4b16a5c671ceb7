import AqueductAPI
import AqueductCommon
import Foundation
import HTTPTypes
import AsyncHTTPClient
import Hummingbird
import NIOCore
import NIOHTTP1

/// Cluster mode: any node answers any request. A request about a partition another
/// node writes (its records, offsets, or records sent to it), a group another node
/// coordinates or a topology another node runs is sent on to that node and its answer returned as it is. The
/// forwarded request carries a header, so it is never forwarded twice (a partition
/// that moved meanwhile gets the owner's error, and the client retries).
struct ClusterForwarding: RouterMiddleware {
    typealias Context = BasicRequestContext
    let cluster: any ClusterDirectory
    let forwarder: Forwarder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !Forwarder.wasForwarded(request), let address = target(of: request.uri.path) else {
            return try await next(request, context)
        }
        return try await forwarder.forward(request, to: address)
    }

    /// The node serving a path, when it is another one.
    func target(of path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        // /v1/topics/{topic}/partitions/{partition}/...
        if parts.count >= 5, parts[0] == "v1", parts[1] == "topics", parts[3] == "partitions", let partition = Int(parts[4]) {
            return cluster.httpAddress(topic: decoded(parts[2]), partition: partition)
        }
        // /v1/groups/{group}[/...]
        if parts.count >= 3, parts[0] == "v1", parts[1] == "groups" {
            return cluster.httpAddress(group: decoded(parts[2]))
        }
        // /v1/topologies/{name}[/...]
        if parts.count >= 3, parts[0] == "v1", parts[1] == "topologies" {
            return cluster.httpAddress(topology: decoded(parts[2]))
        }
        return nil
    }

    private func decoded(_ component: String) -> String { component.removingPercentEncoding ?? component }
}

/// Sends a request on to another node's HTTP listener.
struct Forwarder: Sendable {
    static let headerName = "X-Aqueduct-Forwarded"
    /// Longer than the longest fetch may wait.
    static let timeoutSeconds: Int64 = Int64(HTTPAPI.fetchWaitMillisecondsMax / 1_000) + 30
    /// A forwarded answer is at most a fetch's bytes plus its JSON and encoding.
    static let answerBytesMax = 4 * HTTPAPI.fetchBytesMax
    let bodies: BodyBudget

    static func wasForwarded(_ request: Request) -> Bool {
        request.headers[HTTPField.Name(headerName)!] != nil
    }

    /// Forwards the request (method, path and query, token, body) and returns the answer.
    func forward(_ request: Request, to address: String) async throws -> Response {
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > bodies.requestBytesMax { throw bodies.tooLarge() }
        let reserved = await bodies.pool.acquire(declared ?? bodies.requestBytesMax)
        defer { bodies.pool.release(reserved) }
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: min(bodies.requestBytesMax, reserved)) } catch { throw bodies.tooLarge() }
        let answer = try await send(method: request.method.rawValue, pathAndQuery: request.uri.description, headers: request.headers, body: body, to: address)
        var fields = HTTPFields()
        if let type = answer.contentType { fields[.contentType] = type }
        return Response(status: .init(code: answer.status), headers: fields, body: ResponseBody(byteBuffer: answer.body))
    }

    /// Asks every other live node for `path` (a list each node knows its part of) with
    /// the caller's token, and returns their answers.
    func gather<T: Decodable>(_ type: T.Type, path: String, what: String, request: Request, from cluster: any ClusterDirectory) async throws -> [T] {
        var answers: [T] = []
        for address in cluster.otherNodesHTTP() {
            let answer = try await send(method: "GET", pathAndQuery: path, headers: request.headers, body: ByteBuffer(), to: address)
            guard answer.status == 200 else {
                throw BrokerError(.unavailable, "node at \(address) did not list its \(what) (HTTP \(answer.status))", hint: "retry")
            }
            answers.append(try JSONDecoder().decode(T.self, from: Data(answer.body.readableBytesView)))
        }
        return answers
    }

    struct Answer {
        var status: Int
        var contentType: String?
        var body: ByteBuffer
    }

    func send(method: String, pathAndQuery: String, headers: HTTPFields, body: ByteBuffer, to address: String) async throws -> Answer {
        var outgoing = HTTPClientRequest(url: "http://\(address)\(pathAndQuery)")
        outgoing.method = HTTPMethod(rawValue: method)
        for field in headers where field.name == .authorization || field.name == .contentType {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.add(name: Self.headerName, value: "1")
        if body.readableBytes > 0 { outgoing.body = .bytes(body) }
        do {
            let answer = try await HTTPClient.shared.execute(outgoing, timeout: .seconds(Self.timeoutSeconds))
            let bytes = try await answer.body.collect(upTo: Self.answerBytesMax)
            return Answer(status: Int(answer.status.code), contentType: answer.headers.first(name: "content-type"), body: bytes)
        } catch {
            throw APIError(BrokerError(.unavailable, "the node serving this request (\(address)) did not answer: \(error)",
                hint: "retry; the partition or group moves to another node if that one is gone"))
        }
    }
}
