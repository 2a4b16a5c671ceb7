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

public struct WaitTimeout: Error, CustomStringConvertible {
    public var what: String
    public var location: String
    public var seconds: Double
    public var description: String { "\(what) did not hold within \(Int(seconds)) s (\(location))" }
}
