import Synchronization

/// Open connections of a listener, in all and per client address: `admit` refuses
/// past either limit (the caller closes the connection and counts the refusal), and an
/// admitted connection is `release`d when it closes. The per-address map holds only
/// addresses with open connections, so it is bounded by `total`.
public final class ConnectionLimiter: Sendable {
    public enum Refusal: Sendable, Equatable {
        case total
        case address
    }

    public let total: Int
    public let perAddress: Int
    private let state = Mutex<(open: Int, byAddress: [String: Int])>((0, [:]))

    public init(total: Int, perAddress: Int) {
        self.total = total
        self.perAddress = perAddress
    }

    /// Nil when admitted (release it later), else which limit refused it.
    public func admit(_ address: String) -> Refusal? {
        state.withLock { state -> Refusal? in
            if state.open >= total { return .total }
            if state.byAddress[address, default: 0] >= perAddress { return .address }
            state.open += 1
            state.byAddress[address, default: 0] += 1
            return nil
        }
    }

    public func release(_ address: String) {
        state.withLock { state in
            state.open -= 1
            state.byAddress[address, default: 1] -= 1
            if state.byAddress[address] == 0 { state.byAddress[address] = nil }
        }
    }

    /// Connections open now.
    public var open: Int { state.withLock { $0.open } }
}
