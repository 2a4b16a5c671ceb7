import AqueductMetadata
import AqueductStorage

/// A log as recorded in the metadata store at `/logs/<id>`: its segments in order,
/// the current writer's epoch and the first offset still readable.
struct LogRecord: Codable, Equatable, Sendable {
    struct Segment: Codable, Equatable, Sendable {
        enum State: String, Codable, Sendable { case open, sealed }
        var number: UInt64
        var baseOffset: Int64
        var state: State
        /// One past the last offset; known once sealed.
        var endOffset: Int64?
        var sizeBytes: Int64?
        var maxTimestamp: Int64?
        var createdAtMilliseconds: Int64
        var sealedAtMilliseconds: Int64?

        /// Records the segment as sealed with what the storage node reports of it.
        mutating func seal(_ info: SegmentInfo, at now: Int64) {
            state = .sealed
            endOffset = info.endOffset
            sizeBytes = info.sizeBytes
            maxTimestamp = info.maxTimestamp
            sealedAtMilliseconds = now
        }
    }

    var id: UInt64
    var name: String
    var createdAtMilliseconds: Int64
    var writerEpoch: UInt64
    /// Offsets below this were truncated or expired.
    var startOffset: Int64
    var segments: [Segment]
    var configuration: LogConfiguration

    static func key(_ id: UInt64) -> String { "/logs/\(id)" }
    static let prefix = "/logs/"
    static let idCounterKey = "/counters/log-id"
}
