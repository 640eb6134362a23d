#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Harder workloads than the shared one, generated here from a seed (no download, the same
/// every run), with the shared workload's delay tiers: client k gets the delay and tier of
/// shared client k mod 20 (0.2 / 1.0 / 5.0 s: 14 fast, 4 medium, 2 slow of every 20).
public enum BenchWorkloads {
    /// The shared workload's digits, label-skewed much harder: Dirichlet(`concentration`)
    /// over `clients` clients (every client at least 5 rows), the shared test split.
    public static func dirichletDigits(concentration: Double = 0.1, clients: Int = 50, seed: UInt64 = 20_221) throws -> Workload {
        let shared = try SharedWorkload.load()
        let labels = shared.trainIndices.map { shared.dataset.labels[$0] }
        let parts = try Partitioner.dirichletLabelSkew(labels: labels, clients: clients, concentration: concentration, seed: seed,
                                                       minPartitionSize: 5)
        let clientRows = parts.map { $0.map { shared.trainIndices[$0] } }
        return try Workload(name: "digits-dirichlet-\(concentration)-\(clients)", dataset: shared.dataset, trainIndices: shared.trainIndices,
                            testIndices: shared.testIndices, clientIndices: clientRows,
                            clientDelaySeconds: (0..<clients).map { shared.clientDelaySeconds[$0 % shared.clientDelaySeconds.count] },
                            clientTiers: (0..<clients).map { shared.clientTiers.isEmpty ? "" : shared.clientTiers[$0 % shared.clientTiers.count] })
    }

    /// FedProx's Synthetic(alpha, beta) (Li et al., MLSys 2020; Shamir et al. 2014): 60
    /// features, 10 classes, `clients` clients each with its own model and its own feature
    /// distribution. Client k: u_k ~ N(0, alpha), B_k ~ N(0, beta), W_k, b_k ~ N(u_k, 1),
    /// v_k ~ N(B_k, 1) per feature, x ~ N(v_k, diag(j^-1.2)), y = argmax(W_k x + b_k). Sizes
    /// as FedProx draws them (lognormal(4, 2) + 50), capped at `maxSamples`; 20 % of each
    /// client's rows form the pooled test set.
    public static func synthetic(alpha: Double = 1, beta: Double = 1, clients: Int = 30, maxSamples: Int = 1000,
                                 seed: UInt64 = 20_222) throws -> Workload {
        let d = 60, classes = 10
        var rng = SplitMix64(seed: seed)
        var features: [Float] = []
        var labels: [Int] = []
        var clientRows: [[Int]] = []
        var train: [Int] = [], test: [Int] = []
        let sigma = (1...d).map { pow(Double($0), -1.2).squareRoot() }
        for _ in 0..<clients {
            let size = min(maxSamples, Int(exp(4 + 2 * rng.nextNormal())) + 50)
            let u = alpha.squareRoot() * rng.nextNormal()
            let b = beta.squareRoot() * rng.nextNormal()
            let w = (0..<(classes * d)).map { _ in u + rng.nextNormal() }
            let bias = (0..<classes).map { _ in u + rng.nextNormal() }
            let v = (0..<d).map { _ in b + rng.nextNormal() }
            var rows: [Int] = []
            for i in 0..<size {
                let x = (0..<d).map { v[$0] + sigma[$0] * rng.nextNormal() }
                var best = 0
                var bestScore = -Double.infinity
                for c in 0..<classes {
                    var s = bias[c]
                    for j in 0..<d { s += w[c * d + j] * x[j] }
                    if s > bestScore { (best, bestScore) = (c, s) }
                }
                let row = labels.count
                features += x.map { Float($0) }
                labels.append(best)
                // The last fifth of each client's rows is test data.
                if i < size - size / 5 { rows.append(row); train.append(row) } else { test.append(row) }
            }
            clientRows.append(rows)
        }
        let shared = try SharedWorkload.load()
        let dataset = try Dataset(features: features, labels: labels, featureCount: d, classCount: classes)
        return try Workload(name: "synthetic-\(alpha)-\(beta)-\(clients)", dataset: dataset, trainIndices: train, testIndices: test,
                            clientIndices: clientRows,
                            clientDelaySeconds: (0..<clients).map { shared.clientDelaySeconds[$0 % shared.clientDelaySeconds.count] },
                            clientTiers: (0..<clients).map { shared.clientTiers.isEmpty ? "" : shared.clientTiers[$0 % shared.clientTiers.count] })
    }
}
