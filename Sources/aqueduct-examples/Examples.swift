import AqueductTopology
import AqueductTopologyExamples
import AqueductTopologyTopics
import Foundation

/// Example topology programs, as users write them: build a topology and hand it to
/// `TopologyProgram.run`, which runs it in local mode, describes it, or runs one
/// container of it when the server's scheduler starts it.
///
///     aqueduct-examples word-count-topics <sentences-topic> <counts-topic> [containers]
///     aqueduct-examples windowed-counts
///     aqueduct-examples exclamation
@main
struct Examples {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst().filter { !$0.hasPrefix("--") }
        do {
            switch arguments.first {
            case "word-count-topics":
                guard arguments.count >= 3 else { usage() }
                let sentences = arguments[arguments.startIndex + 1]
                let counts = arguments[arguments.startIndex + 2]
                var config = TopologyConfig()
                if arguments.count >= 4, let containers = Int(arguments[arguments.startIndex + 3]) { config.containers = containers }
                TopologyProgram.run(try WordCountTopology.build(
                    name: "word-count", sentences: TopicSpout(topic: sentences, commitIntervalMilliseconds: 200), sentenceField: "value",
                    spoutParallelism: 1, sink: TopicSink(topic: counts, keyField: "word", valueField: "count"), config: config))
            case "windowed-counts":
                // Per-word counts in 10 s windows, one every 2 s, printed as windows close.
                TopologyProgram.run(try WindowedWordCounts.build(wordLimit: nil) { result in
                    print("\(result.key.start)-\(result.key.end) \(result.key.key) \(result.value)")
                })
            case "exclamation":
                TopologyProgram.run(try ExclamationTopology.build(sink: Printer()))
            default:
                usage()
            }
        } catch {
            FileHandle.standardError.write(Data("aqueduct-examples: \(error)\n".utf8))
            exit(2)
        }
    }

    static func usage() -> Never {
        FileHandle.standardError.write(Data("usage: aqueduct-examples word-count-topics <sentences-topic> <counts-topic> | windowed-counts | exclamation\n".utf8))
        exit(2)
    }

    struct Printer: Bolt {
        var collector: BoltCollector?
        mutating func prepare(context: TopologyContext, collector: BoltCollector) throws { self.collector = collector }
        mutating func execute(_ tuple: Tuple) {
            print(tuple.values.map(\.description).joined(separator: " "))
            collector?.ack(tuple)
        }
    }
}
