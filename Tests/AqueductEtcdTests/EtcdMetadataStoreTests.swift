import AqueductEtcd
import AqueductMetadata
import AqueductTestSupport
import Foundation
import Testing

/// The etcd store against a real etcd on loopback (started and stopped by the test):
/// the same contract as the embedded store, plus leases and etcd going away.
@Suite(.enabled(if: EtcdProcess.isInstalled, "etcd is not installed: scripts/test.sh installs etcd-server"))
struct EtcdMetadataStoreTests {
    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    func withEtcd(_ body: (EtcdProcess, EtcdMetadataStore) async throws -> Void) async throws {
        let etcd = EtcdProcess(dataDirectory: temporaryDirectory() + "/etcd")
        try await etcd.start()
        var configuration = EtcdMetadataStore.Configuration(endpoint: etcd.endpoint)
        configuration.namespace = "/test-\(UUID().uuidString)/"
        configuration.requestTimeoutMilliseconds = 2_000
        configuration.watchRetryMilliseconds = 50
        let store = EtcdMetadataStore(configuration: configuration)
        do {
            try await body(etcd, store)
        } catch {
            await etcd.stop()
            throw error
        }
        await etcd.stop()
    }

    @Test func compareAndSetCommitsAreAtomicAndVersionsAreRevisions() async throws {
        try await withEtcd { _, store in
            #expect(try await store.get("topics/a") == nil)
            let created = try await store.put("topics/a", bytes("one"), expect: .absent)
            let a = try #require(try await store.get("topics/a"))
            #expect(a.value == bytes("one") && a.version == created && a.createdVersion == created)
            // Absent fails once it exists; a stale version fails; the right one succeeds.
            await #expect(throws: MetadataError.conflict(key: "topics/a", expected: .absent, actualVersion: created)) {
                try await store.put("topics/a", bytes("two"), expect: .absent)
            }
            let changed = try await store.put("topics/a", bytes("two"), expect: .version(created))
            #expect(changed > created)
            await #expect(throws: MetadataError.conflict(key: "topics/a", expected: .version(created), actualVersion: changed)) {
                try await store.put("topics/a", bytes("three"), expect: .version(created))
            }
            // Several keys at once: one failed check and nothing is written.
            await #expect(throws: MetadataError.self) {
                try await store.commit([
                    .put(key: "topics/b", value: bytes("b"), expect: .absent),
                    .check(key: "topics/a", expect: .version(created)),
                ])
            }
            #expect(try await store.get("topics/b") == nil)
            try await store.commit([
                .put(key: "topics/b", value: bytes("b"), expect: .absent),
                .put(key: "topics/c", value: bytes("c"), expect: .any),
                .check(key: "topics/a", expect: .version(changed)),
            ])
            #expect(try await store.list(prefix: "topics/").map(\.key) == ["topics/a", "topics/b", "topics/c"])
            #expect(try await store.list(prefix: "topic").count == 3)
            #expect(try await store.list(prefix: "nothing/").isEmpty)
            try await store.delete("topics/b")
            #expect(try await store.list(prefix: "topics/").map(\.key) == ["topics/a", "topics/c"])
            #expect(try await store.currentRevision() > changed)
        }
    }

    @Test func watchesDeliverChangesInOrderAndReplayFromARevision() async throws {
        try await withEtcd { _, store in
            let before = try await store.put("groups/x", bytes("0"))
            let replay = store.watch(prefix: "groups/", afterRevision: before - 1)
            var iterator = replay.makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first?.key == "groups/x" && first?.revision == before, "history after the revision is replayed")
            for i in 1...20 { try await store.put("groups/x", bytes("\(i)")) }
            try await store.delete("groups/x")
            try await store.put("other/y", bytes("not watched"))
            var seen: [String] = []
            while seen.count < 21, let event = try await iterator.next() {
                switch event.kind {
                case .put(let value): seen.append(String(decoding: value.value, as: UTF8.self))
                case .delete: seen.append("deleted")
                }
            }
            #expect(seen == (1...20).map(String.init) + ["deleted"])
        }
    }

    @Test func leasedKeysGoWithTheirLease() async throws {
        try await withEtcd { _, store in
            let lease = try await store.grantLease(ttlSeconds: 30)
            try await store.commit([.put(key: "nodes/1", value: bytes("127.0.0.1:9000"), expect: .absent)], lease: lease)
            #expect(try await store.keepAlive(lease) > 0)
            #expect(try await store.get("nodes/1") != nil)
            try await store.revokeLease(lease)
            #expect(try await store.get("nodes/1") == nil, "revoking (or expiry) removes the node's keys")
            await #expect(throws: EtcdLeaseExpired.self) { try await store.keepAlive(lease) }
        }
    }

    @Test func etcdGoingAwayFailsCallsClearlyAndAWatchResumesWithoutLoss() async throws {
        try await withEtcd { etcd, store in
            let start = try await store.put("logs/a", bytes("0"))
            var events = store.watch(prefix: "logs/", afterRevision: start).makeAsyncIterator()
            try await store.put("logs/a", bytes("1"))
            #expect(try await events.next()?.revision == start + 1)
            await etcd.stop()
            let error = await #expect(throws: MetadataError.self) { try await store.put("logs/a", bytes("lost")) }
            guard case .io(let why)? = error else {
                Issue.record("expected an I/O error naming etcd, got \(String(describing: error))")
                return
            }
            #expect(why.contains("is etcd running?"))
            try await etcd.start()
            try await store.put("logs/a", bytes("2"))
            try await store.put("logs/b", bytes("3"))
            var values: [String] = []
            while values.count < 2, let event = try await events.next() {
                if case .put(let value) = event.kind { values.append(String(decoding: value.value, as: UTF8.self)) }
            }
            #expect(values == ["2", "3"], "the watch reconnected after the restart and missed nothing")
        }
    }
}
