import AqueductAPI
import AqueductBroker
import AqueductCommon
import AqueductHTTP
import AqueductLog
import AqueductStorage
import AqueductServer
import AqueductTestSupport
import AqueductTopologyService
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// Runs `body` against the HTTP API of a server opened in a fresh directory.
func withAPI(
    _ name: String = #function, limits: HTTPLimits = HTTPLimits(), _ body: @Sendable (any TestClientProtocol, Server.Components) async throws -> Void
) async throws {
    var configuration = ServerConfiguration()
    configuration.dataDirectory = temporaryDirectory(name)
    configuration.storage.flushIntervalMilliseconds = 100
    configuration.storage.journalFileBytesMax = 4 << 20
    configuration.topicDefaults.batchBytesMax = 64 << 10
    let components = try await Server.open(configuration, logger: Logger(label: "test"))
    let router = HTTPAPI.router(broker: components.broker, limits: limits, metricsText: { components.metricsText() })
    let application = Application(router: router)
    try await application.test(.router) { client in
        try await body(client, components)
    }
    await components.close()
}

func jsonBody(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(response.body.readableBytesView))
}

/// The error code of a failed response (and checks the body has a message).
func errorCode(_ response: TestResponse) throws -> String {
    let body = try decode(ErrorBody.self, response)
    #expect(!body.error.message.isEmpty)
    return body.error.code
}

@Suite struct HTTPAPITests {
    @Test func oneNodeDescribesItselfAsTheWholeCluster() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"solo","partitions":2}"#)) { response throws in
                #expect(response.status == .created)
            }
            try await client.execute(uri: "/v1/cluster", method: .get) { response throws in
                let status = try decode(ClusterStatusJSON.self, response)
                #expect(status.mode == "single" && status.nodes.map(\.live) == [true] && status.underReplicatedSegments == 0)
                #expect(status.partitions == [.init(topic: "solo", partition: 0, owner: 0), .init(topic: "solo", partition: 1, owner: 0)])
            }
        }
    }

    @Test func topicsCanBeCreatedListedDescribedAndDeleted() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"orders","partitions":3,"config":{"retentionMs":60000}}"#)) { response throws in
                #expect(response.status == .created)
                let created = try decode(TopicDescription.self, response)
                #expect(created.partitions.count == 3)
                #expect(created.configuration.retentionMilliseconds == 60_000)
            }
            try await client.execute(uri: "/v1/topics", method: .get) { response throws in
                let list = try decode(TopicList.self, response)
                #expect(list.topics.map(\.name) == ["orders"])
                #expect(list.topics[0].endOffsets == [0, 0, 0])
            }
            try await client.execute(uri: "/v1/topics/orders", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(try decode(TopicDescription.self, response).name == "orders")
            }
            try await client.execute(uri: "/v1/topics/orders", method: .delete) { response throws in
                #expect(response.status == .noContent)
            }
            try await client.execute(uri: "/v1/topics/orders", method: .get) { response throws in
                #expect(response.status == .notFound)
                let code = try errorCode(response)
                #expect(code == "UNKNOWN_TOPIC")
            }
        }
    }

    @Test func producedRecordsAreFetchedBackWithKeysHeadersAndOffsets() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"events","partitions":2}"#)) { _ in }
            // One record at the top level, explicit partition.
            try await client.execute(uri: "/v1/topics/events/records", method: .post, body: jsonBody(#"{"key":"a","value":"first","partition":1,"headers":{"trace":"t1"}}"#)) { response throws in
                #expect(response.status == .ok)
                #expect(try decode(ProduceResponse.self, response).offsets == [ProducedRecord(partition: 1, offset: 0)])
            }
            // A batch, base64, headers as a list with a duplicate key and a null value.
            let body = #"{"encoding":"base64","records":[{"value":"AAEC","headers":[{"key":"h","value":"eA=="},{"key":"h","value":null}]},{"key":"Yg==","value":"//8="}]}"#
            try await client.execute(uri: "/v1/topics/events/partitions/1/records", method: .post, body: jsonBody(body)) { response throws in
                #expect(try decode(ProduceResponse.self, response).offsets.map(\.offset) == [1, 2])
            }
            try await client.execute(uri: "/v1/topics/events/partitions/1/records?offset=0&encoding=base64", method: .get) { response throws in
                let fetched = try decode(FetchResponse.self, response)
                #expect(fetched.records.map(\.offset) == [0, 1, 2])
                #expect(fetched.records[0].key == Data("a".utf8).base64EncodedString())
                #expect(fetched.records[0].headers == [HeaderJSON(key: "trace", value: Data("t1".utf8).base64EncodedString())])
                #expect(fetched.records[1].value == "AAEC")
                #expect(fetched.records[1].headers == [HeaderJSON(key: "h", value: "eA=="), HeaderJSON(key: "h", value: nil)])
                #expect(fetched.records[2].key == "Yg==")
                #expect(fetched.nextOffset == 3 && fetched.endOffset == 3 && fetched.startOffset == 0)
            }
            // From an offset inside the partition, with a record limit.
            try await client.execute(uri: "/v1/topics/events/partitions/1/records?offset=1&maxRecords=1", method: .get) { response throws in
                let fetched = try decode(FetchResponse.self, response)
                #expect(fetched.records.map(\.offset) == [1])
                #expect(fetched.nextOffset == 2)
            }
            try await client.execute(uri: "/v1/topics/events/partitions/1/offsets", method: .get) { response throws in
                let offsets = try decode(OffsetsResponse.self, response)
                #expect(offsets.startOffset == 0 && offsets.endOffset == 3)
            }
        }
    }

    @Test func aFetchAtTheEndWaitsForTheNextRecord() async throws {
        try await withAPI { client, components in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"tail"}"#)) { _ in }
            // Produced once the fetch waits; had it not woken the fetch, the fetch would
            // answer at its 60 s maximum with no records.
            async let produced: Void = {
                try await waitUntil { components.storage!.waitingReaders == 1 }
                _ = try await components.broker.produce(topic: "tail", records: [ProduceRecord(value: Array("late".utf8))])
            }()
            try await client.execute(uri: "/v1/topics/tail/partitions/0/records?offset=0&maxWaitMs=60000", method: .get) { response throws in
                let fetched = try decode(FetchResponse.self, response)
                #expect(fetched.records.map(\.value) == ["late"])
            }
            try await produced
            // With nothing coming, the wait ends at maxWaitMs with no records.
            try await client.execute(uri: "/v1/topics/tail/partitions/0/records?offset=1&maxWaitMs=100", method: .get) { response throws in
                let fetched = try decode(FetchResponse.self, response)
                #expect(fetched.records.isEmpty && fetched.nextOffset == 1)
            }
        }
    }

    @Test func badRequestsGetDocumentedCodesNeverACrash() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"t","partitions":2}"#)) { _ in }
            let cases: [(String, HTTPRequest.Method, String?, HTTPResponse.Status, String)] = [
                ("/v1/topics", .post, #"{"name":"t"}"#, .conflict, "TOPIC_ALREADY_EXISTS"),
                ("/v1/topics", .post, #"{"name":"bad name"}"#, .badRequest, "INVALID_TOPIC_NAME"),
                ("/v1/topics", .post, #"{"name":"ok","partitions":0}"#, .badRequest, "INVALID_PARTITIONS"),
                ("/v1/topics", .post, #"{"name":"ok","config":{"segmentBytes":1}}"#, .badRequest, "INVALID_CONFIG"),
                ("/v1/topics", .post, #"{"partitions":1}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics", .post, #"{"name":"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics", .post, nil, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/nope/records", .post, #"{"value":"x"}"#, .notFound, "UNKNOWN_TOPIC"),
                ("/v1/topics/t/partitions/5/records", .post, #"{"value":"x"}"#, .notFound, "UNKNOWN_PARTITION"),
                ("/v1/topics/t/partitions/x/records", .get, nil, .notFound, "UNKNOWN_PARTITION"),
                ("/v1/topics/t/partitions/-1/records", .get, nil, .notFound, "UNKNOWN_PARTITION"),
                ("/v1/topics/t/records", .post, #"{"records":[]}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/records", .post, #"{"records":[{"value":1}]}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/records", .post, #"{"encoding":"base64","value":"***"}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/records", .post, #"{"encoding":"rot13","value":"x"}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/partitions/0/records", .post, #"{"value":"x","partition":1}"#, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/partitions/0/records?offset=7", .get, nil, .rangeNotSatisfiable, "OFFSET_OUT_OF_RANGE"),
                ("/v1/topics/t/partitions/0/records?offset=-3", .get, nil, .rangeNotSatisfiable, "OFFSET_OUT_OF_RANGE"),
                ("/v1/topics/t/partitions/0/records?offset=abc", .get, nil, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/partitions/0/records?maxWaitMs=99999999", .get, nil, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/partitions/0/records?maxBytes=0", .get, nil, .badRequest, "INVALID_REQUEST"),
                ("/v1/topics/t/partitions/0/records?encoding=hex", .get, nil, .badRequest, "INVALID_REQUEST"),
            ]
            for (uri, method, body, status, code) in cases {
                try await client.execute(uri: uri, method: method, body: body.map(jsonBody)) { response throws in
                    #expect(response.status == status, "\(method) \(uri) \(body ?? "")")
                    let returned = try errorCode(response)
                    #expect(returned == code, "\(method) \(uri) \(body ?? "")")
                }
            }
            // A record over the topic's limit (64 KiB here) and a body over the request limit.
            let big = String(repeating: "x", count: 100_000)
            try await client.execute(uri: "/v1/topics/t/records", method: .post, body: jsonBody(#"{"value":"\#(big)"}"#)) { response throws in
                #expect(response.status == .contentTooLarge)
                let code = try errorCode(response)
                #expect(code == "RECORD_TOO_LARGE")
            }
            let huge = ByteBuffer(repeating: UInt8(ascii: " "), count: HTTPLimits().requestBytesMax + 1)
            try await client.execute(uri: "/v1/topics/t/records", method: .post, body: huge) { response throws in
                #expect(response.status == .contentTooLarge)
                let code = try errorCode(response)
                #expect(code == "RECORD_TOO_LARGE")
            }
            // The server still works.
            try await client.execute(uri: "/v1/topics/t/records", method: .post, body: jsonBody(#"{"value":"fine"}"#)) { response throws in
                #expect(response.status == .ok)
            }
        }
    }

    @Test func randomBodiesNeverCauseAServerError() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"fuzz"}"#)) { _ in }
            let seed = testSeed()
            var random = SplitMix64(seed: seed)
            let fragments = ["{", "}", "[", "]", "\"records\"", "\"value\"", "\"key\"", ":", ",", "null", "1e999", "\"\\u0000\"",
                             "\"headers\"", "{\"key\":1}", "\"encoding\"", "\"base64\"", "-1", "\"partition\"", "true", "\"\\ud800\""]
            for _ in 0..<300 {
                let body = (0..<Int.random(in: 1...12, using: &random)).map { _ in fragments.randomElement(using: &random)! }.joined()
                for uri in ["/v1/topics", "/v1/topics/fuzz/records"] {
                    try await client.execute(uri: uri, method: .post, body: jsonBody(body)) { response throws in
                        #expect(response.status.code < 500, "\(uri) \(body) (seed \(seed))")
                    }
                }
            }
        }
    }

    /// Uploaded programs are served back whole (cluster nodes copy them this way), and
    /// only under a valid name.
    @Test func anUploadedProgramIsServedBackWhole() async throws {
        let directory = temporaryDirectory(#function)
        var configuration = ServerConfiguration()
        configuration.dataDirectory = directory
        let components = try await Server.open(configuration, logger: Logger(label: "test"))
        let master = TopologyMaster(runDirectory: directory + "/topologies", logger: Logger(label: "test"))
        let router = HTTPAPI.router(broker: components.broker, topologies: master, metricsText: { "" })
        // More than one read of the file, so chunks are joined in order.
        var random = SplitMix64(seed: 7)
        let program = (0..<(HTTPAPI.programChunkBytes + 12_345)).map { _ in UInt8.random(in: 0...255, using: &random) }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/v1/programs/prog", method: .put, body: ByteBuffer(bytes: program)) { #expect($0.status == .created) }
            try await client.execute(uri: "/v1/programs/prog", method: .get) { response in
                #expect(response.status == .ok)
                #expect(Array(response.body.readableBytesView) == program)
            }
            try await client.execute(uri: "/v1/programs/missing", method: .get) { response throws in
                #expect(try errorCode(response) == "INVALID_REQUEST")
            }
            try await client.execute(uri: "/v1/programs/..%2Fetc", method: .get) { response throws in
                #expect(response.status == .badRequest)
            }
        }
        await components.close()
    }

    /// Several nodes' topology lists merge into one: the node running a topology speaks
    /// for it over those that only know it is scheduled.
    @Test func clusterTopologyListsMergeByName() {
        func entry(_ name: String, _ state: String, _ node: Int?) -> TopologyStatusJSON {
            TopologyStatusJSON(name: name, state: state, executable: "p", arguments: [], generation: 1, containers: [], components: [], node: node)
        }
        let merged = TopologyList.merged([
            entry("b", "scheduled", 2), entry("a", "running", 1), entry("b", "running", 2), entry("a", "scheduled", 1), entry("c", "scheduled", nil),
        ])
        #expect(merged == [entry("a", "running", 1), entry("b", "running", 2), entry("c", "scheduled", nil)])
    }

    @Test func healthAndMetricsAreServed() async throws {
        try await withAPI { client, _ in
            try await client.execute(uri: "/health", method: .get) { response throws in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"m"}"#)) { _ in }
            try await client.execute(uri: "/v1/topics/m/records", method: .post, body: jsonBody(#"{"value":"x"}"#)) { _ in }
            try await client.execute(uri: "/metrics", method: .get) { response throws in
                let text = String(buffer: response.body)
                #expect(text.contains("aqueduct_journal_fsync_seconds_bucket"))
                #expect(text.contains("aqueduct_journal_entries_total"))
                #expect(text.contains(#"aqueduct_partition_end_offset{topic="m",partition="0"} 1"#))
                #expect(text.contains("aqueduct_topic_bytes_in_total"))
            }
        }
    }
}

@Suite struct ConfigurationTests {
    @Test func flagsBeatEnvironmentWhichBeatsTheFileWhichBeatsDefaults() async throws {
        let directory = temporaryDirectory()
        let file = directory + "/aqueduct.yaml"
        try Data("""
            data:
              directory: /from/file
            http:
              listen: 127.0.0.1:7000
            topic:
              retentionMs: 1000
              segmentBytes: 4096
            durability: interval:20
            """.utf8).write(to: URL(fileURLWithPath: file))
        let configuration = try await ServerConfiguration.load(
            overrides: ["data.directory": "/from/flag"],
            environment: ["AQUEDUCT_HTTP_LISTEN": "127.0.0.1:7001", "AQUEDUCT_TOPIC_RETENTION_MS": "2000", "UNRELATED": "x"],
            file: file)
        #expect(configuration.dataDirectory == "/from/flag")
        #expect(configuration.httpPort == 7001)
        #expect(configuration.topicDefaults.retentionMilliseconds == 2_000)
        #expect(configuration.topicDefaults.segmentBytes == 4_096)
        #expect(configuration.durability == .interval(milliseconds: 20))

        let defaults = try await ServerConfiguration.load(overrides: [:], environment: [:], file: nil)
        #expect(defaults.dataDirectory == "./aqueduct-data")
        #expect(defaults.httpHost == "127.0.0.1" && defaults.httpPort == 8092)
        #expect(defaults.durability == .fsync)
    }

    @Test func badValuesAreExplained() async throws {
        for (key, value) in [("durability", "sometimes"), ("http.listen", "nowhere"), ("topic.retentionMs", "soon"), ("log.level", "loud")] {
            await #expect(throws: ConfigurationError.self, "\(key)=\(value)") {
                _ = try await ServerConfiguration.load(overrides: [key: value], environment: [:], file: nil)
            }
        }
        await #expect(throws: ConfigurationError.self) {
            _ = try await ServerConfiguration.load(overrides: [:], environment: [:], file: "/does/not/exist.yaml")
        }
    }

    @Test func bodiesWaitForTheirShareOfTheBudgetAndAllGetThrough() async throws {
        var limits = HTTPLimits()
        limits.requestBytesMax = 64 << 10
        limits.bodyBytesInFlightMax = 128 << 10
        try await withAPI(limits: limits) { client, _ in
            try await client.execute(uri: "/v1/topics", method: .post, body: jsonBody(#"{"name":"big"}"#)) { _ in }
            // Twelve bodies of ~50 KB at once: at most two fit the budget together; the
            // others wait their turn, and every one is stored.
            let value = String(repeating: "v", count: 50 << 10)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await client.execute(uri: "/v1/topics/big/records", method: .post, body: jsonBody(#"{"value":"\#(value)"}"#)) { response in
                            #expect(response.status == .ok)
                        }
                    }
                }
                try await group.waitForAll()
            }
            // A body declaring more than one request may hold is refused unread.
            let huge = ByteBuffer(repeating: UInt8(ascii: " "), count: (64 << 10) + 1)
            try await client.execute(uri: "/v1/topics/big/records", method: .post, body: huge) { response throws in
                #expect(response.status == .contentTooLarge)
            }
        }
    }
}
