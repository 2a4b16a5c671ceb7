@_exported import AqueductCommon
import Foundation

/// A new, empty directory for one test: `$TMPDIR/aqueduct-tests/<test>-<uuid>`.
public func temporaryDirectory(_ name: String = #function) -> String {
    let path = NSTemporaryDirectory() + "aqueduct-tests/" + name.filter { $0.isLetter || $0.isNumber } + "-" + UUID().uuidString
    try! FileSystem.createDirectory(path)
    return path
}
