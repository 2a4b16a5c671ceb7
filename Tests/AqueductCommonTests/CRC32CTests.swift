import AqueductCommon
import AqueductTestSupport
import Testing

@Suite struct CRC32CTests {
    @Test func knownVectors() {
        // RFC 3720 (iSCSI) appendix B.4 and the usual check value.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func hardwareAndPortableAgreeOnEveryLengthAndAlignment() {
        var random = SplitMix64(seed: 42)
        let data = (0..<50_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        data.withUnsafeBytes { raw in
            // Lengths around the 3 x 4096-byte interleaved blocks and small tails.
            for length in [0, 1, 7, 8, 9, 63, 4095, 12_287, 12_288, 12_289, 24_577, 40_000] {
                for shift in 0..<3 {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[shift..<(shift + length)])
                    #expect(CRC32C.checksum(slice) == CRC32C.portableChecksum(slice), "length \(length) shift \(shift)")
                }
            }
        }
    }

    @Test func extendEqualsWholeChecksum() {
        let data = (0..<30_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        data.withUnsafeBytes { raw in
            for cut in [0, 1, 100, 12_288, 29_999] {
                let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<cut]))
                let whole = CRC32C.extend(first, UnsafeRawBufferPointer(rebasing: raw[cut...]))
                #expect(whole == CRC32C.checksum(raw))
            }
        }
    }

    @Test func combiningEqualsTheChecksumOfBoth() {
        var generator = SplitMix64(seed: 32)
        for length in [0, 1, 7, 61, 1_024, 65_537] {
            let a = (0..<Int.random(in: 0...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let b = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let combined = CRC32C.combine(CRC32C.checksum(a), CRC32C.checksum(b), lengthB: b.count)
            #expect(combined == CRC32C.checksum(a + b), "length \(length)")
        }
    }
}
