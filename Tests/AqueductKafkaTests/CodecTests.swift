import AqueductKafka
import NIOCore
import Testing

@Suite struct CodecTests {
    @Test func placeholder() {}
}
