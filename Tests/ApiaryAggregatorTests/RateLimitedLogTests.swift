@testable import ApiaryAggregator
import ApiaryCore
import Testing

/// The rule behind "update rejected" lines, with the time given: no clock is waited for.
@Suite("A rate-limited log")
struct RateLimitedLogTests {
    let t0 = ContinuousClock.now

    /// Which of `occurrences` (reason, milliseconds after t0) are logged, in order.
    static func logged(_ log: inout RateLimitedLog, _ occurrences: [(RejectReason, Int)], from t0: ContinuousClock.Instant) -> [Bool] {
        occurrences.map { log.shouldLog($0.0, now: t0 + .milliseconds($0.1)) }
    }

    @Test("the first occurrence of a reason is logged, repeats within the interval are counted, the next one after it is logged")
    func onePerInterval() {
        var log = RateLimitedLog(interval: .seconds(5))
        let burst = Self.logged(&log, [(.duplicate, 0)] + (1...99).map { (.duplicate, 40 * $0) } + [(.duplicate, 4_999)], from: t0)
        #expect(burst == [true] + [Bool](repeating: false, count: 100))
        let first = log.suppressed(.duplicate), again = log.suppressed(.duplicate)
        #expect(first == 100)
        #expect(again == 0, "reading the count resets it")
        // The interval runs from the last logged line, not from the first occurrence.
        #expect(Self.logged(&log, [(.duplicate, 5_000), (.duplicate, 9_000), (.duplicate, 10_000)], from: t0) == [true, false, true])
    }

    @Test("each reason has its own interval")
    func perReason() {
        var log = RateLimitedLog(interval: .seconds(5))
        let decisions = Self.logged(&log, [(.duplicate, 0), (.tooStale, 1_000), (.duplicate, 2_000), (.tooStale, 2_000)], from: t0)
        #expect(decisions == [true, true, false, false])
        let d = log.suppressed(.duplicate), s = log.suppressed(.tooStale), m = log.suppressed(.malformed)
        #expect(d == 1 && s == 1 && m == 0)
    }
}
