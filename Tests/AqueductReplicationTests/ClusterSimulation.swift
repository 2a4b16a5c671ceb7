import AqueductCommon
import AqueductReplication
import HeapModule
import NIOCore

/// A deterministic simulation of a whole replicated log: storage nodes (ReplicaSegment
/// over a simulated disk that syncs after a delay and loses what was not synced when
/// the node crashes), writer processes (SegmentWriter; a newer process takes the log
/// over with a claim in metadata, then SegmentRecovery, as the shells do), a metadata
/// store with compare-and-set, and a network that delays, reorders, loses and cuts
/// links — all driven by one seeded random generator and a simulated clock, so a seed
/// replays exactly.
///
/// After every event it checks:
/// - every entry a writer confirmed has an ack quorum of durable copies on the nodes the
///   metadata names for it (so it stays readable through crashes);
/// - no writer confirms an entry past the end its segment was sealed at (two writers
///   never both succeed), and a sealed segment's entries all have an ack quorum;
/// - copies of an entry agree on every node that holds one.
struct ClusterSimulation {
    typealias ClientID = Int

    struct Configuration {
        var shape: QuorumShape
        var nodes: Int
        var steps = 4_000
        var appendsMax = 120
        var lossPercent: UInt64 = 2
        var crashes = true
        var partitions = true
    }

    // MARK: - The world

    struct Disk {
        /// Durable: survives a crash.
        var entries: [UInt64: [Int64: StorageProtocol.Entry]] = [:]
        var fenced: Set<UInt64> = []
    }

    enum PendingSync {
        case add(StorageProtocol.Entry, reply: (ClientID, Int, UInt64))
        case fence(UInt64, then: NodeRequest)
    }

    struct NodeRequest {
        var client: ClientID
        var incarnation: Int
        var id: UInt64
        var request: StorageProtocol.Request
    }

    struct Node {
        var disk = Disk()
        var up = true
        /// Bumped on every crash: syncs and replies of an older life are dropped.
        var life = 0
        var segments: [UInt64: ReplicaSegment] = [:]
        var pending: [PendingSync] = []
        var syncScheduled = false
    }

    struct SegmentRecord {
        var fragments: [Fragment]
        var sealedAt: Int64?
        var recovering = false
        var version: UInt64
    }

    struct LogRecord {
        var epoch = 0
        var segments: [UInt64] = []
        var version: UInt64 = 1
    }

    enum Role {
        case idle
        case writing(segment: UInt64, SegmentWriter)
        case recovering(segment: UInt64, SegmentRecovery, segmentVersion: UInt64)
        case dead
    }

    struct Client {
        var incarnation: Int
        var epoch: Int
        var role: Role = .idle
        var nextRequest: UInt64 = 1
        /// Requests awaiting an answer: what they were, for timeouts and answers.
        var outstanding: [UInt64: (node: NodeID, request: StorageProtocol.Request)] = [:]
        var copies: [Int64: StorageProtocol.Entry] = [:]
        var appended = 0
        /// Appends to the current segment (it rolls every 25).
        var appendedToSegment = 0
    }

    enum Event {
        case toNode(NodeID, NodeRequest)
        case toClient(ClientID, incarnation: Int, id: UInt64, node: NodeID, StorageProtocol.Answer)
        case timeout(ClientID, incarnation: Int, id: UInt64)
        case sync(NodeID, life: Int)
        case append(ClientID, incarnation: Int)
        case metadataChange(ClientID, incarnation: Int, MetadataChange)
        case crash(NodeID)
        case restart(NodeID)
        case takeover(ClientID)
        case cut(ClientID, NodeID)
        case heal(ClientID, NodeID)
    }

    enum MetadataChange {
        case ensemble(segment: UInt64, [Fragment], expect: UInt64)
        /// Recovery seals with the fragments it ended with (it may change the ensemble).
        case seal(segment: UInt64, lastEntry: Int64, expect: UInt64, fragments: [Fragment]? = nil)
        case claim(expectLog: UInt64)
        case newSegment(UInt64, ensemble: [NodeID], expectLog: UInt64)
    }

    let configuration: Configuration
    var random: SplitMix64
    var now: Int64 = 0
    var sequence = 0
    struct Scheduled: Comparable {
        var time: Int64
        var sequence: Int
        var event: Event
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) == (b.time, b.sequence) }
    }
    var queue = Heap<Scheduled>()
    var events = 0
    var nodes: [NodeID: Node] = [:]
    var segments: [UInt64: SegmentRecord] = [:]
    var log = LogRecord()
    var clients: [ClientID: Client] = [:]
    var cutLinks: Set<[Int]> = []
    var nextSegment: UInt64 = 1
    var metadataVersion: UInt64 = 1
    /// Every entry any writer confirmed, by segment.
    var confirmed: [UInt64: Int64] = [:]
    var violations: [String] = []
    var lossPercent: UInt64
    /// Segments whose invariants may have changed since the last check.
    var dirty: Set<UInt64> = []
    var totalConfirmed = 0
    var seals = 0
    var stats: [String: Int] = [:]

    init(seed: UInt64, configuration: Configuration) {
        self.configuration = configuration
        lossPercent = configuration.lossPercent
        random = SplitMix64(seed: seed)
        for id in 1...configuration.nodes { nodes[id] = Node() }
    }

    // MARK: - Driving

    mutating func run() {
        clients[1] = Client(incarnation: 1, epoch: 0)
        schedule(0, .takeover(1))
        var step = 0
        while step < configuration.steps, let event = popNext() {
            step += 1
            handle(event)
            injectFaults(step: step)
            check()
            if !violations.isEmpty { return }
        }
        // Heal everything (links, lost messages, crashed nodes) and let a last takeover
        // seal the log's last segment: it must finish.
        cutLinks.removeAll()
        lossPercent = 0
        for id in nodes.keys where !nodes[id]!.up { restart(id) }
        let last = (clients.keys.max() ?? 0) + 1
        for id in clients.keys { clients[id]!.role = .dead }
        clients[last] = Client(incarnation: 1, epoch: 0)
        schedule(now + 1, .takeover(last))
        var quiet = 0
        while quiet < 20_000, let event = popNext() {
            quiet += 1
            if case .append = event { continue }
            handle(event)
            check()
            if !violations.isEmpty { return }
            if case .writing = clients[last]!.role { break }
        }
        if case .writing = clients[last]!.role {} else {
            violations.append("the final takeover did not finish once every fault was healed (after \(quiet) events, \(queue.count) queued, nodes up \(nodes.filter { $0.value.up }.keys.sorted()), outstanding \(clients[last]!.outstanding.count), role \(clients[last]!.role))")
        }
    }

    mutating func schedule(_ time: Int64, _ event: Event) {
        sequence += 1
        queue.insert(Scheduled(time: time, sequence: sequence, event: event))
    }

    mutating func popNext() -> Event? {
        guard let next = queue.popMin() else { return nil }
        now = max(now, next.time)
        events += 1
        return next.event
    }

    mutating func chance(_ percent: UInt64) -> Bool { random.next() % 100 < percent }
    mutating func delay(_ low: Int64, _ high: Int64) -> Int64 { low + Int64(random.next() % UInt64(high - low + 1)) }

    mutating func injectFaults(step: Int) {
        guard step % 10 == 0 else { return }
        if configuration.crashes, chance(3), let victim = nodes.keys.sorted().randomElement(using: &random), nodes[victim]!.up {
            crash(victim)
            schedule(now + delay(50, 2_000), .restart(victim))
        }
        if configuration.partitions, chance(3), let client = clients.keys.max(), let node = nodes.keys.sorted().randomElement(using: &random) {
            cutLinks.insert([client, node])
            schedule(now + delay(100, 3_000), .heal(client, node))
        }
        // A newer process takes the log over while the current one may still write.
        if chance(2) {
            let id = (clients.keys.max() ?? 0) + 1
            clients[id] = Client(incarnation: 1, epoch: 0)
            schedule(now + delay(0, 100), .takeover(id))
        }
    }

    mutating func crash(_ id: NodeID) {
        stats["crashes", default: 0] += 1
        nodes[id]!.up = false
        nodes[id]!.life += 1
        nodes[id]!.pending = []  // not synced: a torn tail
        nodes[id]!.syncScheduled = false
        nodes[id]!.segments = [:]
    }

    mutating func restart(_ id: NodeID) {
        guard !nodes[id]!.up else { return }
        nodes[id]!.up = true
        // Rebuilt from the disk, as ReplicaStore does on open.
        var rebuilt: [UInt64: ReplicaSegment] = [:]
        let disk = nodes[id]!.disk
        for segment in Set(disk.entries.keys).union(disk.fenced) {
            let entries = disk.entries[segment] ?? [:]
            rebuilt[segment] = ReplicaSegment(
                isFenced: disk.fenced.contains(segment), lastEntry: entries.keys.max() ?? -1,
                lastAddConfirmed: entries.values.map(\.lastAddConfirmed).max() ?? -1)
        }
        nodes[id]!.segments = rebuilt
    }

    // MARK: - Events

    mutating func handle(_ event: Event) {
        switch event {
        case .toNode(let node, let request): nodeReceived(node, request)
        case .toClient(let client, let incarnation, let id, let node, let answer): clientReceived(client, incarnation, id, node, .success(answer))
        case .timeout(let client, let incarnation, let id):
            guard let outstanding = clients[client]?.outstanding[id], clients[client]?.incarnation == incarnation else { return }
            clientReceived(client, incarnation, id, outstanding.node, .failure(.timedOut(milliseconds: 500)))
        case .sync(let node, let life): synced(node, life: life)
        case .append(let client, let incarnation): append(client, incarnation)
        case .metadataChange(let client, let incarnation, let change): metadataChange(client, incarnation, change)
        case .crash(let node): crash(node)
        case .restart(let node): restart(node)
        case .takeover(let client): takeover(client)
        case .cut(let client, let node): cutLinks.insert([client, node])
        case .heal(let client, let node): cutLinks.remove([client, node])
        }
    }

    // MARK: - Storage nodes

    mutating func nodeReceived(_ id: NodeID, _ request: NodeRequest) {
        guard nodes[id]!.up else { return }
        switch request.request {
        case .add(let entry, let isRecovery):
            var segment = nodes[id]!.segments[entry.segment] ?? ReplicaSegment(isFenced: nodes[id]!.disk.fenced.contains(entry.segment))
            switch segment.add(entry, isRecovery: isRecovery, payloadBytesMax: 1 << 20) {
            case .store:
                nodes[id]!.pending.append(.add(entry, reply: (request.client, request.incarnation, request.id)))
                scheduleSync(id)
            case .refuse(let status):
                reply(id, request, .added(status))
            }
            nodes[id]!.segments[entry.segment] = segment
        case .read(let segmentID, _, let fence), .readLastAddConfirmed(let segmentID, let fence, _, _):
            if fence {
                var segment = nodes[id]!.segments[segmentID] ?? ReplicaSegment(isFenced: nodes[id]!.disk.fenced.contains(segmentID))
                let isNew = segment.fence()
                nodes[id]!.segments[segmentID] = segment
                if isNew {
                    // The fenced bit is durable before the answer.
                    nodes[id]!.pending.append(.fence(segmentID, then: request))
                    scheduleSync(id)
                    return
                }
            }
            answerRead(id, request)
        case .advertise(let segmentID, let lac):
            if var segment = nodes[id]!.segments[segmentID] {
                _ = segment.advertised(lac)
                nodes[id]!.segments[segmentID] = segment
            }
            reply(id, request, .advertised(.ok))
        }
    }

    mutating func answerRead(_ id: NodeID, _ request: NodeRequest) {
        let disk = nodes[id]!.disk
        switch request.request {
        case .read(let segment, let entry, _):
            if let copy = disk.entries[segment]?[entry] {
                reply(id, request, .read(.ok, copy))
            } else {
                reply(id, request, .read(disk.entries[segment] == nil ? .noSuchSegment : .noSuchEntry, nil))
            }
        case .readLastAddConfirmed(let segment, _, _, _):
            let state = nodes[id]!.segments[segment]
            let hasEntries = !(disk.entries[segment]?.isEmpty ?? true)
            reply(id, request, .lastAddConfirmed(hasEntries ? .ok : .noSuchSegment,
                                                 lastAddConfirmed: state?.lastAddConfirmed ?? -1, lastEntry: state?.lastEntry ?? -1))
        default: break
        }
    }

    mutating func scheduleSync(_ id: NodeID) {
        guard !nodes[id]!.syncScheduled else { return }
        nodes[id]!.syncScheduled = true
        schedule(now + delay(1, 20), .sync(id, life: nodes[id]!.life))
    }

    mutating func synced(_ id: NodeID, life: Int) {
        guard nodes[id]!.up, nodes[id]!.life == life else { return }
        let pending = nodes[id]!.pending
        nodes[id]!.pending = []
        nodes[id]!.syncScheduled = false
        for item in pending {
            switch item {
            case .add(let entry, let (client, incarnation, requestID)):
                nodes[id]!.disk.entries[entry.segment, default: [:]][entry.entry] = entry
                _ = nodes[id]!.segments[entry.segment]?.stored(entry)
                reply(id, NodeRequest(client: client, incarnation: incarnation, id: requestID, request: .add(entry, isRecovery: false)), .added(.ok))
            case .fence(let segment, let request):
                nodes[id]!.disk.fenced.insert(segment)
                answerRead(id, request)
            }
        }
    }

    mutating func reply(_ node: NodeID, _ request: NodeRequest, _ answer: StorageProtocol.Answer) {
        guard !cutLinks.contains([request.client, node]), !chance(lossPercent) else { return }
        schedule(now + delay(0, 30), .toClient(request.client, incarnation: request.incarnation, id: request.id, node: node, answer))
    }

    // MARK: - Writer processes

    mutating func send(_ client: ClientID, _ request: StorageProtocol.Request, to node: NodeID) {
        let id = clients[client]!.nextRequest
        clients[client]!.nextRequest += 1
        clients[client]!.outstanding[id] = (node, request)
        let incarnation = clients[client]!.incarnation
        schedule(now + 500, .timeout(client, incarnation: incarnation, id: id))
        guard !cutLinks.contains([client, node]), !chance(lossPercent) else { return }
        schedule(now + delay(0, 30), .toNode(node, NodeRequest(client: client, incarnation: incarnation, id: id, request: request)))
    }

    mutating func payload(_ client: ClientID, _ segment: UInt64, _ entry: Int64) -> ByteBuffer {
        ByteBuffer(string: "c\(client)/s\(segment)/e\(entry)")
    }

    mutating func append(_ client: ClientID, _ incarnation: Int) {
        guard let state = clients[client], state.incarnation == incarnation, case .writing(let segment, var writer) = state.role else { return }
        if state.appended >= configuration.appendsMax { return }
        // Roll now and then: close (seal once confirmed), then a new segment.
        if state.appendedToSegment >= 25, !writer.isClosing {
            let actions = writer.close()
            clients[client]!.role = .writing(segment: segment, writer)
            apply(client, segment, actions)
            return
        }
        if let (entry, actions) = writer.append() {
            clients[client]!.role = .writing(segment: segment, writer)
            clients[client]!.appended += 1
            clients[client]!.appendedToSegment += 1
            applyWriterSends(client, segment, entry, actions)
        }
        schedule(now + delay(1, 15), .append(client, incarnation: incarnation))
    }

    mutating func applyWriterSends(_ client: ClientID, _ segment: UInt64, _ entry: Int64, _ actions: [SegmentWriter.Action]) {
        apply(client, segment, actions)
    }

    mutating func apply(_ client: ClientID, _ segment: UInt64, _ actions: [SegmentWriter.Action]) {
        for action in actions {
            switch action {
            case .send(let entry, let node, let lac):
                let copy = StorageProtocol.Entry(segment: segment, entry: entry, lastAddConfirmed: lac, payload: payload(client, segment, entry))
                send(client, .add(copy, isRecovery: false), to: node)
            case .confirm(let upTo):
                totalConfirmed += Int(upTo - max(confirmed[segment] ?? -1, -1))
                confirmed[segment] = max(confirmed[segment] ?? -1, upTo)
                dirty.insert(segment)
                if let sealedAt = segments[segment]?.sealedAt, upTo > sealedAt {
                    violations.append("client \(client) confirmed entry \(upTo) of segment \(segment), sealed at \(sealedAt)")
                }
            case .changeEnsemble(let fragments):
                let version = segments[segment]!.version
                schedule(now + delay(1, 20), .metadataChange(client, incarnation: clients[client]!.incarnation,
                                                             .ensemble(segment: segment, fragments, expect: clientView(client, segment) ?? version)))
            case .advertise(let lac, let node):
                send(client, .advertise(segment: segment, lastAddConfirmed: lac), to: node)
            case .deposed:
                stats["writers deposed", default: 0] += 1
                clients[client]!.role = .idle
            case .seal(let lastEntry):
                schedule(now + delay(1, 20), .metadataChange(client, incarnation: clients[client]!.incarnation,
                                                             .seal(segment: segment, lastEntry: lastEntry, expect: clientView(client, segment) ?? 0)))
            }
        }
    }

    /// The metadata version a client last saw of a segment (the version it created or
    /// changed it at): kept per client and segment.
    var views: [[Int]: UInt64] = [:]
    func clientView(_ client: ClientID, _ segment: UInt64) -> UInt64? { views[[client, Int(segment)]] }

    mutating func takeover(_ client: ClientID) {
        guard clients[client] != nil else { return }
        if case .dead = clients[client]!.role { return }
        schedule(now + delay(1, 20), .metadataChange(client, incarnation: clients[client]!.incarnation, .claim(expectLog: log.version)))
    }

    mutating func bumpMetadata() -> UInt64 {
        metadataVersion += 1
        return metadataVersion
    }

    mutating func metadataChange(_ client: ClientID, _ incarnation: Int, _ change: MetadataChange) {
        guard let state = clients[client], state.incarnation == incarnation else { return }
        if case .dead = state.role { return }
        switch change {
        case .claim(let expectLog):
            guard log.version == expectLog else {
                // Raced another claim: try again from what is there now.
                schedule(now + delay(1, 50), .takeover(client))
                return
            }
            log.epoch += 1
            log.version = bumpMetadata()
            clients[client]!.epoch = log.epoch
            guard let last = log.segments.last, segments[last]!.sealedAt == nil else {
                startNewSegment(client)
                return
            }
            // Claim the segment too (recovering), before fencing anything.
            segments[last]!.recovering = true
            segments[last]!.version = bumpMetadata()
            views[[client, Int(last)]] = segments[last]!.version
            startRecovery(client, last)
        case .newSegment(let segment, let ensemble, let expectLog):
            guard log.version == expectLog, log.epoch == state.epoch else {
                clients[client]!.role = .idle  // deposed at the log level
                return
            }
            segments[segment] = SegmentRecord(fragments: [Fragment(firstEntry: 0, ensemble: ensemble)], version: bumpMetadata())
            log.segments.append(segment)
            log.version = bumpMetadata()
            views[[client, Int(segment)]] = segments[segment]!.version
            let spares = nodes.keys.sorted().filter { !ensemble.contains($0) }
            clients[client]!.appendedToSegment = 0
            clients[client]!.role = .writing(segment: segment, SegmentWriter(shape: configuration.shape, ensemble: ensemble, spareNodes: spares.shuffled(using: &random)))
            schedule(now + delay(1, 10), .append(client, incarnation: incarnation))
        case .ensemble(let segment, let fragments, let expect):
            guard case .writing(let writing, var writer) = state.role, writing == segment else { return }
            if segments[segment]!.version == expect, segments[segment]!.sealedAt == nil, !segments[segment]!.recovering {
                segments[segment]!.fragments = fragments
                segments[segment]!.version = bumpMetadata()
                dirty.insert(segment)
                views[[client, Int(segment)]] = segments[segment]!.version
                stats["ensemble changes", default: 0] += 1
                let actions = writer.ensembleChangeCommitted()
                clients[client]!.role = .writing(segment: segment, writer)
                apply(client, segment, actions)
            } else {
                let actions = writer.ensembleChangeRefused()
                clients[client]!.role = .writing(segment: segment, writer)
                apply(client, segment, actions)
            }
        case .seal(let segment, let lastEntry, let expect, let fragments):
            guard segments[segment]!.version == expect, segments[segment]!.sealedAt == nil else {
                clients[client]!.role = .idle
                return
            }
            if let fragments { segments[segment]!.fragments = fragments }
            seal(segment, at: lastEntry)
            if case .recovering = state.role { stats["recoveries", default: 0] += 1 }
            if case .writing = state.role { startNewSegment(client) }
            if case .recovering = state.role { startNewSegment(client) }
        }
    }

    mutating func seal(_ segment: UInt64, at lastEntry: Int64) {
        segments[segment]!.sealedAt = lastEntry
        dirty.insert(segment)
        segments[segment]!.recovering = false
        segments[segment]!.version = bumpMetadata()
        seals += 1
        if let confirmedUpTo = confirmed[segment], confirmedUpTo > lastEntry {
            violations.append("segment \(segment) sealed at \(lastEntry) but entry \(confirmedUpTo) was confirmed")
        }
    }

    mutating func startNewSegment(_ client: ClientID) {
        let live = nodes.keys.sorted().filter { nodes[$0]!.up }
        let candidates = live.count >= configuration.shape.ensembleSize ? live : nodes.keys.sorted()
        let ensemble = Array(candidates.shuffled(using: &random).prefix(configuration.shape.ensembleSize))
        let segment = nextSegment
        nextSegment += 1
        clients[client]!.role = .idle
        schedule(now + delay(1, 20), .metadataChange(client, incarnation: clients[client]!.incarnation,
                                                     .newSegment(segment, ensemble: ensemble, expectLog: log.version)))
    }

    mutating func startRecovery(_ client: ClientID, _ segment: UInt64) {
        let ensemble = segments[segment]!.fragments.last!.ensemble
        let spares = nodes.keys.sorted().filter { !ensemble.contains($0) }.shuffled(using: &random)
        var recovery = SegmentRecovery(shape: configuration.shape, fragments: segments[segment]!.fragments, spareNodes: spares)
        let actions = recovery.start()
        clients[client]!.role = .recovering(segment: segment, recovery, segmentVersion: segments[segment]!.version)
        clients[client]!.copies = [:]
        applyRecovery(client, segment, actions)
    }

    mutating func applyRecovery(_ client: ClientID, _ segment: UInt64, _ actions: [SegmentRecovery.Action]) {
        for action in actions {
            switch action {
            case .fence(let node): send(client, .readLastAddConfirmed(segment: segment, fence: true, after: nil, waitMilliseconds: 0), to: node)
            case .read(let entry, let node): send(client, .read(segment: segment, entry: entry, fence: true), to: node)
            case .writeBack(let entry, let node, _):
                send(client, .add(clients[client]!.copies[entry]!, isRecovery: true), to: node)
            case .seal(let lastEntry):
                guard case .recovering(_, let recovery, let version) = clients[client]!.role else { return }
                if recovery.fragments != segments[segment]!.fragments { stats["recovery ensemble changes", default: 0] += 1 }
                schedule(now + delay(1, 20), .metadataChange(client, incarnation: clients[client]!.incarnation,
                                                             .seal(segment: segment, lastEntry: lastEntry, expect: version, fragments: recovery.fragments)))
            case .failed:
                // Too many nodes out of reach: try the whole takeover again later.
                clients[client]!.role = .idle
                schedule(now + delay(100, 500), .takeover(client))
            }
        }
    }

    mutating func clientReceived(_ client: ClientID, _ incarnation: Int, _ id: UInt64, _ node: NodeID, _ result: Result<StorageProtocol.Answer, StorageClientFailure>) {
        guard let state = clients[client], state.incarnation == incarnation, let outstanding = state.outstanding[id] else { return }
        clients[client]!.outstanding[id] = nil
        switch state.role {
        case .writing(let segment, var writer):
            // A late answer to an earlier role's request (a write-back of the segment
            // this client recovered) is not about this segment: the shells keep the
            // recovery and the writer apart.
            guard case .add(let entry, _) = outstanding.request, entry.segment == segment else { return }
            let actions: [SegmentWriter.Action]
            switch result {
            case .success(.added(.ok)): actions = writer.acknowledged(entry.entry, by: node)
            case .success(.added(.fenced)): actions = writer.fenced(by: node)
            default: actions = writer.writeFailed(at: node)
            }
            clients[client]!.role = .writing(segment: segment, writer)
            apply(client, segment, actions)
        case .recovering(let segment, var recovery, let version):
            let actions: [SegmentRecovery.Action]
            let about: UInt64? = switch outstanding.request {
            case .readLastAddConfirmed(let segment, _, _, _): segment
            case .read(let segment, _, _): segment
            case .add(let copy, _): copy.segment
            default: nil
            }
            guard about == segment else { return }  // a late answer to an earlier role
            switch outstanding.request {
            case .readLastAddConfirmed:
                let answer: SegmentRecovery.FenceAnswer = switch result {
                case .success(.lastAddConfirmed(.ok, let lac, _)): .fenced(lastAddConfirmed: lac)
                case .success(.lastAddConfirmed(.noSuchSegment, _, _)): .noSuchSegment
                default: .failed
                }
                actions = recovery.fenceAnswered(by: node, answer)
            case .read(_, let entry, _):
                switch result {
                case .success(.read(.ok, let copy?)):
                    clients[client]!.copies[entry] = copy
                    actions = recovery.readAnswered(entry, by: node, .found)
                case .success(.read(.noSuchEntry, _)), .success(.read(.noSuchSegment, _)):
                    actions = recovery.readAnswered(entry, by: node, .missing)
                default:
                    actions = recovery.readAnswered(entry, by: node, .failed)
                }
            case .add(let copy, _):
                if case .success(.added(.ok)) = result {
                    actions = recovery.writeBackAcknowledged(copy.entry, by: node)
                } else {
                    actions = recovery.writeBackFailed(copy.entry, at: node)
                }
            case .advertise:
                actions = []
            }
            clients[client]!.role = .recovering(segment: segment, recovery, segmentVersion: version)
            applyRecovery(client, segment, actions)
        default:
            return
        }
    }

    // MARK: - Invariants

    mutating func check() {
        let checking = dirty
        dirty = []
        for segment in checking {
            guard let record = segments[segment] else { continue }
            let upTo = max(confirmed[segment] ?? -1, record.sealedAt ?? -1)
            guard upTo >= 0 else { continue }
            for entry in 0...upTo {
                let copies = durableCopies(segment, entry, record)
                if copies < configuration.shape.ackQuorumSize {
                    let what = entry <= confirmed[segment] ?? -1 ? "confirmed entry" : "entry of the sealed segment"
                    violations.append("\(what) \(entry) of segment \(segment) has \(copies) durable copies on its write set (\(record.fragments))")
                    return
                }
            }
        }
    }

    /// Durable copies of an entry on the nodes of its write set, checking they agree.
    mutating func durableCopies(_ segment: UInt64, _ entry: Int64, _ record: SegmentRecord) -> Int {
        let fragment = record.fragments.last { $0.firstEntry <= entry } ?? record.fragments[0]
        var payloads: Set<ByteBuffer> = []
        var count = 0
        for position in configuration.shape.writeSet(of: entry) {
            if let copy = nodes[fragment.ensemble[position]]!.disk.entries[segment]?[entry] {
                count += 1
                payloads.insert(copy.payload)
            }
        }
        if payloads.count > 1 { violations.append("copies of entry \(entry) of segment \(segment) disagree: \(payloads)") }
        return count
    }
}

enum StorageClientFailure: Error {
    case timedOut(milliseconds: Int)
}
