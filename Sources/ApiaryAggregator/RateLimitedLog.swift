import ApiaryCore

/// Logs the first occurrence of each reason, then at most one line per reason per interval
/// with the number suppressed, so a flood of bad input cannot flood the log.
struct RateLimitedLog {
    let interval: Duration
    private var last: [RejectReason: ContinuousClock.Instant] = [:]
    private var count: [RejectReason: Int] = [:]

    init(interval: Duration) { self.interval = interval }

    mutating func shouldLog(_ reason: RejectReason) -> Bool {
        let now = ContinuousClock.now
        if let t = last[reason], now - t < interval {
            count[reason, default: 0] += 1
            return false
        }
        last[reason] = now
        return true
    }

    mutating func suppressed(_ reason: RejectReason) -> Int {
        defer { count[reason] = 0 }
        return count[reason, default: 0]
    }
}
