@testable import AqueductRecords
import AqueductTestSupport
import NIOCore
import Testing

@Suite struct RecordBatchTests {
    /// Built by kafka-python's DefaultRecordBatchBuilder (an independent implementation):
    /// two records at 1700000000000 and +5 ms, ("k1","hello",[h=v]) and (nil,"world").
    static let kafkaPythonBatchHex =
        "00000000000000000000004f00000000024bf42f080000000000010000018bcfe568000000018bcfe56805"
        + "ffffffffffffffffffffffffffff0000000222000000046b310a68656c6c6f020268027616000a02010a776f726c6400"

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    static func sampleRecords() -> [Record] {
        [
            Record(timestamp: 1_700_000_000_000, key: Array("k1".utf8), value: Array("hello".utf8),
                   headers: [RecordHeader(key: "h", value: Array("v".utf8))]),
            Record(timestamp: 1_700_000_000_005, key: nil, value: Array("world".utf8)),
        ]
    }

    @Test func builderMatchesAnIndependentEncoderByteForByte() throws {
        var builder = RecordBatchBuilder()
        for record in Self.sampleRecords() { builder.append(record) }
        let built = builder.build()
        let reference = Self.bytes(hex: Self.kafkaPythonBatchHex)
        let builtBytes = built.getBytes(at: built.readerIndex, length: built.readableBytes)!
        #expect(builtBytes.count == reference.count)
        // Bytes 12..<16 are the partition leader epoch: kafka-python writes 0, the Java
        // producer -1; it is outside the CRC.
        #expect(Array(builtBytes[0..<12]) == Array(reference[0..<12]))
        #expect(Array(builtBytes[16...]) == Array(reference[16...]))
    }

    @Test func decodesAnIndependentlyEncodedBatch() throws {
        let buffer = ByteBuffer(bytes: Self.bytes(hex: Self.kafkaPythonBatchHex))
        let header = try RecordBatch.validate(buffer, maxBytes: 1 << 20)
        #expect(header.recordsCount == 2)
        #expect(header.lastOffsetDelta == 1)
        #expect(header.compression == CompressionCodec.none)
        var expected = Self.sampleRecords()
        expected[1].offset = 1
        #expect(try RecordBatch.records(of: buffer) == expected)
    }

    @Test func rewritingBaseOffsetKeepsTheChecksumValid() throws {
        var builder = RecordBatchBuilder()
        for record in Self.sampleRecords() { builder.append(record) }
        var batch = builder.build()
        RecordBatch.setBaseOffset(1_000, in: &batch, at: batch.readerIndex)
        RecordBatch.setPartitionLeaderEpoch(7, in: &batch, at: batch.readerIndex)
        let header = try RecordBatch.validate(batch, maxBytes: 1 << 20)
        #expect(header.baseOffset == 1_000)
        #expect(header.lastOffset == 1_001)
        #expect(try RecordBatch.records(of: batch).map(\.offset) == [1_000, 1_001])
    }

    @Test func everyFlippedByteInTheCoveredPartIsDetected() throws {
        var builder = RecordBatchBuilder()
        for record in Self.sampleRecords() { builder.append(record) }
        let batch = builder.build()
        for index in RecordBatchHeader.crcCoveredStart..<batch.readableBytes {
            var damaged = batch
            let byte: UInt8 = damaged.getInteger(at: index)!
            damaged.setInteger(byte ^ 0x10, at: index)
            #expect(throws: RecordBatchError.self) { try RecordBatch.validate(damaged, maxBytes: 1 << 20) }
        }
    }

    @Test func refusesBadInputWithTheReason() throws {
        var builder = RecordBatchBuilder()
        builder.append(timestamp: 1, key: nil, value: [UInt8](repeating: 7, count: 100))
        let batch = builder.build()

        #expect(throws: RecordBatchError.tooLarge(bytes: batch.readableBytes, limitBytes: 100)) {
            try RecordBatch.validate(batch, maxBytes: 100)
        }
        let truncated = batch.getSlice(at: 0, length: batch.readableBytes - 1)!
        #expect(throws: RecordBatchError.truncated(available: batch.readableBytes - 1, needed: batch.readableBytes)) {
            try RecordBatch.validate(truncated, maxBytes: 1 << 20)
        }
        var wrongMagic = batch
        wrongMagic.setInteger(Int8(1), at: RecordBatchHeader.Field.magic)
        #expect(throws: RecordBatchError.unsupportedMagic(1)) { try RecordBatch.validate(wrongMagic, maxBytes: 1 << 20) }
        var withTrailing = batch
        withTrailing.writeBytes([0, 0])
        #expect(throws: RecordBatchError.trailingBytes(2)) { try RecordBatch.validate(withTrailing, maxBytes: 1 << 20) }
        var badLength = batch
        badLength.setInteger(Int32(3), at: RecordBatchHeader.Field.batchLength)
        #expect(throws: RecordBatchError.invalidLength(3)) { try RecordBatch.validate(badLength, maxBytes: 1 << 20) }
        #expect(throws: RecordBatchError.self) { try RecordBatch.validate(ByteBuffer(), maxBytes: 1 << 20) }
    }

    @Test func iteratorYieldsWholeBatchesAndStopsAtAPartialOne() throws {
        var all = ByteBuffer()
        var offsets: [Int64] = []
        var next: Int64 = 0
        for size in [1, 3, 2] {
            var builder = RecordBatchBuilder()
            for index in 0..<size { builder.append(timestamp: Int64(index), key: nil, value: [UInt8(index)]) }
            var batch = builder.build(baseOffset: next)
            offsets.append(next)
            next += Int64(size)
            all.writeBuffer(&batch)
        }
        let whole = Array(RecordBatchIterator(all)).map(\.header.baseOffset)
        #expect(whole == offsets)
        let partial = all.getSlice(at: 0, length: all.readableBytes - 5)!
        #expect(Array(RecordBatchIterator(partial)).map(\.header.baseOffset) == Array(offsets.dropLast()))
    }

    @Test func extremeTimestampsRoundTripWithoutTrapping() throws {
        // Any Int64 a client sends: deltas and sums wrap, as in Kafka's readers.
        var builder = RecordBatchBuilder()
        for timestamp in [Int64.max, Int64.min, 0, -1, Int64.max - 1] { builder.append(timestamp: timestamp, key: nil, value: [1]) }
        let batch = builder.build(baseOffset: Int64.max - 10)
        #expect(try RecordBatch.records(of: batch).map(\.timestamp) == [Int64.max, Int64.min, 0, -1, Int64.max - 1])
        // A hand-made batch whose base and delta overflow when added.
        var single = RecordBatchBuilder()
        single.append(timestamp: 5, key: nil, value: [1])
        single.append(timestamp: 6, key: nil, value: [2])
        var edited = single.build()
        edited.setInteger(Int64.max, at: edited.readerIndex + RecordBatchHeader.Field.baseTimestamp)
        let crc = RecordBatch.checksumOfBatch(edited, at: edited.readerIndex, totalSize: edited.readableBytes)
        edited.setInteger(crc, at: edited.readerIndex + RecordBatchHeader.Field.crc)
        #expect(try RecordBatch.records(of: edited).map(\.timestamp) == [Int64.max, Int64.min])
    }

    @Test func varintsRoundTripAtTheEdges() {
        for value: Int64 in [0, 1, -1, 63, -64, 64, 300, -300, Int64(Int32.max), Int64(Int32.min), .max, .min] {
            var buffer = ByteBuffer()
            Varint.write(value, to: &buffer)
            #expect(buffer.readableBytes == Varint.size(of: value))
            #expect(Varint.read(from: &buffer) == value)
        }
        var overlong = ByteBuffer(bytes: [UInt8](repeating: 0xFF, count: 11))
        #expect(Varint.read(from: &overlong) == nil)
        var tooBigFor32 = ByteBuffer()
        Varint.write(Int64(Int32.max) + 1, to: &tooBigFor32)
        #expect(Varint.read32(from: &tooBigFor32) == nil)
    }

    @Test func malformedRecordsAreRefusedNotTrapped() throws {
        // Random bytes in the records part, CRC fixed up so only the record decoder sees them.
        var random = SplitMix64(seed: testSeed())
        for _ in 0..<500 {
            var builder = RecordBatchBuilder()
            builder.append(timestamp: 0, key: [1, 2], value: [3, 4, 5])
            var batch = builder.build()
            let start = RecordBatchHeader.size
            for index in start..<batch.readableBytes where Bool.random(using: &random) {
                batch.setInteger(UInt8.random(in: 0...255, using: &random), at: index)
            }
            _ = try? RecordBatch.records(of: batch)
        }
    }
}

@Suite struct DecompressionTests {
    /// A raw snappy block made by hand: literal "abcd", then a copy of 8 bytes from 4
    /// back (overlapping: "abcdabcd"), then literal "!".
    @Test func snappyBlocksAndXerialFramesDecode() throws {
        let block: [UInt8] = [13, 0x0C, 0x61, 0x62, 0x63, 0x64, 0x11, 0x04, 0x00, 0x21]
        let raw = try decompressed(block, .snappy)
        #expect(String(decoding: raw, as: UTF8.self) == "abcdabcdabcd!")
        // The same block in xerial framing (Kafka's Java client): magic, versions, (length, block).
        var framed: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0, 0, 0, 0, 1, 0, 0, 0, 1]
        framed += [0, 0, 0, UInt8(block.count)] + block + [0, 0, 0, UInt8(block.count)] + block
        #expect(String(decoding: try decompressed(framed, .snappy), as: UTF8.self) == "abcdabcdabcd!abcdabcdabcd!")
    }

    /// Random and truncated input gives an error for every codec, never a crash.
    @Test func garbageNeverCrashesADecoder() {
        var generator = SplitMix64(seed: 77)
        for codec in [CompressionCodec.gzip, .snappy, .lz4, .zstd] {
            for round in 0..<300 {
                let count = round == 0 ? 0 : Int.random(in: 1...300, using: &generator)
                var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                // Valid-looking starts: the codecs' magic numbers.
                if round % 3 == 1 {
                    switch codec {
                    case .gzip: bytes = [0x1F, 0x8B, 8, 0] + bytes
                    case .lz4: bytes = [0x04, 0x22, 0x4D, 0x18] + bytes
                    case .zstd: bytes = [0x28, 0xB5, 0x2F, 0xFD] + bytes
                    default: bytes = [200, 1] + bytes
                    }
                }
                _ = try? decompressed(bytes, codec)
            }
        }
    }

    func decompressed(_ bytes: [UInt8], _ codec: CompressionCodec) throws -> [UInt8] {
        var buffer = try RecordBatch.decompress(ByteBuffer(bytes: bytes), codec)
        return buffer.readBytes(length: buffer.readableBytes)!
    }
}
