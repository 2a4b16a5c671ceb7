import AqueductBroker
import AqueductCommon
import AqueductGroups
import AqueductRecords
import AqueductTestSupport
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing

@testable import AqueductKafka

/// Values for generated requests (`sampleRequest`, Generated/RequestSamples.swift):
/// either the extremes every field can take (the longest string its encoding allows,
/// the smallest and largest numbers, long arrays) or a seeded mix of extremes, edge
/// lengths and names that exist. A budget of bytes keeps one request to a few MB.
struct SampleSource {
    enum Mode: String, Sendable, CaseIterable { case extreme, random }

    var random: SplitMix64
    let mode: Mode
    var budget: Int

    init(seed: UInt64, mode: Mode, budgetBytes: Int = 1 << 20) {
        random = SplitMix64(seed: seed)
        self.mode = mode
        budget = budgetBytes
    }

    private mutating func pick<T>(_ choices: [T]) -> T { choices[Int(random.next() % UInt64(choices.count))] }
    private mutating func chance(_ percent: UInt64) -> Bool { random.next() % 100 < percent }

    /// Longest string a field can carry: 16-bit lengths, or past them where compact.
    static func stringBytesMax(compact: Bool) -> Int { compact ? 40_000 : Int(Int16.max) }

    mutating func isNull(_ label: String) -> Bool { chance(mode == .extreme ? 5 : 20) }

    mutating func string(_ label: String, compact: Bool) -> String {
        let longest = Self.stringBytesMax(compact: compact)
        var length: Int
        switch mode {
        case .extreme: length = chance(85) ? longest : pick([0, 1, 255, 256])
        case .random:
            if chance(30) { return pick(["t", "g", "", "__consumer_offsets", "range", "consumer", "member", "-1"]) }
            length = pick([0, 1, 5, 100, 249, 250, 255, 256, 1_000, 32_767, longest])
        }
        length = min(length, max(0, budget))
        budget -= length
        // Multi-byte characters sometimes: lengths are bytes, not characters.
        if chance(30) && length >= 2 { return String(repeating: "é", count: length / 2) }
        return String(repeating: pick(["a", "Z", "9", "_", "-", "."]), count: length)
    }

    mutating func bytes(_ label: String, compact: Bool) -> [UInt8] {
        var length = mode == .extreme ? pick([0, 1 << 16, 1 << 20]) : pick([0, 1, 16, 1_000, 70_000])
        length = min(length, max(0, budget))
        budget -= length
        return (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    }

    mutating func array<T>(_ label: String, compact: Bool, _ element: (inout SampleSource) -> T) -> [T] {
        var count = mode == .extreme ? pick([0, 1, 1_000, 10_000]) : pick([0, 1, 2, 3, 10, 100])
        // Every element costs something, so nested arrays cannot explode.
        count = min(count, max(0, budget / 64))
        budget -= count * 64
        var items: [T] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(element(&self)) }
        return items
    }

    mutating func bool(_ label: String) -> Bool { random.next() % 2 == 0 }
    mutating func int8(_ label: String) -> Int8 { Int8(truncatingIfNeeded: number(Int64(Int8.min), Int64(Int8.max))) }
    mutating func int16(_ label: String) -> Int16 { Int16(truncatingIfNeeded: number(Int64(Int16.min), Int64(Int16.max))) }
    mutating func uint16(_ label: String) -> UInt16 { UInt16(truncatingIfNeeded: number(0, Int64(UInt16.max))) }
    mutating func int32(_ label: String) -> Int32 { Int32(truncatingIfNeeded: number(Int64(Int32.min), Int64(Int32.max))) }
    mutating func int64(_ label: String) -> Int64 { number(Int64.min, Int64.max) }
    mutating func float64(_ label: String) -> Double { pick([0, -1, .infinity, -.infinity, .nan, .greatestFiniteMagnitude]) }
    mutating func uuid(_ label: String) -> KafkaUUID { KafkaUUID(high: random.next(), low: random.next()) }

    private mutating func number(_ low: Int64, _ high: Int64) -> Int64 {
        switch mode {
        case .extreme: return pick([low, high, -1, 0])
        case .random: return chance(50) ? pick([low, high, -1, 0, 1, 2, 3]) : Int64(bitPattern: random.next()) % 5_000
        }
    }

    /// Record batches: none, empty, garbage, or valid ones with extreme fields (any
    /// timestamp, idempotent producer ids and sequences at their limits).
    mutating func records(_ label: String) -> ByteBuffer? {
        switch random.next() % 5 {
        case 0: return nil
        case 1: return ByteBuffer()
        case 2: return ByteBuffer(bytes: (0..<Int(random.next() % 200)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        default:
            var builder = RecordBatchBuilder()
            for _ in 0..<Int(1 + random.next() % 5) {
                builder.append(timestamp: number(Int64.min, Int64.max), key: chance(50) ? nil : [1, 2], value: chance(10) ? nil : [3])
            }
            var batch = builder.build()
            if chance(50) {
                batch.setInteger(number(-1, Int64.max), at: RecordBatchHeader.Field.producerId)
                batch.setInteger(int16("epoch"), at: RecordBatchHeader.Field.producerEpoch)
                batch.setInteger(int32("sequence"), at: RecordBatchHeader.Field.baseSequence)
                batch.setInteger(RecordBatch.checksumOfBatch(batch, at: 0, totalSize: batch.readableBytes), at: RecordBatchHeader.Field.crc)
            }
            return batch
        }
    }

    /// A client id for the request header (always a 16-bit string).
    mutating func clientID() -> String? { isNull("ClientId") ? nil : string("ClientId", compact: false) }
}

/// Whole exchanges with hostile but valid requests: every API at every served version,
/// filled with extreme values, through the real handler and the response encoder.
/// Each request gets a well-formed answer in its own version (or, where the protocol
/// has none, nothing); none closes the connection, none traps.
@Suite struct HostileExchangeTests {
    enum Outcome: Sendable {
        case answered(ByteBuffer?, closed: Bool)
        /// Still waiting (a group join waiting for a rebalance): allowed.
        case parked
    }

    /// The handler's answer, or `.parked` if it takes longer than `seconds` (joins may
    /// wait for other members; nothing here asserts on speed).
    func exchange(_ handler: KafkaRequestHandler, _ frame: ByteBuffer, seconds: Int = 20) async -> Outcome {
        let claimed = Atomic<Bool>(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            let resume: @Sendable (Outcome) -> Void = { outcome in
                if !claimed.exchange(true, ordering: .relaxed) { continuation.resume(returning: outcome) }
            }
            Task {
                var session = KafkaSession(peer: "fuzz")
                let answer = await handler.handle(frame: frame, session: &session)
                resume(.answered(answer, closed: session.closeAfterResponse))
            }
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                resume(.parked)
            }
        }
    }

    @Test(arguments: SampleSource.Mode.allCases)
    func everyAPIAtEveryVersionAnswersExtremeRequests(mode: SampleSource.Mode) async throws {
        let seed = ProcessInfo.processInfo.environment["AQUEDUCT_FUZZ_SEED"].flatMap { UInt64($0) } ?? (mode == .extreme ? 0xE57 : 0x2A9D)
        print("HostileExchangeTests \(mode): seed \(seed) (AQUEDUCT_FUZZ_SEED replays it)")
        var listener = KafkaListenerConfiguration()
        listener.fetchWaitMillisecondsMax = 10
        listener.autoCreateTopicsMax = 20
        var limits = KafkaStack.immediateGroups
        limits.sessionTimeoutMilliseconds = 1...1_800_000
        let stack = try await KafkaStack.open(temporaryDirectory(), listener: listener, partitionsMax: 64, groupLimits: limits)
        _ = try await stack.broker.createTopic("t", partitions: 2)
        let ticker = Task { await stack.handler.groups.runTicker() }
        var issues = 0
        var index: UInt64 = 0
        for key in KafkaAPIKey.allCases {
            guard let served = KafkaAPIVersions.served[key] else { continue }
            for version in served {
                for _ in 0..<(mode == .extreme ? 2 : 4) {
                    index += 1
                    var source = SampleSource(seed: seed &+ index &* 0x9E37_79B9, mode: mode)
                    let request = sampleRequest(key, version: version, &source)
                    let frame = KafkaStack.requestFrame(key, version: version, request, correlationID: Int32(truncatingIfNeeded: index), clientID: source.clientID())
                    let context = "\(key) v\(version) (sample \(index), seed \(seed), \(frame.readableBytes) bytes)"
                    let began = ContinuousClock.now
                    defer { if ProcessInfo.processInfo.environment["AQUEDUCT_FUZZ_VERBOSE"] != nil { print("\(context): \(ContinuousClock.now - began)") } }
                    switch await exchange(stack.handler, frame) {
                    case .parked:
                        continue
                    case .answered(let answer, let closed):
                        #expect(!closed, "a valid request closed the connection: \(context)")
                        guard var answer else {
                            if key == .produce, let produce = request as? ProduceRequest, produce.acks == 0 { continue }
                            Issue.record("no answer (unencodable?): \(context)")
                            issues += 1
                            continue
                        }
                        #expect(answer.readInteger(as: Int32.self) == Int32(answer.readableBytes), "frame size: \(context)")
                        #expect(answer.readInteger(as: Int32.self) == Int32(truncatingIfNeeded: index), "correlation id: \(context)")
                        var reader = KafkaReader(answer)
                        let flexibleHeader = KafkaAPIVersions.isFlexible(key, version) && key != .apiVersions
                        do {
                            if flexibleHeader { _ = try reader.readUnsignedVarint("header tags") }
                            _ = try decodeResponse(key, version: version, &reader)
                            #expect(reader.remaining == 0, "bytes after the response: \(context)")
                        } catch {
                            Issue.record("undecodable response \(error): \(context)")
                            issues += 1
                        }
                    }
                }
            }
        }
        #expect(issues == 0)
        ticker.cancel()
        try await stack.close()
    }
}
