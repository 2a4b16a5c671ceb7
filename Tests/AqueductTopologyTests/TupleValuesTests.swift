@testable import AqueductTopology
import Testing

/// `TupleValues`: inline up to two values, an array beyond, the same behaviour either way.
struct TupleValuesTests {
    static let samples: [[TupleValue]] = [
        [], [.int(1)], [.string("a"), .int(2)], [.null, .bool(true), .double(1.5)],
        [.string("partition"), .int(3), .bytes([1, 2]), .list([.int(1), .string("x")]), .null],
    ]

    @Test(arguments: samples)
    func behavesLikeItsArray(values: [TupleValue]) {
        let stored = TupleValues(values)
        #expect(stored.count == values.count)
        #expect(Array(stored) == values)
        #expect(stored.array == values)
        for index in values.indices { #expect(stored[index] == values[index]) }
        #expect(stored == TupleValues(values))
        #expect(stored.hashValue == TupleValues(values).hashValue)
        #expect(stored.description == "[" + values.map(\.description).joined(separator: ", ") + "]")
        #expect(TupleValues(values.reversed()).count == values.count)
    }

    @Test func differentValuesDiffer() {
        #expect(TupleValues([.int(1)]) != TupleValues([.int(1), .null]))
        #expect(TupleValues([.int(1), .int(2)]) != TupleValues([.int(2), .int(1)]))
        #expect(TupleValues([.int(1), .int(2), .int(3)]) != TupleValues([.int(1), .int(2)]))
        let literal: TupleValues = [.string("k"), .int(9)]
        #expect(literal == TupleValues(.string("k"), .int(9)))
    }

    /// A tuple's values read back the same through names and positions.
    @Test func tuplesReadTheirValues() {
        let tuple = Tuple(values: ["word", 3], fields: ["word", "count"])
        #expect(tuple.string("word") == "word")
        #expect(tuple.int("count") == 3)
        #expect(tuple[1] == .int(3))
        #expect(tuple["missing"] == .null)
        #expect(tuple.values == ["word", 3])
    }
}
