/// Coordinate-wise robust statistics of a FedBuff buffer's deltas (Yin et al., "Byzantine-
/// robust distributed learning", ICML 2018). Each coordinate is taken on its own, so
/// parameter shards, each holding a range of coordinates, compute exactly the slices of the
/// one-process result.
///
/// - median: of the n values (the mean of the two middle ones for even n); an attacker can
///   move it only within the honest values' range while attackers are fewer than n / 2:
///   it tolerates `ceil(n / 2) - 1` attackers per buffer.
/// - trimmed mean: drop the `t` largest and `t` smallest values, average the `n - 2t` others;
///   it tolerates `t` attackers per buffer (`t = floor(beta * n)`).
enum RobustAggregate {
    /// The coordinate-wise median (`trim` nil) or `trim`-trimmed mean of `deltas` (all the
    /// same count, at least one; `2 * trim < deltas.count`).
    static func coordinateWise(_ deltas: [[Float]], trim: Int?) -> [Float] {
        guard let first = deltas.first else { return [] }
        let n = deltas.count
        precondition(deltas.allSatisfy { $0.count == first.count }, "deltas of different sizes")
        if let t = trim { precondition(t >= 0 && 2 * t < n, "trim \(t) leaves nothing of \(n) deltas") }
        var out = [Float](repeating: 0, count: first.count)
        var column = [Float](repeating: 0, count: n)
        for i in 0..<first.count {
            for j in 0..<n { column[j] = deltas[j][i] }
            column.sort()
            if let t = trim {
                var s = 0.0
                for j in t..<(n - t) { s += Double(column[j]) }
                out[i] = Float(s / Double(n - 2 * t))
            } else {
                out[i] = n % 2 == 1 ? column[n / 2] : Float((Double(column[n / 2 - 1]) + Double(column[n / 2])) / 2)
            }
        }
        return out
    }
}
