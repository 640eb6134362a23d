import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import Foundation

/// Byzantine clients for robustness tests and benchmarks (`apiary demo --attack`, `apiary
/// bench --only attacks`). They are trainers: the client runtime sends what they return like
/// any other update, so nothing of this is in the production client.
public enum AttackKind: String, Sendable, Hashable, CaseIterable {
    /// Sends `base - k (trained - base)`: the honest step negated, `k` = `AttackPlan.flipFactor`
    /// (default 4: the plain negation, k = 1, slows FedAsync down without stopping it).
    case signFlip = "sign-flip"
    /// Sends `base + 10 (trained - base)` (`AttackPlan.scale`).
    case scaling
    /// Sends `base + N(0, s^2)` per parameter, `s = ||trained - base|| / sqrt(parameters)`: noise
    /// of the honest step's norm.
    case noise
    /// Trains honestly on its data with every label `y` replaced by `classes - 1 - y`.
    case labelFlip = "label-flip"
    /// "A little is enough" (Baruch et al., NeurIPS 2019): the attackers collude; each trains
    /// every attacker's data from the same base, takes the coordinate-wise mean `mu` and standard
    /// deviation `sigma` of those honest steps, and sends `base + mu - z sigma`, with
    /// `z = Phi^-1((n - s) / n)`, `s = floor(n / 2 + 1) - m` (n clients, m attackers).
    case littleIsEnough = "little-is-enough"
}

/// A defence against attacking clients, as `apiary demo --defence` and the attack bench set it
/// on an aggregator's config.
public enum Defence: String, Sendable, Hashable, CaseIterable {
    /// The rule as it is.
    case none
    /// Updates clipped to an L2 bound of `update - model` (`limits.max_update_norm`, policy clip).
    case norm
    /// FedAsync's anomaly filter (`robust.anomaly.*`).
    case anomaly
    /// FedBuff's coordinate-wise median over the buffer.
    case median
    /// FedBuff's trimmed mean over the buffer.
    case trimmedMean = "trimmed-mean"

    /// The bound of `norm` when none is given: the digits clients' honest `update - model`
    /// norms under FedAsync are 0.4 (median) to 0.8 early on, 0.16 to 0.35 later.
    public static let defaultNormBound = 0.5
    /// beta of `trimmedMean` when none is given.
    public static let defaultTrimFraction = 0.3

    /// Sets the defence on `c`; `median` and `trimmedMean` change its FedBuff buffer (set it
    /// first). Nil bound or fraction: the defaults above.
    public func apply(to c: inout AggregatorConfig, normBound: Double? = nil, trimFraction: Double? = nil,
                      anomaly: AnomalyConfig = AnomalyConfig()) {
        switch self {
        case .none:
            break
        case .norm:
            c.maxUpdateNorm = normBound ?? Self.defaultNormBound
            c.normPolicy = .clip
        case .anomaly:
            c.anomaly = anomaly
        case .median:
            c.buffer?.aggregate = .median
        case .trimmedMean:
            c.buffer?.aggregate = .trimmedMean
            c.buffer?.trimFraction = trimFraction ?? Self.defaultTrimFraction
        }
    }
}

/// Which clients attack, and how.
public struct AttackPlan: Sendable, Hashable {
    public var kind: AttackKind
    /// The share of the fleet that attacks, in (0, 1): `round(fraction * n)` clients (at least one).
    public var fraction: Double
    /// The factor of `scaling`.
    public var scale: Double
    /// k of `signFlip`.
    public var flipFactor: Double
    /// Seeds the noise.
    public var seed: UInt64

    public init(kind: AttackKind, fraction: Double = 0.2, scale: Double = 10, flipFactor: Double = 4, seed: UInt64 = 0) {
        self.kind = kind
        self.fraction = fraction
        self.scale = scale
        self.flipFactor = flipFactor
        self.seed = seed
    }

    /// Why the plan is invalid (nil when valid).
    public func validationError() -> String? {
        guard fraction.isFinite, fraction > 0, fraction < 1 else { return "attackers must be a fraction in (0, 1), not \(fraction)" }
        guard scale.isFinite, flipFactor.isFinite else { return "the attack's factors must be finite" }
        return nil
    }

    /// The attacking clients of a fleet of `n`: `round(fraction * n)` of them (at least one),
    /// spread evenly over the ids (so over the workload's delay tiers).
    public func attackers(clients n: Int) -> [Int] {
        let m = min(n, max(1, Int((fraction * Double(n)).rounded())))
        return (0..<m).map { $0 * n / m }
    }

    /// z of "a little is enough" for `n` clients of which `m` attack (0 when the formula's
    /// quantile is at or below 1/2).
    public static func littleIsEnoughZ(clients n: Int, attackers m: Int) -> Double {
        let s = n / 2 + 1 - m
        let p = Double(n - s) / Double(n)
        guard p > 0.5 else { return 0 }
        guard p < 1 else { return 4 }
        // Phi^-1(p) by bisection on Phi(x) = (1 + erf(x / sqrt 2)) / 2.
        var lo = 0.0, hi = 10.0
        for _ in 0..<100 {
            let mid = (lo + hi) / 2
            if (1 + erf(mid / 2.0.squareRoot())) / 2 < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }
}

/// A client that attacks (see `AttackKind`). `honest` trains the client's data (with flipped
/// labels for `labelFlip`); `colluders` are the honest trainers of every attacker, without
/// delays (`littleIsEnough` only).
public struct AttackingTrainer: Trainer {
    public let kind: AttackKind
    public let honest: any Trainer
    public let colluders: [any Trainer]
    public let scale: Double
    public let flipFactor: Double
    public let z: Double
    public let seed: UInt64
    public var layout: ParameterLayout { honest.layout }

    public init(kind: AttackKind, honest: any Trainer, colluders: [any Trainer] = [], scale: Double = 10, flipFactor: Double = 4, z: Double = 0,
                seed: UInt64 = 0) {
        self.kind = kind
        self.honest = honest
        self.colluders = colluders
        self.scale = scale
        self.flipFactor = flipFactor
        self.z = z
        self.seed = seed
    }

    public func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        var r = try await honest.train(model: model, config: config, round: round)
        let base = model.parameters
        let n = base.count
        switch kind {
        case .labelFlip:
            return r
        case .signFlip:
            let k = Float(flipFactor)
            for i in 0..<n { r.parameters[i] = base[i] - k * (r.parameters[i] - base[i]) }
        case .scaling:
            let k = Float(scale)
            for i in 0..<n { r.parameters[i] = base[i] + k * (r.parameters[i] - base[i]) }
        case .noise:
            var sum = 0.0
            for i in 0..<n { let d = Double(r.parameters[i] - base[i]); sum += d * d }
            let s = (sum / Double(max(n, 1))).squareRoot()
            var rng = SplitMix64(deriving: seed, UInt64(truncatingIfNeeded: round), model.version)
            for i in 0..<n { r.parameters[i] = base[i] + Float(s * rng.nextNormal()) }
        case .littleIsEnough:
            var mean = [Double](repeating: 0, count: n), square = [Double](repeating: 0, count: n)
            for c in colluders {
                let p = try await c.train(model: model, config: config, round: round).parameters
                for i in 0..<n {
                    let d = Double(p[i] - base[i])
                    mean[i] += d
                    square[i] += d * d
                }
            }
            let m = Double(max(colluders.count, 1))
            for i in 0..<n {
                let mu = mean[i] / m
                let sigma = max(0, square[i] / m - mu * mu).squareRoot()
                r.parameters[i] = base[i] + Float(mu - z * sigma)
            }
        }
        r.loss = nil
        r.metrics = [:]
        return r
    }
}

extension Dataset {
    /// The same rows with every label `y` replaced by `classCount - 1 - y`.
    public var labelsFlipped: Dataset {
        // The rows and classes of a valid data set make a valid one.
        try! Dataset(features: features, labels: labels.map { classCount - 1 - $0 }, featureCount: featureCount, classCount: classCount)
    }
}

extension InProcessFleet {
    /// The first `clients` clients of `workload` (softmax regression on their partitions, the
    /// workload's delays times `delayScale`), the ones `attack` picks attacking.
    public static func workloadMembers(workload: Workload, clients: Int, delayScale: Double = 1, shuffleSeed: UInt64 = 0,
                               attack: AttackPlan? = nil) -> [Member] {
        let attackers = Set(attack?.attackers(clients: clients) ?? [])
        let colluders = attack?.kind == .littleIsEnough
            ? attackers.sorted().map { SoftmaxRegression(dataset: workload.trainSet(client: $0), clientID: $0, shuffleSeed: shuffleSeed) as any Trainer }
            : []
        let z = AttackPlan.littleIsEnoughZ(clients: clients, attackers: attackers.count)
        return (0..<clients).map { k in
            let delay = workload.delaySeconds(client: k) * delayScale
            let delayDuration: Duration? = delay > 0 ? .milliseconds(Int64(delay * 1000)) : nil
            guard let attack, attackers.contains(k) else {
                let trainer = SoftmaxRegression(dataset: workload.trainSet(client: k), clientID: k, shuffleSeed: shuffleSeed, delay: delayDuration)
                return Member(trainer: trainer, delaySeconds: delay)
            }
            let data = attack.kind == .labelFlip ? workload.trainSet(client: k).labelsFlipped : workload.trainSet(client: k)
            let honest = SoftmaxRegression(dataset: data, clientID: k, shuffleSeed: shuffleSeed, delay: delayDuration)
            let trainer = AttackingTrainer(kind: attack.kind, honest: honest, colluders: colluders, scale: attack.scale, flipFactor: attack.flipFactor, z: z,
                                           seed: SplitMix64.mix(attack.seed ^ UInt64(k)))
            return Member(trainer: trainer, delaySeconds: delay)
        }
    }
}
