import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd (Debian's `etcd-server`, installed by scripts/test.sh) run by a test on
/// 127.0.0.1 with ports of its own and a data directory in the test's temporary
/// directory; stopped by PID. Restartable on the same data, to test etcd going away
/// and coming back.
public final class EtcdProcess: Sendable {
    public let dataDirectory: String
    public let clientPort: Int
    public let peerPort: Int
    private let process = Mutex<Process?>(nil)
    private let output = Mutex("")

    public static var binary: String? {
        for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return nil
    }

    public static var isInstalled: Bool { binary != nil }

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
        clientPort = freeLoopbackPort()
        var peer = freeLoopbackPort()
        while peer == clientPort { peer = freeLoopbackPort() }
        peerPort = peer
    }

    public var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    /// Starts etcd and waits until it answers its health check.
    public func start(timeout: Duration = .seconds(60)) async throws {
        guard let binary = Self.binary else { throw EtcdProcessError("etcd is not installed (apt-get install etcd-server; scripts/test.sh does it)") }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: binary)
        let peer = "http://127.0.0.1:\(peerPort)"
        child.arguments = [
            "--name", "test", "--data-dir", dataDirectory,
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=\(peer)", "--initial-cluster-state", "new",
        ]
        let pipe = Pipe()
        child.standardOutput = pipe
        child.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [self] handle in
            let data = handle.availableData
            if !data.isEmpty { self.output.withLock { $0 += String(decoding: data, as: UTF8.self) } }
        }
        try child.run()
        process.withLock { $0 = child }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if output.withLock({ $0.contains("ready to serve client requests") }) { return }
            if !child.isRunning { throw EtcdProcessError("etcd exited with \(child.terminationStatus):\n\(log)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw EtcdProcessError("etcd did not start within \(timeout):\n\(log)")
    }

    public var log: String { output.withLock { $0 } }

    /// kill -9 and wait for the exit.
    public func stop() async {
        guard let child = process.withLock({ $0 }) else { return }
        if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        while child.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        process.withLock { $0 = nil }
        output.withLock { $0 = "" }
    }
}

public struct EtcdProcessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A port nothing listens on now (the kernel's pick for an ephemeral bind).
public func freeLoopbackPort() -> Int {
    let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socketFD) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketFD, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}
