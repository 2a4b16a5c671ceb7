import AqueductReplication
import AqueductTestSupport
import NIOCore
import Testing

@Suite struct StorageProtocolTests {
    typealias P = StorageProtocol

    func entry(_ text: String, entry: Int64 = 7) -> P.Entry {
        P.Entry(segment: 42, entry: entry, lastAddConfirmed: entry - 1, payload: ByteBuffer(string: text))
    }

    var requests: [P.Request] {
        [
            .add(entry("hello"), isRecovery: false), .add(entry("", entry: 0), isRecovery: true),
            .read(segment: 42, entry: 3, fence: false), .read(segment: .max, entry: 0, fence: true),
            .readLastAddConfirmed(segment: 1, fence: true, after: nil, waitMilliseconds: 0),
            .readLastAddConfirmed(segment: 1, fence: false, after: -1, waitMilliseconds: 30_000),
            .advertise(segment: 9, lastAddConfirmed: 12),
        ]
    }

    var answers: [P.Answer] {
        [
            .added(.ok), .added(.fenced), .read(.ok, entry("world")), .read(.noSuchEntry, nil),
            .lastAddConfirmed(.ok, lastAddConfirmed: 4, lastEntry: 6), .lastAddConfirmed(.timedOut, lastAddConfirmed: -1, lastEntry: -1),
            .advertised(.noSuchSegment),
        ]
    }

    @Test func everyMessageSurvivesTheWireArrivingAByteAtATime() throws {
        var wire = ByteBuffer()
        for (id, request) in requests.enumerated() { P.encode(request, id: UInt64(id), into: &wire) }
        var arriving = ByteBuffer()
        var decoded: [P.Request] = []
        while let byte: UInt8 = wire.readInteger() {
            arriving.writeInteger(byte)
            while let frame = try P.nextFrame(&arriving, frameBytesMax: 1 << 20) {
                #expect(frame.id == UInt64(decoded.count))
                decoded.append(try P.decodeRequest(frame.kind, frame.body))
            }
        }
        #expect(decoded == requests)

        var answerWire = ByteBuffer()
        for (id, answer) in answers.enumerated() { P.encode(answer, id: UInt64(id), into: &answerWire) }
        var back: [P.Answer] = []
        while let frame = try P.nextFrame(&answerWire, frameBytesMax: 1 << 20) { back.append(try P.decodeAnswer(frame.kind, frame.body)) }
        #expect(back == answers)
    }

    @Test func anEntryChecksCoverItsPositionAndPayload() {
        var damaged = entry("payload")
        #expect(damaged.isIntact)
        damaged.payload = ByteBuffer(string: "paylOad")
        #expect(!damaged.isIntact)
        var moved = entry("payload")
        moved.entry += 1
        #expect(!moved.isIntact, "the same bytes at another position are not that entry")
    }

    @Test func framesPastTheLimitOrOfAnotherVersionAreRefusedBeforeTheirBodyIsRead() throws {
        var big = ByteBuffer()
        P.encode(.add(entry(String(repeating: "x", count: 2_000)), isRecovery: false), id: 1, into: &big)
        var head = big.getSlice(at: 0, length: 8)!  // only the start has arrived
        #expect(throws: P.DecodeError.frameTooLarge(bytes: big.readableBytes - 4, limit: 1_000)) { try P.nextFrame(&head, frameBytesMax: 1_000) }
        var other = ByteBuffer()
        P.encode(.advertise(segment: 1, lastAddConfirmed: 0), id: 1, into: &other)
        other.setInteger(UInt8(9), at: 4)
        #expect(throws: P.DecodeError.unsupportedVersion(9)) { try P.nextFrame(&other, frameBytesMax: 1_000) }
    }

    @Test func positionsBeforeTheFirstEntryAreRefused() throws {
        for request: P.Request in [.read(segment: 1, entry: -1, fence: false), .advertise(segment: 1, lastAddConfirmed: -2),
                                   .readLastAddConfirmed(segment: 1, fence: false, after: -5, waitMilliseconds: 10)] {
            var wire = ByteBuffer()
            P.encode(request, id: 1, into: &wire)
            let frame = try #require(try P.nextFrame(&wire, frameBytesMax: 1_000))
            #expect(throws: P.DecodeError.self) { try P.decodeRequest(frame.kind, frame.body) }
        }
    }

    /// Hostile bytes: random frames and valid frames with bytes flipped, cut or grown
    /// decode to a message or a DecodeError, never a trap, and never read past their frame.
    @Test func randomAndDamagedFramesNeverTrap() throws {
        var random = SplitMix64(seed: testSeed())
        var valid: [ByteBuffer] = []
        for (id, request) in requests.enumerated() { var b = ByteBuffer(); P.encode(request, id: UInt64(id), into: &b); valid.append(b) }
        for (id, answer) in answers.enumerated() { var b = ByteBuffer(); P.encode(answer, id: UInt64(id), into: &b); valid.append(b) }
        var outcomes = (messages: 0, errors: 0)
        for _ in 0..<20_000 {
            var bytes: [UInt8]
            if random.next() % 4 == 0 {
                bytes = (0..<Int(random.next() % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                if bytes.count >= 4, random.next() % 2 == 0 {  // a plausible length
                    let length = UInt32(bytes.count - 4)
                    bytes[0...3] = [UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
                }
            } else {
                bytes = Array(valid[Int(random.next() % UInt64(valid.count))].readableBytesView)
                for _ in 0..<(1 + random.next() % 3) where !bytes.isEmpty {
                    let at = Int(random.next() % UInt64(bytes.count))
                    switch random.next() % 3 {
                    case 0: bytes[at] ^= UInt8(truncatingIfNeeded: 1 + random.next() % 255)
                    case 1: bytes.removeSubrange(at...)
                    default: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
                    }
                }
            }
            var buffer = ByteBuffer(bytes: bytes)
            do {
                guard let frame = try P.nextFrame(&buffer, frameBytesMax: 4_096) else { continue }
                if frame.kind.rawValue & 0x80 == 0 { _ = try P.decodeRequest(frame.kind, frame.body) } else { _ = try P.decodeAnswer(frame.kind, frame.body) }
                outcomes.messages += 1
            } catch {
                outcomes.errors += 1
            }
        }
        #expect(outcomes.messages > 0 && outcomes.errors > 0)
    }
}
