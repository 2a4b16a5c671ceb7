import AqueductCommon
import AqueductTestSupport
import Foundation
import NIOCore
import Testing

@testable import AqueductMetadata

@Suite struct EmbeddedMetadataStoreTests {
    @Test func compareAndSetChecksVersionsAtomically() async throws {
        let store = try EmbeddedMetadataStore(directory: temporaryDirectory())
        let first = try await store.put("/a", [1], expect: .absent)
        await #expect(throws: MetadataError.conflict(key: "/a", expected: .absent, actualVersion: first)) {
            try await store.put("/a", [2], expect: .absent)
        }
        let second = try await store.put("/a", [2], expect: .version(first))
        #expect(second == first + 1)
        await #expect(throws: MetadataError.self) { try await store.put("/a", [3], expect: .version(first)) }
        // One failing condition leaves every key of the commit untouched.
        await #expect(throws: MetadataError.self) {
            try await store.commit([
                .put(key: "/b", value: [9], expect: .absent),
                .put(key: "/a", value: [9], expect: .version(first)),
            ])
        }
        #expect(try await store.get("/b") == nil)
        #expect(try await store.get("/a")?.value == [2])
        #expect(try await store.get("/a")?.createdVersion == first)
        try await store.delete("/a", expect: .version(second))
        #expect(try await store.get("/a") == nil)
        try await store.close()
    }

    @Test func commitsSurviveReopen() async throws {
        let directory = temporaryDirectory()
        do {
            let store = try EmbeddedMetadataStore(directory: directory)
            for index in 0..<50 { try await store.put("/k/\(index)", Array("v\(index)".utf8)) }
            try await store.delete("/k/7")
            try await store.close()
        }
        let reopened = try EmbeddedMetadataStore(directory: directory)
        let keys = try await reopened.list(prefix: "/k/")
        #expect(keys.count == 49)
        #expect(try await reopened.get("/k/8")?.value == Array("v8".utf8))
        #expect(try await reopened.currentRevision() == 51)
    }

    @Test func aHalfWrittenUpdateIsNeverVisibleAfterRestart() async throws {
        let directory = temporaryDirectory()
        do {
            let store = try EmbeddedMetadataStore(directory: directory)
            try await store.put("/topic", Array("one".utf8))
            try await store.close()
        }
        // A crash in the middle of writing the next record: its first bytes only.
        let torn = MetadataFiles.encodeRecord(revision: 2, operations: [.put(key: "/topic", value: Array("two".utf8), expect: .any)])
        let file = try DataFile.open(directory + "/log")
        let size = try file.size()
        for cut in [1, 7, 12, torn.readableBytes - 1] {
            try file.truncate(to: size)
            try file.write(torn.getSlice(at: 0, length: cut)!, at: size)
            let reopened = try EmbeddedMetadataStore(directory: directory)
            #expect(try await reopened.get("/topic")?.value == Array("one".utf8), "cut at \(cut)")
            try await reopened.close()
            #expect(try file.size() == size, "the torn tail is cut off")
        }
        // And the store goes on from there.
        let store = try EmbeddedMetadataStore(directory: directory)
        try await store.put("/topic", Array("three".utf8))
        try await store.close()
        #expect(try await EmbeddedMetadataStore(directory: directory).get("/topic")?.value == Array("three".utf8))
    }

    @Test func corruptionBeforeTheTailStopsTheStart() async throws {
        let directory = temporaryDirectory()
        do {
            let store = try EmbeddedMetadataStore(directory: directory)
            try await store.put("/a", [1, 2, 3, 4])
            try await store.put("/b", [5, 6, 7, 8])
            try await store.close()
        }
        let file = try DataFile.open(directory + "/log")
        var byte = try file.read(count: 1, at: 20)
        let value: UInt8 = byte.readInteger()!
        try file.write([value ^ 0x01], at: 20)
        #expect(throws: MetadataError.self) { _ = try EmbeddedMetadataStore(directory: directory) }
    }

    @Test func compactionKeepsEverythingAndACrashMidwayIsHarmless() async throws {
        let directory = temporaryDirectory()
        let store = try EmbeddedMetadataStore(directory: directory)
        for index in 0..<20 { try await store.put("/k/\(index % 5)", [UInt8(index)]) }
        let logBefore = try FileSystem.readWholeFile(directory + "/log")!
        try await store.compact()
        try await store.put("/k/0", [99])
        try await store.close()
        #expect(try await EmbeddedMetadataStore(directory: directory).get("/k/0")?.value == [99])

        // Crash after the snapshot was renamed but before the log was emptied: the old
        // records are still in the log and must be skipped by revision.
        try FileSystem.atomicReplace(directory + "/log", contents: logBefore)
        let reopened = try EmbeddedMetadataStore(directory: directory)
        #expect(try await reopened.get("/k/4")?.value == [19])
        #expect(try await reopened.currentRevision() == 20)
    }

    @Test func watchersSeeChangesUnderTheirPrefixInOrder() async throws {
        let store = try EmbeddedMetadataStore(directory: temporaryDirectory())
        let events = store.watch(prefix: "/topics/")
        try await store.put("/other", [0])
        try await store.put("/topics/a", [1])
        try await store.put("/topics/b", [2])
        try await store.delete("/topics/a")
        var seen: [String] = []
        for try await event in events {
            switch event.kind {
            case .put: seen.append("put \(event.key)@\(event.revision)")
            case .delete: seen.append("delete \(event.key)@\(event.revision)")
            }
            if seen.count == 3 { break }
        }
        #expect(seen == ["put /topics/a@2", "put /topics/b@3", "delete /topics/a@4"])
    }

    @Test func limitsAreEnforcedWithAReason() async throws {
        let store = try EmbeddedMetadataStore(directory: temporaryDirectory())
        await #expect(throws: MetadataError.self) { try await store.put("", [1]) }
        await #expect(throws: MetadataError.self) {
            try await store.put("/big", [UInt8](repeating: 0, count: MetadataState.valueBytesMax + 1))
        }
        await #expect(throws: MetadataError.self) { try await store.commit([]) }
    }
}
