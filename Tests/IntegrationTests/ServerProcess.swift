import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The real `aqueduct` binary run as a child process on 127.0.0.1 with an ephemeral
/// port, stopped by PID (SIGTERM for a clean stop, SIGKILL for a crash).
final class ServerProcess: @unchecked Sendable {
    let dataDirectory: String
    private let process = Process()
    private let output = Locked("")
    private(set) var port = 0

    /// The binary next to the test bundle (SwiftPM builds both into one folder), or
    /// $AQUEDUCT_BINARY.
    static var binaryPath: String {
        if let path = ProcessInfo.processInfo.environment["AQUEDUCT_BINARY"] { return path }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // swift-testing on Linux runs from <bin>/aqueductPackageTests.xctest.
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("aqueduct").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return packageRoot.appendingPathComponent(".build/debug/aqueduct").path
    }

    /// `environment` is added to this process's (containers inherit the server's).
    init(dataDirectory: String, extraArguments: [String] = [], environment: [String: String] = [:]) {
        self.dataDirectory = dataDirectory
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = ["server", "--data-dir", dataDirectory, "--http-listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"] + extraArguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
    }

    /// Starts the server and waits until it serves HTTP.
    func start(timeout: Duration = .seconds(60)) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binaryPath) else {
            throw IntegrationError("no aqueduct binary at \(Self.binaryPath); run `swift build` first or set AQUEDUCT_BINARY")
        }
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        pipe.fileHandleForReading.readabilityHandler = { [output] handle in
            let data = handle.availableData
            if data.isEmpty { return }
            output.withLock { $0 += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = output.withLock { $0 }
            if let range = text.range(of: #"http=127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last!)!
                return
            }
            if !process.isRunning {
                throw IntegrationError("server exited with \(process.terminationStatus) before serving:\n\(text)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw IntegrationError("server did not start within \(timeout):\n\(output.withLock { $0 })")
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var log: String { output.withLock { $0 } }
    var isRunning: Bool { process.isRunning }

    /// kill -9: no flush, no checkpoint, no goodbye.
    func crash() async throws {
        kill(process.processIdentifier, SIGKILL)
        try await waitForExit(timeout: .seconds(10))
    }

    /// SIGTERM and wait for the clean exit; returns the exit status. A server that
    /// takes more than `timeout` to stop is killed and reported.
    @discardableResult
    func stop(timeout: Duration = .seconds(30)) async throws -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            do {
                try await waitForExit(timeout: timeout)
            } catch {
                kill(process.processIdentifier, SIGKILL)
                throw IntegrationError("server did not stop within \(timeout) of SIGTERM:\n\(log)")
            }
        }
        return process.terminationStatus
    }

    /// Polls rather than `waitUntilExit`, so a stuck child fails the test instead of
    /// hanging it.
    private func waitForExit(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { throw IntegrationError("server pid \(process.processIdentifier) still running after \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// A value shared between tasks and threads behind a lock.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<Result>(_ body: (inout Value) -> Result) -> Result { mutex.withLock { body(&$0) } }
}

struct IntegrationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
