extension String {
    /// The longest prefix of at most `bytes` UTF-8 bytes, of whole characters: a
    /// client's text cut to fit a field or a log line.
    public func utf8Prefix(_ bytes: Int) -> String {
        guard utf8.count > bytes else { return self }
        var end = startIndex
        var used = 0
        for index in indices {
            let width = self[index].utf8.count
            if used + width > bytes { break }
            used += width
            end = self.index(after: index)
        }
        return String(self[..<end])
    }
}
