import AqueductAPI
import Synchronization

/// A partition of a topic, as fetchers name it.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int

    public init(_ topic: String, _ partition: Int) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)-\(partition)" }
}

/// Wakes fetchers waiting on any of several partitions when one of them gets new
/// records (Kafka's Fetch waits for `min_bytes` across all the partitions it asks
/// for, so one log's long-poll is not enough).
///
/// Use: `let ticket = register(partitions)`, then read; if there was nothing, `await
/// wait(ticket, …)`. An append between the registration and the wait is not missed.
public final class AppendNotifier: Sendable {
    public struct Ticket: Sendable {
        fileprivate let id: UInt64
        fileprivate let partitions: [TopicPartition]
    }

    private enum Waiter {
        case registered
        case notified
        case waiting(UnsafeContinuation<Bool, Never>)
    }

    private struct State {
        var nextID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var byPartition: [TopicPartition: Set<UInt64>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Fetchers registered or waiting now.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    public func register(_ partitions: [TopicPartition]) -> Ticket {
        state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.waiters[id] = .registered
            for partition in partitions { state.byPartition[partition, default: []].insert(id) }
            return Ticket(id: id, partitions: partitions)
        }
    }

    /// Waits until an append to one of the ticket's partitions since `register`, or the
    /// timeout; returns whether an append woke it. Consumes the ticket.
    /// A cancelled task's wait ends at once (false): a fetch whose connection closed
    /// holds nothing until its timeout.
    public func wait(_ ticket: Ticket, timeoutNanoseconds: UInt64) async -> Bool {
        let timeout = Task { [self] in
            try? await Task.sleep(nanoseconds: timeoutNanoseconds)
            self.resume(ticket.id, notified: false)
        }
        let notified = await withTaskCancellationHandler {
            await waitForNotification(ticket)
        } onCancel: {
            self.resume(ticket.id, notified: false)
        }
        timeout.cancel()
        cancel(ticket)
        return notified
    }

    private func waitForNotification(_ ticket: Ticket) async -> Bool {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Bool, Never>) in
            let resumeNow: Bool? = state.withLock { state in
                switch state.waiters[ticket.id] {
                case .registered:
                    state.waiters[ticket.id] = .waiting(continuation)
                    return nil
                case .notified:
                    return true
                case .waiting, .none:
                    return false  // timed out already (or waited twice)
                }
            }
            if let resumeNow { continuation.resume(returning: resumeNow) }
        }
    }

    /// Forgets a ticket that will not be waited on.
    public func cancel(_ ticket: Ticket) {
        state.withLock { state in
            state.waiters[ticket.id] = nil
            for partition in ticket.partitions {
                state.byPartition[partition]?.remove(ticket.id)
                if state.byPartition[partition]?.isEmpty == true { state.byPartition[partition] = nil }
            }
        }
    }

    /// Called after records were appended to `partition`.
    public func notify(_ partition: TopicPartition) {
        let woken: [UnsafeContinuation<Bool, Never>] = state.withLock { state in
            guard let ids = state.byPartition[partition] else { return [] }
            var woken: [UnsafeContinuation<Bool, Never>] = []
            for id in ids {
                switch state.waiters[id] {
                case .registered: state.waiters[id] = .notified
                case .waiting(let continuation):
                    state.waiters[id] = .notified
                    woken.append(continuation)
                case .notified, .none: break
                }
            }
            return woken
        }
        for continuation in woken { continuation.resume(returning: true) }
    }

    private func resume(_ id: UInt64, notified: Bool) {
        let continuation: UnsafeContinuation<Bool, Never>? = state.withLock { state in
            guard case .waiting(let continuation) = state.waiters[id] else {
                if case .registered = state.waiters[id] { state.waiters[id] = .notified }
                return nil
            }
            state.waiters[id] = .notified
            return continuation
        }
        continuation?.resume(returning: notified)
    }
}
