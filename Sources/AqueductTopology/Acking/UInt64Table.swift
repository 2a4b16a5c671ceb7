/// A hash table from nonzero 64-bit keys to values: open addressing, linear probing,
/// backward-shift deletion. For the ack paths, where `Dictionary`'s seeded SipHash
/// cost more than the rest of the bookkeeping; keys here are random tuple ids or
/// sequence numbers, so one multiply spreads them well enough.
struct UInt64Table<Value> {
    private var keys: [UInt64]
    private var values: [Value?]
    private var mask: Int
    private(set) var count = 0

    init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = Array(repeating: 0, count: size)
        values = Array(repeating: nil, count: size)
        mask = size - 1
    }

    @inline(__always)
    private func slot(of key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    subscript(key: UInt64) -> Value? {
        get {
            precondition(key != 0, "UInt64Table keys are nonzero")
            var index = slot(of: key)
            while keys[index] != 0 {
                if keys[index] == key { return values[index] }
                index = (index + 1) & mask
            }
            return nil
        }
        set {
            precondition(key != 0, "UInt64Table keys are nonzero")
            if let newValue {
                insert(key, newValue)
            } else {
                _ = removeValue(forKey: key)
            }
        }
    }

    private mutating func insert(_ key: UInt64, _ value: Value) {
        if (count + 1) * 2 > keys.count { grow() }
        var index = slot(of: key)
        while keys[index] != 0 {
            if keys[index] == key {
                values[index] = value
                return
            }
            index = (index + 1) & mask
        }
        keys[index] = key
        values[index] = value
        count += 1
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Value? {
        var index = slot(of: key)
        while keys[index] != 0 {
            if keys[index] == key {
                let removed = values[index]
                keys[index] = 0
                values[index] = nil
                count -= 1
                // Backward shift: move later entries of the run into the hole.
                var hole = index
                var next = (index + 1) & mask
                while keys[next] != 0 {
                    let home = slot(of: keys[next])
                    // Move if the hole lies cyclically between the entry's home and it.
                    if (next > hole && (home <= hole || home > next)) || (next < hole && (home <= hole && home > next)) {
                        keys[hole] = keys[next]
                        values[hole] = values[next]
                        keys[next] = 0
                        values[next] = nil
                        hole = next
                    }
                    next = (next + 1) & mask
                }
                return removed
            }
            index = (index + 1) & mask
        }
        return nil
    }

    private mutating func grow() {
        let oldKeys = keys
        let oldValues = values
        keys = Array(repeating: 0, count: oldKeys.count * 2)
        values = Array(repeating: nil, count: oldKeys.count * 2)
        mask = keys.count - 1
        count = 0
        for index in oldKeys.indices where oldKeys[index] != 0 { insert(oldKeys[index], oldValues[index]!) }
    }

    /// Every value (order unspecified).
    var allValues: [Value] {
        var found: [Value] = []
        found.reserveCapacity(count)
        for index in keys.indices where keys[index] != 0 { found.append(values[index]!) }
        return found
    }

    mutating func removeAll() {
        if count == 0 { return }
        for index in keys.indices { keys[index] = 0; values[index] = nil }
        count = 0
    }
}
