/// Seeded, deterministic ways of splitting a data set over federated clients. Each returns one
/// index list per client, sorted ascending; together they cover every index exactly once.
/// Randomness comes only from `SplitMix64`, so a seed gives the same split on every run and
/// platform.
public enum Partitioner {
    /// Splits `0..<count` uniformly at random into `clients` parts whose sizes differ by at
    /// most one (the first `count % clients` parts get the extra item).
    /// - Throws: `PartitionError.invalidClientCount` if `clients < 1`,
    ///   `.invalidItemCount` if `count < 0`.
    public static func iid(count: Int, clients: Int, seed: UInt64) throws(PartitionError) -> [[Int]] {
        guard clients >= 1 else { throw .invalidClientCount(clients) }
        guard count >= 0 else { throw .invalidItemCount(count) }
        var rng = SplitMix64(seed: seed)
        let perm = rng.permutation(count)
        let base = count / clients
        let extra = count % clients
        var parts: [[Int]] = []
        parts.reserveCapacity(clients)
        var start = 0
        for c in 0..<clients {
            let size = base + (c < extra ? 1 : 0)
            parts.append(perm[start..<(start + size)].sorted())
            start += size
        }
        return parts
    }

    /// Dirichlet label skew: for every distinct label (ascending), the positions carrying it
    /// are shuffled and cut among the clients by proportions drawn from a symmetric
    /// Dirichlet(`concentration`); small concentrations give each client few labels, large
    /// ones approach an IID split. Mirrors the shared workload's algorithm
    /// (`cuts = floor(cumsum(p) * n_k)`), with this module's generator instead of numpy's.
    /// Redraws from the same generator stream until every client has at least
    /// `minPartitionSize` items.
    /// - Parameters:
    ///   - labels: the label of each item; the result indexes into this array.
    ///   - maxAttempts: how many complete draws to try before giving up.
    /// - Throws: `PartitionError` for invalid arguments, or `.minPartitionSizeUnreachable` when
    ///   `maxAttempts` draws all left some client too small (or it is impossible outright).
    public static func dirichletLabelSkew(
        labels: [Int], clients: Int, concentration: Double, seed: UInt64,
        minPartitionSize: Int = 0, maxAttempts: Int = 1000
    ) throws(PartitionError) -> [[Int]] {
        guard clients >= 1 else { throw .invalidClientCount(clients) }
        guard concentration > 0 && concentration.isFinite else { throw .invalidConcentration(concentration) }
        guard minPartitionSize >= 0 else { throw .invalidMinPartitionSize(minPartitionSize) }
        let needed = minPartitionSize.multipliedReportingOverflow(by: clients)
        guard !needed.overflow, needed.partialValue <= labels.count else {
            throw .minPartitionSizeUnreachable(minPartitionSize: minPartitionSize, attempts: 0)
        }

        // Positions of each distinct label, ascending, for labels in ascending order.
        var byLabel: [Int: [Int]] = [:]
        for (i, y) in labels.enumerated() { byLabel[y, default: []].append(i) }
        let groups = byLabel.keys.sorted().map { byLabel[$0]! }

        var rng = SplitMix64(seed: seed)
        for _ in 0..<max(maxAttempts, 1) {
            var parts = [[Int]](repeating: [], count: clients)
            for group in groups {
                var idx = group
                rng.shuffle(&idx)
                let p = rng.nextDirichlet(concentration: concentration, count: clients)
                let n = idx.count
                var cumulative = 0.0
                var start = 0
                for c in 0..<clients {
                    let end: Int
                    if c == clients - 1 {
                        end = n
                    } else {
                        cumulative += p[c]
                        end = min(max(Int(cumulative * Double(n)), start), n)
                    }
                    parts[c].append(contentsOf: idx[start..<end])
                    start = end
                }
            }
            if parts.allSatisfy({ $0.count >= minPartitionSize }) {
                return parts.map { $0.sorted() }
            }
        }
        throw .minPartitionSizeUnreachable(minPartitionSize: minPartitionSize, attempts: max(maxAttempts, 1))
    }
}
