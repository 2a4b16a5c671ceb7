import AqueductBroker
@testable import AqueductGroups
import AqueductTestSupport
import Logging
import NIOCore
import Testing

@testable import AqueductKafka

/// Requests a hostile or buggy client could send, with extreme but valid values: each
/// gets an answer in its own format or a closed connection, never a crash.
@Suite struct HostileRequestTests {
    /// The longest client id a request header can carry.
    static let longestClientID = String(repeating: "c", count: Int(Int16.max))

    @Test func aMaximalClientIDMakesAnEncodableMemberIDAtEveryJoinVersion() async throws {
        let stack = try await KafkaStack.open(temporaryDirectory())
        for version: Int16 in [0, 3, 4, 5, 6, 7] {
            var request = JoinGroupRequest()
            request.groupId = "g\(version)"
            request.sessionTimeoutMs = 10_000
            request.rebalanceTimeoutMs = 10_000
            request.protocolType = "consumer"
            request.protocols = [.init(name: "range", metadata: [0, 1])]
            let response = try await stack.call(.joinGroup, version: version, request, as: JoinGroupResponse.self, clientID: Self.longestClientID)
            // v4+: MEMBER_ID_REQUIRED with the id to use; earlier: joined.
            #expect(response.errorCode == (version >= 4 ? KafkaErrorCode.memberIDRequired : KafkaErrorCode.none))
            #expect(response.memberId.utf8.count <= GroupStateMachine.memberIDClientBytesMax + 37)
            #expect(response.memberId.hasPrefix(String(repeating: "c", count: GroupStateMachine.memberIDClientBytesMax) + "-"))
        }
        try await stack.close()
    }

    @Test func memberIDsAreTheClientIDAndARandomUUID() {
        var first = GroupStateMachine(groupID: "g", random: SplitMix64(seed: 1))
        var second = GroupStateMachine(groupID: "g", random: SplitMix64(seed: 2))
        let request = GroupStateMachine.JoinRequest(
            memberID: "", instanceID: nil, clientID: "app", clientHost: "/127.0.0.1", protocolType: "consumer",
            protocols: [.init(name: "range", metadata: [])], sessionTimeoutMilliseconds: 10_000,
            rebalanceTimeoutMilliseconds: 10_000, requiresKnownMemberID: true)
        guard case .join(_, let a) = first.join(1, request, now: 0).first, case .join(_, let b) = second.join(1, request, now: 0).first else {
            Issue.record("no join replies")
            return
        }
        #expect(a.memberID.hasPrefix("app-") && a.memberID.utf8.count == "app-".utf8.count + 36)
        #expect(a.memberID != b.memberID)
        // UTF-8 prefixes keep whole characters.
        #expect("ééé".utf8Prefix(5) == "éé")
    }

    @Test func theWriterRecordsValuesTooLongForTheirEncodingInsteadOfTrapping() {
        var writer = KafkaWriter()
        writer.writeString(String(repeating: "x", count: 40_000), compact: false)
        #expect(writer.failure?.limit == Int(Int16.max))
        var compact = KafkaWriter()
        compact.writeString(String(repeating: "x", count: 40_000), compact: true)
        #expect(compact.failure == nil)
        // A failure inside a tagged field is the outer writer's.
        var outer = KafkaWriter()
        outer.writeSizePrefixed { $0.writeString(String(repeating: "y", count: 33_000), compact: false) }
        #expect(outer.failure != nil)
    }

    @Test func aResponseThatCannotBeEncodedClosesTheConnection() {
        var response = ListGroupsResponse()
        response.groups = [.init(groupId: String(repeating: "g", count: 40_000), protocolType: "consumer")]
        let logger = Logger(label: "test")
        // v2 strings have 16-bit lengths; v3+ are compact.
        #expect(KafkaRequestHandler.frame(response, key: .listGroups, version: 2, correlationID: 1, flexibleHeader: false, capacity: 64, logger: logger) == nil)
        #expect(KafkaRequestHandler.frame(response, key: .listGroups, version: 3, correlationID: 1, flexibleHeader: true, capacity: 64, logger: logger) != nil)
    }
}
