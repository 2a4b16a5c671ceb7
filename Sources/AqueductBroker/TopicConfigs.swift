import AqueductAPI
import AqueductCommon
import AqueductLog
import Foundation

/// Kafka's topic-level configs (Kafka 3.0): every name a client may set on a topic,
/// Kafka's default, and which of them Aqueduct applies. The rest are checked, kept
/// with the topic and reported back (DescribeConfigs), as Kafka reports them, so
/// tools that set them work; docs/KAFKA.md lists which take effect.
public enum TopicConfigs {
    /// What a value must look like.
    enum Kind: Sendable {
        case long(ClosedRange<Int64>)
        case ratio
        case boolean
        case oneOf([String])
        case list([String])
        case text
    }

    struct Definition: Sendable {
        var defaultValue: String
        var kind: Kind
    }

    static let definitions: [String: Definition] = [
        "cleanup.policy": Definition(defaultValue: "delete", kind: .list(["delete", "compact"])),
        "compression.type": Definition(defaultValue: "producer", kind: .oneOf(["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"])),
        "delete.retention.ms": Definition(defaultValue: "86400000", kind: .long(0...Int64.max)),
        "file.delete.delay.ms": Definition(defaultValue: "60000", kind: .long(0...Int64.max)),
        "flush.messages": Definition(defaultValue: "9223372036854775807", kind: .long(1...Int64.max)),
        "flush.ms": Definition(defaultValue: "9223372036854775807", kind: .long(0...Int64.max)),
        "follower.replication.throttled.replicas": Definition(defaultValue: "", kind: .text),
        "index.interval.bytes": Definition(defaultValue: "4096", kind: .long(0...Int64(Int32.max))),
        "leader.replication.throttled.replicas": Definition(defaultValue: "", kind: .text),
        "max.compaction.lag.ms": Definition(defaultValue: "9223372036854775807", kind: .long(1...Int64.max)),
        "max.message.bytes": Definition(defaultValue: "1048588", kind: .long(0...Int64(Int32.max))),
        "message.downconversion.enable": Definition(defaultValue: "true", kind: .boolean),
        "message.format.version": Definition(defaultValue: "3.0-IV1", kind: .text),
        "message.timestamp.difference.max.ms": Definition(defaultValue: "9223372036854775807", kind: .long(0...Int64.max)),
        "message.timestamp.type": Definition(defaultValue: "CreateTime", kind: .oneOf(["CreateTime", "LogAppendTime"])),
        "min.cleanable.dirty.ratio": Definition(defaultValue: "0.5", kind: .ratio),
        "min.compaction.lag.ms": Definition(defaultValue: "0", kind: .long(0...Int64.max)),
        "min.insync.replicas": Definition(defaultValue: "1", kind: .long(1...Int64(Int32.max))),
        "preallocate": Definition(defaultValue: "false", kind: .boolean),
        // Aqueduct's own (cluster mode): BookKeeper's ensemble, write and ack quorum.
        "replication.ack": Definition(defaultValue: "1", kind: .long(1...Int64(LogConfiguration.replicationEnsembleMax))),
        "replication.ensemble": Definition(defaultValue: "1", kind: .long(1...Int64(LogConfiguration.replicationEnsembleMax))),
        "replication.write": Definition(defaultValue: "1", kind: .long(1...Int64(LogConfiguration.replicationEnsembleMax))),
        "retention.bytes": Definition(defaultValue: "-1", kind: .long(-1...Int64.max)),
        "retention.ms": Definition(defaultValue: "604800000", kind: .long(-1...Int64.max)),
        "segment.bytes": Definition(defaultValue: "1073741824", kind: .long(14...Int64(Int32.max))),
        "segment.index.bytes": Definition(defaultValue: "10485760", kind: .long(4...Int64(Int32.max))),
        "segment.jitter.ms": Definition(defaultValue: "0", kind: .long(0...Int64.max)),
        "segment.ms": Definition(defaultValue: "604800000", kind: .long(1...Int64.max)),
        "unclean.leader.election.enable": Definition(defaultValue: "false", kind: .boolean),
    ]

    /// The configs Aqueduct applies; the others are kept and reported only.
    public static let applied: Set<String> = [
        "retention.ms", "retention.bytes", "segment.bytes", "segment.ms", "max.message.bytes",
        "replication.ensemble", "replication.write", "replication.ack",
    ]

    /// Every name, sorted.
    public static var names: [String] { definitions.keys.sorted() }

    public static func isKnown(_ name: String) -> Bool { definitions[name] != nil }

    /// Checks a value as Kafka would; the refusal names the config and what it takes.
    public static func validate(_ name: String, _ value: String) throws(BrokerError) {
        guard let definition = definitions[name] else {
            throw BrokerError(.invalidConfig, "unknown topic config '\(name.utf8Prefix(255))'", hint: "see docs/KAFKA.md for the configs a topic takes")
        }
        let ok: Bool
        switch definition.kind {
        case .long(let range): ok = Int64(value).map { range.contains($0) } ?? false
        case .ratio: ok = Double(value).map { $0 >= 0 && $0 <= 1 } ?? false
        case .boolean: ok = value == "true" || value == "false"
        case .oneOf(let choices): ok = choices.contains(value)
        case .list(let choices):
            let items = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            ok = !items.isEmpty && items.allSatisfy { choices.contains($0) }
        case .text: ok = value.utf8.count <= 4_096
        }
        guard ok else { throw BrokerError(.invalidConfig, "invalid value '\(value.utf8Prefix(255))' for topic config '\(name)'") }
        if name == "cleanup.policy", value.contains("compact") {
            throw BrokerError(.invalidConfig, "cleanup.policy=compact is not supported yet", hint: "use cleanup.policy=delete")
        }
    }

    /// The settings Aqueduct applies, from a topic's configs (validated).
    public static func settings(from configs: [String: String]) throws(BrokerError) -> TopicSettings {
        var settings = TopicSettings()
        for (name, value) in configs {
            try validate(name, value)
            switch name {
            case "retention.ms": settings.retentionMs = Int64(value)
            case "retention.bytes": settings.retentionBytes = Int64(value)
            case "segment.bytes": settings.segmentBytes = Int64(value)
            case "segment.ms": settings.segmentMs = Int64(value)
            case "max.message.bytes": settings.maxMessageBytes = Int(value)
            case "replication.ensemble": settings.replicationEnsemble = Int(value)
            case "replication.write": settings.replicationWrite = Int(value)
            case "replication.ack": settings.replicationAck = Int(value)
            default: break
            }
        }
        return settings
    }

    /// A topic's configs as Kafka reports them: each name with its value and whether
    /// it was set on the topic (else Kafka's default, or the server's for the applied
    /// ones).
    public static func describe(overrides: [String: String], configuration: LogConfiguration) -> [(name: String, value: String, isSet: Bool)] {
        var effective: [String: String] = [
            "retention.ms": String(configuration.retentionMilliseconds ?? -1),
            "retention.bytes": String(configuration.retentionBytes ?? -1),
            "segment.bytes": String(configuration.segmentBytes),
            "segment.ms": String(configuration.segmentMilliseconds),
            "max.message.bytes": String(configuration.batchBytesMax),
        ]
        effective["replication.ensemble"] = configuration.replicationEnsemble.map(String.init)
        effective["replication.write"] = configuration.replicationWrite.map(String.init)
        effective["replication.ack"] = configuration.replicationAck.map(String.init)
        return names.map { name in
            (name, overrides[name] ?? effective[name] ?? definitions[name]!.defaultValue, overrides[name] != nil)
        }
    }
}
