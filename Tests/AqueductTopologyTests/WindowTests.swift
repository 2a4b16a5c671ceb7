@testable import AqueductTopology
import Testing

/// Window assignment and closing as scripts of (element, time) events.
@Suite struct WindowTests {
    typealias Reduce = WindowedReduce<String, Int>

    func summary(_ closed: [Reduce.Closed]) -> [String] {
        closed.map { "\($0.key)@\($0.start)-\($0.end)=\($0.value)/\($0.count)" }.sorted()
    }

    @Test func tumblingCountEmitsEverySizeElementsPerKey() {
        var windows = Reduce(config: .tumblingCount(3), reduce: +)
        var out: [String] = []
        for (index, key) in ["a", "b", "a", "a", "b", "a", "a", "a"].enumerated() {
            out += summary(windows.add(key: key, value: index, nowMilliseconds: 0))
        }
        #expect(out == ["a@0-3=5/3", "a@3-6=18/3"])  // a: 0+2+3, then 5+6+7
    }

    @Test func slidingCountEmitsTheLastSizeEverySlide() {
        var windows = Reduce(config: .slidingCount(size: 3, slide: 1), reduce: +)
        var out: [String] = []
        for value in 1...5 { out += summary(windows.add(key: "k", value: value, nowMilliseconds: 0)) }
        #expect(out == ["k@0-3=6/3", "k@1-4=9/3", "k@2-5=12/3"])
    }

    @Test func tumblingTimeClosesAtTheEndOfEachWindow() {
        var windows = Reduce(config: .tumblingTime(milliseconds: 1_000), reduce: +)
        _ = windows.add(key: "a", value: 1, nowMilliseconds: 100)
        _ = windows.add(key: "a", value: 2, nowMilliseconds: 999)
        _ = windows.add(key: "b", value: 5, nowMilliseconds: 500)
        _ = windows.add(key: "a", value: 10, nowMilliseconds: 1_000)
        #expect(windows.close(nowMilliseconds: 999).isEmpty)
        #expect(summary(windows.close(nowMilliseconds: 1_000)) == ["a@0-1000=3/2", "b@0-1000=5/1"])
        #expect(windows.close(nowMilliseconds: 1_500).isEmpty)
        #expect(summary(windows.close(nowMilliseconds: 2_100)) == ["a@1000-2000=10/1"])
    }

    @Test func slidingTimePutsAnElementInEveryWindowCoveringIt() {
        // 10 s windows every 2 s: an element at 11.5 s is in the windows starting 2, 4, 6, 8, 10 s.
        var windows = Reduce(config: .slidingTime(milliseconds: 10_000, slideMilliseconds: 2_000), reduce: +)
        _ = windows.add(key: "k", value: 1, nowMilliseconds: 11_500)
        _ = windows.add(key: "k", value: 1, nowMilliseconds: 12_100)
        let closed = windows.close(nowMilliseconds: 30_000)
        #expect(summary(closed) == ["k@10000-20000=2/2", "k@12000-22000=1/1", "k@2000-12000=1/1", "k@4000-14000=2/2",
                                    "k@6000-16000=2/2", "k@8000-18000=2/2"])
        #expect(closed.map(\.start) == closed.map(\.start).sorted(), "oldest windows first")
    }

    @Test func joinTypes() {
        func run(_ type: JoinType) -> [String] {
            var join = WindowedJoin<String, Int, String>(config: .tumblingTime(milliseconds: 100), type: type)
            _ = join.add(key: "both", left: 1, right: nil, nowMilliseconds: 10)
            _ = join.add(key: "both", left: nil, right: "x", nowMilliseconds: 20)
            _ = join.add(key: "both", left: 2, right: nil, nowMilliseconds: 30)
            _ = join.add(key: "left", left: 3, right: nil, nowMilliseconds: 40)
            _ = join.add(key: "right", left: nil, right: "y", nowMilliseconds: 50)
            _ = join.add(key: "both", left: nil, right: "late", nowMilliseconds: 150)  // next window
            return join.close(nowMilliseconds: 100).map { "\($0.key):\($0.left.map(String.init) ?? "-")/\($0.right ?? "-")" }.sorted()
        }
        #expect(run(.inner) == ["both:1/x", "both:2/x"])
        #expect(run(.outerLeft) == ["both:1/x", "both:2/x", "left:3/-"])
        #expect(run(.outerRight) == ["both:1/x", "both:2/x", "right:-/y"])
        #expect(run(.outer) == ["both:1/x", "both:2/x", "left:3/-", "right:-/y"])
    }

    @Test func windowConfigsAreChecked() {
        #expect(WindowConfig.tumblingCount(0).problem != nil)
        #expect(WindowConfig.slidingCount(size: 2, slide: 3).problem != nil)
        #expect(WindowConfig.slidingTime(milliseconds: 1_000, slideMilliseconds: 0).problem != nil)
        #expect(WindowConfig.slidingTime(milliseconds: 10_000, slideMilliseconds: 2_000).problem == nil)
    }
}
