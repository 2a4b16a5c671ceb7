/// Which elements a windowed operation combines (Heron's WindowConfig).
public enum WindowConfig: Sendable, Equatable {
    /// Every `size` elements of a key form a window.
    case tumblingCount(Int)
    /// Windows of the last `size` elements of a key, one every `slide` elements.
    case slidingCount(size: Int, slide: Int)
    /// Windows of `milliseconds`, back to back (processing time).
    case tumblingTime(milliseconds: Int64)
    /// Windows of `milliseconds`, one starting every `slideMilliseconds`.
    case slidingTime(milliseconds: Int64, slideMilliseconds: Int64)

    var problem: String? {
        switch self {
        case .tumblingCount(let size): size < 1 ? "count window size must be at least 1 (is \(size))" : nil
        case .slidingCount(let size, let slide):
            size < 1 || slide < 1 || slide > size ? "sliding count window needs 1 <= slide <= size (size \(size), slide \(slide))" : nil
        case .tumblingTime(let length): length < 1 ? "time window must be at least 1 ms (is \(length))" : nil
        case .slidingTime(let length, let slide):
            length < 1 || slide < 1 || slide > length ? "sliding time window needs 1 ms <= slide <= length (length \(length), slide \(slide))" : nil
        }
    }

    var isTime: Bool {
        switch self {
        case .tumblingTime, .slidingTime: true
        default: false
        }
    }

    /// How often a time window's task must look for windows to close.
    var tickMilliseconds: Int64 {
        switch self {
        case .tumblingTime(let length): max(1, min(length, 1_000) / 4)
        case .slidingTime(_, let slide): max(1, min(slide, 1_000) / 4)
        default: 1_000
        }
    }
}

/// Per-key reductions over windows, pure (time comes in as milliseconds). Time windows
/// keep one running reduction per (key, window start), so memory is keys × windows
/// open, not elements; count windows keep the last `size` elements of each key.
struct WindowedReduce<Key: Hashable, Value> {
    struct Closed {
        var key: Key
        var start: Int64
        var end: Int64
        var count: Int64
        var value: Value
    }

    private let config: WindowConfig
    private let reduce: (Value, Value) -> Value
    private var open: [Int64: [Key: (value: Value, count: Int64)]] = [:]
    private var recent: [Key: (values: [Value], seen: Int64)] = [:]

    init(config: WindowConfig, reduce: @escaping (Value, Value) -> Value) {
        self.config = config
        self.reduce = reduce
    }

    /// Adds an element; count windows that fill are returned at once.
    mutating func add(key: Key, value: Value, nowMilliseconds now: Int64) -> [Closed] {
        switch config {
        case .tumblingTime(let length):
            accumulate(key: key, value: value, start: now - mod(now, length))
            return []
        case .slidingTime(let length, let slide):
            var start = now - mod(now, slide)
            while start > now - length {
                accumulate(key: key, value: value, start: start)
                start -= slide
            }
            return []
        case .tumblingCount(let size):
            return addCounted(key: key, value: value, size: size, slide: size)
        case .slidingCount(let size, let slide):
            return addCounted(key: key, value: value, size: size, slide: slide)
        }
    }

    /// Closes the time windows that ended at or before `now`, oldest first.
    mutating func close(nowMilliseconds now: Int64) -> [Closed] {
        let length: Int64
        switch config {
        case .tumblingTime(let size): length = size
        case .slidingTime(let size, _): length = size
        default: return []
        }
        var closed: [Closed] = []
        for start in open.keys.sorted() where start + length <= now {
            for (key, entry) in open[start]! {
                closed.append(Closed(key: key, start: start, end: start + length, count: entry.count, value: entry.value))
            }
            open[start] = nil
        }
        return closed
    }

    private mutating func accumulate(key: Key, value: Value, start: Int64) {
        if let existing = open[start]?[key] {
            open[start]![key] = (reduce(existing.value, value), existing.count + 1)
        } else {
            open[start, default: [:]][key] = (value, 1)
        }
    }

    private mutating func addCounted(key: Key, value: Value, size: Int, slide: Int) -> [Closed] {
        var entry = recent[key] ?? ([], 0)
        entry.values.append(value)
        if entry.values.count > size { entry.values.removeFirst(entry.values.count - size) }
        entry.seen += 1
        var closed: [Closed] = []
        if entry.seen >= Int64(size) && (entry.seen - Int64(size)) % Int64(slide) == 0 {
            var total = entry.values[0]
            for element in entry.values.dropFirst() { total = reduce(total, element) }
            closed.append(Closed(key: key, start: entry.seen - Int64(size), end: entry.seen, count: Int64(entry.values.count), value: total))
            if size == slide { entry.values.removeAll(keepingCapacity: true) }
        }
        recent[key] = entry
        return closed
    }

    private func mod(_ value: Int64, _ divisor: Int64) -> Int64 {
        let remainder = value % divisor
        return remainder < 0 ? remainder + divisor : remainder
    }
}

/// How a windowed join pairs the two sides (Heron's JoinType).
public enum JoinType: Sendable {
    /// Pairs of elements with equal keys in the same window.
    case inner
    /// Also the left elements with no match (right side nil).
    case outerLeft
    /// Also the right elements with no match (left side nil).
    case outerRight
    /// Both.
    case outer
}

/// A windowed equi-join, pure: elements of both sides are kept per window and key until
/// the window closes, then paired.
struct WindowedJoin<Key: Hashable, Left, Right> {
    struct Joined {
        var key: Key
        var start: Int64
        var end: Int64
        var left: Left?
        var right: Right?
    }

    private let config: WindowConfig
    private let type: JoinType
    private var open: [Int64: [Key: (left: [Left], right: [Right])]] = [:]
    private var counted: [Key: (left: [Left], right: [Right], seen: Int64)] = [:]

    init(config: WindowConfig, type: JoinType) {
        self.config = config
        self.type = type
    }

    mutating func add(key: Key, left: Left?, right: Right?, nowMilliseconds now: Int64) -> [Joined] {
        switch config {
        case .tumblingTime(let length):
            store(key: key, left: left, right: right, start: now - ((now % length) + length) % length)
            return []
        case .slidingTime(let length, let slide):
            var start = now - ((now % slide) + slide) % slide
            while start > now - length {
                store(key: key, left: left, right: right, start: start)
                start -= slide
            }
            return []
        case .tumblingCount(let size), .slidingCount(let size, _):
            // Count windows count the elements of a key on both sides together.
            var entry = counted[key] ?? ([], [], 0)
            if let left { entry.left.append(left) }
            if let right { entry.right.append(right) }
            entry.seen += 1
            var joined: [Joined] = []
            if entry.seen % Int64(size) == 0 {
                joined = pairs(key: key, start: entry.seen - Int64(size), end: entry.seen, left: entry.left, right: entry.right)
                entry.left.removeAll()
                entry.right.removeAll()
            }
            counted[key] = entry
            return joined
        }
    }

    mutating func close(nowMilliseconds now: Int64) -> [Joined] {
        let length: Int64
        switch config {
        case .tumblingTime(let size): length = size
        case .slidingTime(let size, _): length = size
        default: return []
        }
        var joined: [Joined] = []
        for start in open.keys.sorted() where start + length <= now {
            for (key, sides) in open[start]! {
                joined += pairs(key: key, start: start, end: start + length, left: sides.left, right: sides.right)
            }
            open[start] = nil
        }
        return joined
    }

    private mutating func store(key: Key, left: Left?, right: Right?, start: Int64) {
        var sides = open[start]?[key] ?? ([], [])
        if let left { sides.left.append(left) }
        if let right { sides.right.append(right) }
        open[start, default: [:]][key] = sides
    }

    private func pairs(key: Key, start: Int64, end: Int64, left: [Left], right: [Right]) -> [Joined] {
        var joined: [Joined] = []
        for l in left {
            for r in right { joined.append(Joined(key: key, start: start, end: end, left: l, right: r)) }
        }
        if right.isEmpty && (type == .outerLeft || type == .outer) {
            for l in left { joined.append(Joined(key: key, start: start, end: end, left: l, right: nil)) }
        }
        if left.isEmpty && (type == .outerRight || type == .outer) {
            for r in right { joined.append(Joined(key: key, start: start, end: end, left: nil, right: r)) }
        }
        return joined
    }
}
