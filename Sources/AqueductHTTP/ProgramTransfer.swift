import AqueductAPI
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Cluster mode: a node copies an uploaded topology program from the node that has it
/// (`GET /v1/programs/{name}`), streaming it to a file, never all in memory.
public enum ProgramTransfer {
    /// How long one copy may take (a large program over a slow network).
    static let timeoutSeconds: Int64 = 600

    /// Downloads `name` from the node at `address` into a new hidden file in `directory`
    /// and returns its path; at most `bytesMax` bytes. The caller checks and installs it.
    public static func download(name: String, from address: String, token: String?, into directory: String, bytesMax: Int) async throws -> String {
        var request = HTTPClientRequest(url: "http://\(address)/v1/programs/\(name)")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: Forwarder.headerName, value: "1")
        let answer = try await HTTPClient.shared.execute(request, timeout: .seconds(timeoutSeconds))
        guard answer.status == .ok else {
            _ = try? await answer.body.collect(upTo: 64 << 10)
            throw BrokerError(.unavailable, "node at \(address) did not send the program \(name) (HTTP \(answer.status.code))")
        }
        let path = directory + "/.copy-" + UUID().uuidString
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw BrokerError(.storageError, "cannot write into the programs directory \(directory)")
        }
        do {
            defer { try? handle.close() }
            var written = 0
            for try await chunk in answer.body {
                written += chunk.readableBytes
                guard written <= bytesMax else {
                    throw BrokerError(.recordTooLarge, "the program \(name) from \(address) is larger than \(bytesMax) bytes (topologies.programBytesMax)")
                }
                try handle.write(contentsOf: Data(chunk.readableBytesView))
            }
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
        return path
    }
}
