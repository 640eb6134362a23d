import ApiaryCore

/// Logs the first occurrence of each reason, then at most one line per reason per interval
/// with the number suppressed, so a flood of bad input cannot flood the log.
///
/// The time is a parameter (as in `FedAvgRound.closeRoundIfReady(now:)`), so that the rule
/// can be checked without waiting for a clock.
struct RateLimitedLog {
    let interval: Duration
    private var last: [RejectReason: ContinuousClock.Instant] = [:]
    private var count: [RejectReason: Int] = [:]

    init(interval: Duration) { self.interval = interval }

    /// Whether an occurrence of `reason` at `now` is logged; if not, it is counted as suppressed.
    mutating func shouldLog(_ reason: RejectReason, now: ContinuousClock.Instant) -> Bool {
        if let t = last[reason], now - t < interval {
            count[reason, default: 0] += 1
            return false
        }
        last[reason] = now
        return true
    }

    /// The occurrences of `reason` suppressed since this was last asked; resets the count.
    mutating func suppressed(_ reason: RejectReason) -> Int {
        defer { count[reason] = 0 }
        return count[reason, default: 0]
    }
}
