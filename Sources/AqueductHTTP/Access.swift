import AqueductAPI
import AqueductCommon
import Foundation
import Hummingbird
import Metrics
import NIOCore

/// Who may call what over HTTP. With no tokens configured the API is open, which the
/// server allows on a loopback listener only; with tokens, every request but
/// `GET /health` needs `Authorization: Bearer <token>` of a role that covers it:
///
/// - read: every GET (topics, records, offsets, groups, topologies, metrics)
/// - write: read, and produce records, commit offsets, create topics
/// - admin: everything, and delete topics, run and control topologies, upload programs
public struct HTTPAccess: Sendable {
    public enum Role: Int, Sendable, Comparable, CustomStringConvertible {
        case read = 1
        case write = 2
        case admin = 3

        public static func < (a: Role, b: Role) -> Bool { a.rawValue < b.rawValue }

        public init?(name: String) {
            switch name {
            case "read": self = .read
            case "write": self = .write
            case "admin": self = .admin
            default: return nil
            }
        }

        public var description: String {
            switch self {
            case .read: "read"
            case .write: "write"
            case .admin: "admin"
            }
        }
    }

    /// Tokens and their roles.
    public private(set) var tokens: [(token: [UInt8], role: Role)] = []

    public init() {}

    /// Whether anyone may call anything (no tokens configured).
    public var isOpen: Bool { tokens.isEmpty }

    /// Shortest token accepted, in bytes: guessing one must be out of reach.
    public static let tokenBytesMin = 16

    public mutating func add(token: String, role: Role) {
        tokens.append((Array(token.utf8), role))
    }

    /// Parses `role:token,role:token` (the `http.tokens` setting).
    public static func parse(_ text: String) throws(BrokerError) -> HTTPAccess {
        var access = HTTPAccess()
        for entry in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            guard let colon = entry.firstIndex(of: ":"), let role = Role(name: String(entry[..<colon])) else {
                throw BrokerError(.invalidConfig, "http.tokens entries are role:token with role read, write or admin, not '\(entry.prefix(12))…'")
            }
            let token = String(entry[entry.index(after: colon)...])
            guard token.utf8.count >= tokenBytesMin else {
                throw BrokerError(.invalidConfig, "an http.tokens token must be at least \(tokenBytesMin) characters long",
                    hint: "make one with `openssl rand -hex 24`")
            }
            access.add(token: token, role: role)
        }
        return access
    }

    /// The role of the caller presenting this `Authorization` header, or nil.
    public func role(authorization: String?) -> Role? {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return nil }
        let presented = Array(authorization.utf8.dropFirst("Bearer ".utf8.count))
        var found: Role?
        // Every token is compared in full, so the time taken says nothing of which matched.
        for (token, role) in tokens where Self.constantTimeEqual(token, presented) {
            found = max(found ?? role, role)
        }
        return found
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }

    /// The role a request needs; nil for the public ones.
    public static func required(method: HTTPRequest.Method, path: String) -> Role? {
        if method == .get || method == .head {
            // A program's bytes are as sensitive as uploading one.
            if path.hasPrefix("/v1/programs/") { return .admin }
            return path == "/health" ? nil : .read
        }
        if path.hasPrefix("/v1/topologies") || path.hasPrefix("/v1/programs") || path.hasPrefix("/v1/cluster") { return .admin }
        if method == .delete { return .admin }
        return .write
    }
}

/// Refuses requests whose token does not cover them (UNAUTHORIZED without a valid
/// token, FORBIDDEN with a token of too low a role).
struct AccessControl: RouterMiddleware {
    typealias Context = BasicRequestContext
    let access: HTTPAccess

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !access.isOpen, let needed = HTTPAccess.required(method: request.method, path: request.uri.path) else {
            return try await next(request, context)
        }
        guard let role = access.role(authorization: request.headers[.authorization]) else {
            throw APIError(BrokerError(.unauthorized, "this server needs a token for \(request.method) \(request.uri.path)",
                hint: "pass one with --token or AQUEDUCT_TOKEN (HTTP: Authorization: Bearer <token>)"))
        }
        guard role >= needed else {
            throw APIError(BrokerError(.forbidden, "a \(role) token cannot \(request.method) \(request.uri.path); it needs \(needed)",
                hint: "use a token with the \(needed) role"))
        }
        return try await next(request, context)
    }
}

/// Closes HTTP connections past `http.connectionsPerAddressMax` from one address (the
/// total is capped by pausing accepts at `http.connectionsMax`).
public final class HTTPConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    let limiter: ConnectionLimiter
    private var admitted: String?
    static let refused = Counter(label: "aqueduct_http_connections_refused_total")

    public init(limiter: ConnectionLimiter) {
        self.limiter = limiter
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
        if limiter.admit(address) == nil {
            admitted = address
        } else {
            Self.refused.increment()
            context.close(promise: nil)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        if let admitted { limiter.release(admitted) }
        admitted = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if let admitted { limiter.release(admitted) }
        admitted = nil
        context.fireChannelInactive()
    }
}
