import CAqueduct

/// Finds a byte pattern in a buffer at memchr speed (glibc's memmem).
public enum ByteSearch {
    /// The index of the first occurrence of `needle` in `haystack` at or after `from`.
    public static func firstIndex(of needle: [UInt8], in haystack: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        guard let base = haystack.baseAddress, from < haystack.count, !needle.isEmpty else { return nil }
        return needle.withUnsafeBytes { pattern -> Int? in
            guard let hit = aq_find_bytes(base + from, haystack.count - from, pattern.baseAddress!, pattern.count) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
    }
}
