@testable import AqueductTopology
import Testing

/// The stream managers' wire format: round trips, and bad bytes refused, never trapped on.
@Suite struct TupleCodecTests {
    func randomValue(_ random: inout TopologyRandom, depth: Int = 0) -> TupleValue {
        switch random.next() % (depth < 3 ? 7 : 6) {
        case 0: return .null
        case 1: return .bool(random.next() % 2 == 0)
        case 2: return .int(Int64(bitPattern: random.next()))
        case 3: return .double(Double(Int64(bitPattern: random.next() >> 12)) / 7)
        case 4: return .string(String((0..<Int(random.next() % 20)).map { _ in ["a", "é", "語", "🙂", " "][Int(random.next() % 5)] }))
        case 5: return .bytes((0..<Int(random.next() % 30)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        default: return .list((0..<Int(random.next() % 4)).map { _ in randomValue(&random, depth: depth + 1) })
        }
    }

    func randomFrame(_ random: inout TopologyRandom) -> TupleCodec.Frame {
        switch random.next() % 3 {
        case 0:
            let tuples = (0..<Int(random.next() % 6)).map { _ in
                TupleCodec.EncodedTuple(
                    sourceTask: Int(random.next() % 100), streamIndex: Int(random.next() % 4),
                    anchors: (0..<Int(random.next() % 3)).map { _ in (TupleRoot(task: Int(random.next() % 10), key: random.next()), random.next()) },
                    values: TupleValues((0..<Int(random.next() % 5)).map { _ in randomValue(&random) }))
            }
            return .tuples(destinationTask: Int(random.next() % 100), tuples)
        case 1:
            let messages: [ControlQueue.Message] = (0..<Int(random.next() % 5)).map { _ in
                random.next() % 2 == 0 ? .ack(key: random.next(), value: random.next()) : .fail(key: random.next())
            }
            return .control(spoutTask: Int(random.next() % 10), messages)
        default:
            return .backpressure(container: Int(random.next() % 4), engaged: random.next() % 2 == 0)
        }
    }

    func body(_ frame: TupleCodec.Frame) -> [UInt8] {
        var bytes: [UInt8] = []
        TupleCodec.encode(frame, into: &bytes)
        let length = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16 | Int(bytes[3]) << 24
        #expect(length == bytes.count - 4)
        return Array(bytes.dropFirst(4))
    }

    @Test func randomFramesRoundTrip() throws {
        var random = TopologyRandom(seed: 2026)
        for _ in 0..<2_000 {
            let frame = randomFrame(&random)
            let decoded = try TupleCodec.decode(frameBody: body(frame)[...])
            // Doubles compare by value; NaN is not produced above.
            #expect(decoded == frame)
        }
    }

    @Test func everyTruncationIsRefused() {
        var random = TopologyRandom(seed: 7)
        for _ in 0..<200 {
            let bytes = body(randomFrame(&random))
            for cut in 0..<bytes.count {
                #expect(throws: TupleCodecError.self) { try TupleCodec.decode(frameBody: bytes[0..<cut]) }
            }
        }
    }

    /// Seeded mutations of valid frames: each decodes or throws, and the process lives.
    @Test func mutatedFramesNeverTrap() {
        var random = TopologyRandom(seed: 99)
        var refused = 0
        for _ in 0..<20_000 {
            var bytes = body(randomFrame(&random))
            guard !bytes.isEmpty else { continue }
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let index = Int(random.next() % UInt64(bytes.count))
                bytes[index] = UInt8(truncatingIfNeeded: random.next())
            }
            do { _ = try TupleCodec.decode(frameBody: bytes[...]) } catch { refused += 1 }
        }
        #expect(refused > 1_000)
    }

    @Test func limitsAndLies() {
        // A tuple count far beyond what the frame could hold.
        let lie: [UInt8] = [1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]
        #expect(throws: TupleCodecError.lengthBeyondFrame("tuple count 2147483647")) { try TupleCodec.decode(frameBody: lie[...]) }
        // Lists nested too deep.
        var deep: TupleValue = .null
        for _ in 0..<20 { deep = .list([deep]) }
        let frame = TupleCodec.Frame.tuples(destinationTask: 1, [TupleCodec.EncodedTuple(sourceTask: 0, streamIndex: 0, anchors: [], values: [deep])])
        #expect(throws: TupleCodecError.limit("lists nested deeper than 8")) { try TupleCodec.decode(frameBody: body(frame)[...]) }
        // Unknown kind, trailing bytes, invalid UTF-8.
        #expect(throws: TupleCodecError.unknownKind(9)) { try TupleCodec.decode(frameBody: [9][...]) }
        #expect(throws: TupleCodecError.trailingBytes(1)) { try TupleCodec.decode(frameBody: (body(.backpressure(container: 1, engaged: true)) + [0])[...]) }
        let badText: [UInt8] = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 1, 0, 0, 0, 0xFF]
        #expect(throws: TupleCodecError.badValue("string is not UTF-8")) { try TupleCodec.decode(frameBody: badText[...]) }
    }

    @Test func whatCannotBeEncodedIsNamedNotTrappedOn() throws {
        func tuple(anchors: Int = 1, values: [TupleValue] = [.int(1)]) -> TupleCodec.EncodedTuple {
            TupleCodec.EncodedTuple(
                sourceTask: 1, streamIndex: 0,
                anchors: (0..<anchors).map { (TupleRoot(task: 0, key: UInt64($0) + 1), UInt64($0) + 7) }, values: TupleValues(values))
        }
        // More anchors than a byte holds cross containers now (joins over many trees).
        let joined = tuple(anchors: 1_000)
        #expect(TupleCodec.problem(of: joined) == nil)
        #expect(try TupleCodec.decode(frameBody: body(.tuples(destinationTask: 3, [joined]))[...]) == .tuples(destinationTask: 3, [joined]))
        // Past the limits: named, so the stream manager fails the trees instead.
        #expect(TupleCodec.problem(of: tuple(anchors: TupleCodec.anchorsPerTupleMax + 1)) != nil)
        #expect(TupleCodec.problem(of: tuple(values: Array(repeating: .null, count: TupleCodec.valuesPerTupleMax + 1))) != nil)
        var nested = TupleValue.int(0)
        for _ in 0...TupleCodec.listDepthMax { nested = .list([nested]) }
        #expect(TupleCodec.problem(of: tuple(values: [nested])) != nil)
        #expect(TupleCodec.problem(of: tuple(values: [.bytes(Array(repeating: 1, count: TupleCodec.frameBytesMax))])) != nil)
    }
}
