import CAqueduct
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call on a file, with what was being done and to which path.
public struct FileIOError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// An open file used with positional I/O only (pread/pwrite), so one descriptor can be
/// shared by a writer and many readers without a shared file position.
///
/// Thread-safety: every method is a system call on an immutable descriptor; callers
/// coordinate which byte ranges they write.
public final class DataFile: @unchecked Sendable {
    public let path: String
    public let descriptor: Int32
    private let closed = Atomic<Bool>(false)

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Opens `path` for reading and writing, creating it when `create` is set.
    public static func open(_ path: String, create: Bool = true, readOnly: Bool = false) throws -> DataFile {
        var flags: Int32 = readOnly ? O_RDONLY : O_RDWR
        if create { flags |= O_CREAT }
        flags |= O_CLOEXEC
        let fd = Glibc.open(path, flags, 0o644)
        guard fd >= 0 else { throw FileIOError("open", path: path, errno: errno) }
        return DataFile(path: path, descriptor: fd)
    }

    deinit { close() }

    public func close() {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) { _ = Glibc.close(descriptor) }
    }

    /// The file's size in bytes.
    public func size() throws -> Int64 {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw FileIOError("fstat", path: path, errno: errno) }
        return Int64(status.st_size)
    }

    /// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        var written = 0
        while written < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError("pwrite", path: path, errno: errno)
            }
            written += n
        }
    }

    /// Writes the readable bytes of `buffers`, one after another, at `offset`, without
    /// copying them into one buffer first (pwritev). With `durably`, they are on stable
    /// storage on return, as after `syncData`.
    public func write(gathering buffers: [ByteBuffer], at offset: Int64, durably: Bool) throws {
        var vectors: [iovec] = []
        vectors.reserveCapacity(buffers.count)
        var storages: [Unmanaged<AnyObject>] = []
        storages.reserveCapacity(buffers.count)
        defer { for storage in storages { storage.release() } }
        for buffer in buffers where buffer.readableBytes > 0 {
            // The storage is retained until the write is done, so the pointer stays valid.
            buffer.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                storages.append(storage.retain())
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
            }
        }
        guard !vectors.isEmpty else { return }
        let written = vectors.withUnsafeMutableBufferPointer { vectors in
            aq_write_gathered(descriptor, vectors.baseAddress, Int32(vectors.count), offset, durably ? 1 : 0)
        }
        if written < 0 { throw FileIOError(durably ? "pwritev2(RWF_DSYNC)" : "pwritev", path: path, errno: errno) }
    }

    /// Writes the readable bytes of `buffer` at `offset`.
    public func write(_ buffer: ByteBuffer, at offset: Int64) throws {
        try buffer.withUnsafeReadableBytes { try write($0, at: offset) }
    }

    /// Writes `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Reads into `destination` from `offset` until it is full or the file ends;
    /// returns the number of bytes read.
    public func read(into destination: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var done = 0
        while done < destination.count {
            let n = pread(descriptor, destination.baseAddress! + done, destination.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError("pread", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads up to `count` bytes from `offset` into a new buffer (shorter at end of file).
    public func read(count: Int, at offset: Int64, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            try read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: offset)
        }
        return buffer
    }

    /// Cuts the file to `size` bytes.
    public func truncate(to size: Int64) throws {
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw FileIOError("ftruncate", path: path, errno: errno) }
    }

    /// fdatasync: the data, and the metadata needed to read it, are on stable storage.
    public func syncData() throws {
        while fdatasync(descriptor) != 0 {
            if errno == EINTR { continue }
            throw FileIOError("fdatasync", path: path, errno: errno)
        }
    }

    /// fsync: data and all metadata on stable storage.
    public func sync() throws {
        while fsync(descriptor) != 0 {
            if errno == EINTR { continue }
            throw FileIOError("fsync", path: path, errno: errno)
        }
    }

    /// Starts writing a range back to disk without waiting, so that a later `syncData`
    /// finds little left to do and does not stall other syncs on the same disk.
    public func startWriteback(offset: Int64, length: Int64) {
        _ = aq_start_writeback(descriptor, offset, length)
    }

}

/// Directory and whole-file operations with the durability steps spelled out.
public enum FileSystem {
    /// Creates `path` and its parents when missing.
    public static func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw FileIOError("mkdir", path: path, errno: EIO)
        }
    }

    /// fsyncs a directory so that creations, renames and removals in it are durable.
    public static func syncDirectory(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError("open directory", path: path, errno: errno) }
        defer { _ = Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw FileIOError("fsync directory", path: path, errno: errno) }
    }

    /// Replaces the file at `path` with `contents` so that after a crash the file holds
    /// either the old or the new contents, never a mix: write a temporary file, fsync
    /// it, rename it over the old one, fsync the directory.
    public static func atomicReplace(_ path: String, contents: [UInt8]) throws {
        let temporary = path + ".tmp"
        let file = try DataFile.open(temporary, create: true)
        try file.truncate(to: 0)
        try file.write(contents, at: 0)
        try file.sync()
        file.close()
        guard rename(temporary, path) == 0 else { throw FileIOError("rename", path: temporary, errno: errno) }
        try syncDirectory(directoryName(of: path))
    }

    /// The whole file at `path`, or nil when it does not exist.
    public static func readWholeFile(_ path: String) throws -> [UInt8]? {
        guard exists(path) else { return nil }
        let file = try DataFile.open(path, create: false, readOnly: true)
        let size = Int(try file.size())
        var bytes = [UInt8](repeating: 0, count: size)
        let read = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        return Array(bytes[0..<read])
    }

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// Removes a file; no error when it is already gone.
    public static func removeFile(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw FileIOError("unlink", path: path, errno: errno) }
    }

    /// Removes a directory and everything under it; no error when it is already gone.
    public static func removeTree(_ path: String) throws {
        guard exists(path) else { return }
        do { try FileManager.default.removeItem(atPath: path) } catch {
            throw FileIOError("remove", path: path, errno: EIO)
        }
    }

    /// Names of the entries of a directory (not recursive); empty when it does not exist.
    public static func listDirectory(_ path: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    }

    public static func directoryName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }
}
