import Foundation

/// etcd v3's JSON gateway bodies (etcd 3.4, `/v3/...`): keys and values are base64,
/// 64-bit integers are decimal strings, and fields at their default (false, 0, empty)
/// are left out of answers, so every answer field is optional here.
enum EtcdWire {
    struct Header: Decodable {
        var revision: String?
    }

    struct KeyValue: Decodable {
        var key: String
        var value: String?
        var create_revision: String?
        var mod_revision: String?
        var lease: String?
    }

    struct RangeRequest: Encodable {
        var key: String
        var range_end: String?
        var count_only: Bool?
    }

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct PutRequest: Encodable {
        var key: String
        var value: String
        var lease: String?
    }

    struct DeleteRangeRequest: Encodable {
        var key: String
    }

    struct Compare: Encodable {
        var key: String
        var result = "EQUAL"
        var target: String
        var mod_revision: String?
        var create_revision: String?
    }

    struct RequestOp: Encodable {
        var request_range: RangeRequest?
        var request_put: PutRequest?
        var request_delete_range: DeleteRangeRequest?
    }

    struct TxnRequest: Encodable {
        var compare: [Compare]
        var success: [RequestOp]
        var failure: [RequestOp]
    }

    struct ResponseOp: Decodable {
        var response_range: RangeResponse?
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct LeaseGrantRequest: Encodable {
        var TTL: String
    }

    struct LeaseRequest: Encodable {
        var ID: String
    }

    struct LeaseGrantResponse: Decodable {
        var ID: String?
        var TTL: String?
        var error: String?
    }

    struct LeaseKeepAliveResponse: Decodable {
        struct Result: Decodable {
            var ID: String?
            var TTL: String?
        }
        var result: Result?
    }

    struct WatchCreate: Encodable {
        struct Create: Encodable {
            var key: String
            var range_end: String
            var start_revision: String?
        }
        var create_request: Create
    }

    struct WatchMessage: Decodable {
        struct Event: Decodable {
            var type: String?
            var kv: KeyValue
        }
        struct Result: Decodable {
            var header: Header?
            var created: Bool?
            var canceled: Bool?
            var compact_revision: String?
            var cancel_reason: String?
            var events: [Event]?
        }
        var result: Result?
        var error: ErrorBody?
    }

    /// What the gateway answers instead when a request fails.
    struct ErrorBody: Decodable {
        var error: String?
        var message: String?
        var code: Int?
    }

    static func base64(_ string: String) -> String { Data(string.utf8).base64EncodedString() }
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func decodeBase64(_ string: String?) -> [UInt8]? {
        guard let string else { return [] }
        return Data(base64Encoded: string).map { [UInt8]($0) }
    }

    /// The key just past every key starting with `prefix` (etcd's range_end for a
    /// prefix): the prefix with its last byte below 0xFF incremented.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]  // every key
    }
}
