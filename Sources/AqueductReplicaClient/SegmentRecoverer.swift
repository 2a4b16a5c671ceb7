import AqueductReplication
import Logging
import Metrics
import NIOCore
import NIOPosix

/// Takes a segment away from a writer that may still be alive and seals it where no
/// confirmed entry is lost (BookKeeper's open-for-recovery), in the order:
/// claim the segment in metadata first (compare-and-set to `recovering`, so the old
/// writer's next metadata change fails), then fence its last fragment's nodes, read
/// forward, write back, and seal with a compare-and-set on the claimed version.
public enum SegmentRecoverer {
    public struct Configuration: Sendable {
        /// A fence, read or write-back without an answer within this counts as failed.
        public var requestTimeoutMilliseconds: Int64 = 5_000
        /// Claims retried when the metadata changes under the claim (another writer's
        /// ensemble change landing first).
        public var claimAttemptsMax = 8

        public init() {}
    }

    public struct Outcome: Sendable {
        public var lastEntry: Int64
        public var metadata: SegmentMetadata
        public var version: UInt64
    }

    /// Recovers and seals `segment` (returns at once when it is sealed already).
    /// `spareNodes`: live nodes that may replace one failing a write-back.
    public static func recover(
        segment: UInt64, owner: String, transport: any StorageTransport, metadataStore: SegmentMetadataStore, spareNodes: [NodeID] = [],
        configuration: Configuration = .init(), loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        logger: Logger = Logger(label: "aqueduct.replica.recovery")
    ) async throws(ReplicationError) -> Outcome {
        // 1. Claim: the old writer's ensemble changes and seal now conflict.
        var claimed: (metadata: SegmentMetadata, version: UInt64)?
        for _ in 0..<configuration.claimAttemptsMax {
            let (current, version) = try await metadataStore.load(segment)
            if current.state == .sealed {
                return Outcome(lastEntry: current.lastEntry ?? -1, metadata: current, version: version)
            }
            var claim = current
            claim.state = .recovering
            claim.owner = owner
            do throws(ReplicationError) {
                claimed = (claim, try await metadataStore.replace(segment, claim, version: version))
                break
            } catch .fenced {
                continue  // changed meanwhile: read it again
            }
        }
        guard let claimed else { throw .metadata("segment \(segment) kept changing; could not claim it for recovery") }
        let shape = try claimed.metadata.shape
        logger.info("recovering a segment", metadata: ["segment": "\(segment)", "owner": "\(owner)", "fragments": "\(claimed.metadata.fragments)"])

        // 2. Fence, read forward, write back.
        let run = RecoveryRun(
            segment: segment, machine: SegmentRecovery(shape: shape, fragments: claimed.metadata.fragments, spareNodes: spareNodes),
            transport: transport, timeoutMilliseconds: configuration.requestTimeoutMilliseconds, loop: loop)
        let (lastEntry, fragments) = try await run.run()

        // 3. Seal on the claimed version (with the ensemble recovery changed, if it
        // did): a later claimer makes this fail.
        var sealed = claimed.metadata
        sealed.state = .sealed
        sealed.lastEntry = lastEntry
        if fragments != sealed.fragments {
            logger.info("recovery changed the ensemble", metadata: ["segment": "\(segment)", "fragments": "\(fragments)"])
            sealed.fragments = fragments
        }
        let version = try await metadataStore.replace(segment, sealed, version: claimed.version)
        logger.info("sealed a recovered segment", metadata: ["segment": "\(segment)", "lastEntry": "\(lastEntry)"])
        return Outcome(lastEntry: lastEntry, metadata: sealed, version: version)
    }
}

/// One recovery's machine and its requests, confined to an event loop.
final class RecoveryRun: @unchecked Sendable {
    let segment: UInt64
    let transport: any StorageTransport
    let timeoutMilliseconds: Int64
    let loop: any EventLoop
    private var machine: SegmentRecovery
    /// Copies read, by entry id, until written back.
    private var copies: [Int64: StorageProtocol.Entry] = [:]
    private var continuation: CheckedContinuation<Int64, any Error>?

    init(segment: UInt64, machine: SegmentRecovery, transport: any StorageTransport, timeoutMilliseconds: Int64, loop: any EventLoop) {
        self.segment = segment
        self.machine = machine
        self.transport = transport
        self.timeoutMilliseconds = timeoutMilliseconds
        self.loop = loop
    }

    /// The last entry and the fragments to seal with.
    func run() async throws(ReplicationError) -> (Int64, [Fragment]) {
        do {
            let lastEntry = try await withCheckedThrowingContinuation { continuation in
                loop.execute {
                    self.continuation = continuation
                    self.perform(self.machine.start())
                }
            }
            return try await loop.submit { (lastEntry, self.machine.fragments) }.get()
        } catch let error as ReplicationError {
            throw error
        } catch {
            throw .recoveryFailed(segment: segment, "\(error)")
        }
    }

    private func perform(_ actions: [SegmentRecovery.Action]) {
        for action in actions {
            switch action {
            case .fence(let node):
                request(.readLastAddConfirmed(segment: segment, fence: true, after: nil, waitMilliseconds: 0), node) { result in
                    let answer: SegmentRecovery.FenceAnswer = switch result {
                    case .success(.lastAddConfirmed(.ok, let lastAddConfirmed, _)): .fenced(lastAddConfirmed: lastAddConfirmed)
                    case .success(.lastAddConfirmed(.noSuchSegment, _, _)): .noSuchSegment
                    default: .failed
                    }
                    self.perform(self.machine.fenceAnswered(by: node, answer))
                }
            case .read(let entry, let node):
                request(.read(segment: segment, entry: entry, fence: true), node) { result in
                    let answer: SegmentRecovery.ReadAnswer
                    switch result {
                    case .success(.read(.ok, let copy?)) where copy.entry == entry && copy.segment == self.segment:
                        self.copies[entry] = copy
                        answer = .found
                    case .success(.read(.noSuchEntry, _)), .success(.read(.noSuchSegment, _)):
                        answer = .missing
                    default:
                        answer = .failed
                    }
                    self.perform(self.machine.readAnswered(entry, by: node, answer))
                }
            case .writeBack(let entry, let node, _):
                guard let copy = copies[entry] else { preconditionFailure("write-back of entry \(entry) without its copy") }
                request(.add(copy, isRecovery: true), node) { result in
                    if case .success(.added(.ok)) = result {
                        self.perform(self.machine.writeBackAcknowledged(entry, by: node))
                    } else {
                        self.perform(self.machine.writeBackFailed(entry, at: node))
                    }
                }
            case .seal(let lastEntry):
                copies = [:]
                continuation?.resume(returning: lastEntry)
                continuation = nil
            case .failed(let why):
                copies = [:]
                continuation?.resume(throwing: ReplicationError.recoveryFailed(segment: segment, why))
                continuation = nil
            }
        }
    }

    private func request(_ request: StorageProtocol.Request, _ node: NodeID, _ then: @escaping @Sendable (Result<StorageProtocol.Answer, StorageClientError>) -> Void) {
        transport.send(request, to: node, timeoutMilliseconds: timeoutMilliseconds) { result in
            self.loop.execute { then(result) }
        }
    }
}
