@_exported import AqueductCommon
import Foundation

/// A new, empty directory for one test: `$TMPDIR/aqueduct-tests/<test>-<uuid>`.
public func temporaryDirectory(_ name: String = #function) -> String {
    let path = NSTemporaryDirectory() + "aqueduct-tests/" + name.filter { $0.isLetter || $0.isNumber } + "-" + UUID().uuidString
    try! FileSystem.createDirectory(path)
    return path
}

/// Waits until `condition` holds, checking every few milliseconds, with a generous
/// deadline (never a fixed sleep standing in for synchronisation); throws when the
/// deadline passes.
public func waitUntil(
    timeoutSeconds: Double = 60, _ what: String = "condition", file: String = #fileID, line: Int = #line, _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw WaitTimeout(what: what, location: "\(file):\(line)", seconds: timeoutSeconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// `waitUntil` for a condition that must be awaited (a metadata read, a request).
public func waitUntil(
    timeoutSeconds: Double = 60, _ what: String = "condition", file: String = #fileID, line: Int = #line, _ condition: () async -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
    while await !condition() {
        guard ContinuousClock.now < deadline else { throw WaitTimeout(what: what, location: "\(file):\(line)", seconds: timeoutSeconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

public struct WaitTimeout: Error, CustomStringConvertible {
    public var what: String
    public var location: String
    public var seconds: Double
    public var description: String { "\(what) did not hold within \(Int(seconds)) s (\(location))" }
}

/// The seed of a random test: `$AQUEDUCT_TEST_SEED` when set (to replay a failure),
/// else a fresh one. Printed, so that a failing run says how to replay it.
public func testSeed(_ name: String = #function) -> UInt64 {
    let seed = ProcessInfo.processInfo.environment["AQUEDUCT_TEST_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64(UInt32.max))
    print("\(name): seed \(seed) (AQUEDUCT_TEST_SEED=\(seed) replays it)")
    return seed
}

/// Copies a directory a running storage node writes to (a crash image): a file the
/// node renames away mid-copy (a checkpoint's temporary) makes the copy fail, so it is
/// taken again.
public func copyLiveDirectory(_ directory: String, to copy: String) throws {
    for attempt in 1...20 {
        do {
            try FileManager.default.copyItem(atPath: directory, toPath: copy)
            return
        } catch {
            try? FileManager.default.removeItem(atPath: copy)
            if attempt == 20 { throw error }
        }
    }
}

