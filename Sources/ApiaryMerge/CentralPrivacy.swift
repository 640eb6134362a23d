import ApiaryCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Central differential privacy for FedBuff (DP-FedBuff; the DP-FedAvg recipe of McMahan et
/// al., ICLR 2018, applied per buffer). The aggregator, trusted with the clients' deltas,
/// protects each client's contribution from everyone who sees the models it publishes:
///
/// 1. each delta is clipped to L2 norm `clip` (C) and weighted by its staleness weight
///    `S(s) <= 1`, so one client moves the buffer's sum by at most C;
/// 2. Gaussian noise of standard deviation `noiseMultiplier * C` (z C) is added to that sum;
/// 3. the sum is divided by K (`fedbuff.buffer_size`, a fixed denominator, also when a buffer
///    is flushed below K after `max_wait_s`): the pseudo-gradient carries noise of standard
///    deviation `z * C / K`, the figure of issue 14.
///
/// Each flush is one step of the Gaussian mechanism for the accountant (`RDPAccountant`), with
/// the sampling assumption of `samplingRate`.
///
/// With `adaptiveClipping` (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially private
/// learning with adaptive clipping", NeurIPS 2021), C is the starting bound and follows the
/// `targetQuantile` of the delta norms: each flush also releases the count of its deltas within
/// C, as `sum(b_i - 1/2) + N(0, sigma_b^2)` (sensitivity 1/2), and sets
/// `C *= exp(-learningRate * (count / K + 1/2 - targetQuantile))`. The two releases together are
/// one Gaussian mechanism of multiplier z when the deltas get
/// `z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)` (their Theorem 1), so the accountant still
/// composes z per flush.
public struct PrivacyConfig: Sendable, Hashable {
    /// The adaptive clipping bound's parameters.
    public struct AdaptiveClipping: Sendable, Hashable {
        /// gamma: the fraction of deltas the bound aims to leave unclipped, in [0, 1].
        public var targetQuantile: Double
        /// eta_C: the geometric step of the bound per flush (> 0).
        public var learningRate: Double
        /// sigma_b: the noise on the count of unclipped deltas; nil: `max(K / 20, z)` (the paper's
        /// expected clients / 20, at least z so that the deltas' noise grows by at most 15 %).
        public var countStandardDeviation: Double?

        public init(targetQuantile: Double = 0.5, learningRate: Double = 0.2, countStandardDeviation: Double? = nil) {
            self.targetQuantile = targetQuantile
            self.learningRate = learningRate
            self.countStandardDeviation = countStandardDeviation
        }
    }

    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// No noise, no accounting.
        case off
        /// Clip and noise at the aggregator (fedbuff only).
        case central
        /// Clients clip and noise their own updates (any algorithm; `LocalDPConfig`): `clip`
        /// and `noiseMultiplier` are sent to them as `local_dp`, `delta` states their epsilon.
        case local
    }

    public var mode: Mode
    /// C: the L2 bound every delta is clipped to.
    public var clip: Double
    /// z: noise standard deviation over C.
    public var noiseMultiplier: Double
    /// The delta at which epsilon is stated.
    public var delta: Double
    /// q: the probability with which each client is assumed to contribute to a buffer,
    /// independently (Poisson sampling); nil: no amplification (q = 1), the safe assumption
    /// when the fleet's participation is not randomized.
    public var samplingRate: Double?
    /// No flush is made that would take epsilon (at `delta`) above this; nil: no budget.
    public var epsilonBudget: Double?
    /// A fixed noise seed: tests only. Nil (always in service): keyed from the system's CSPRNG.
    public var noiseSeed: UInt64?
    /// Adapt C to a quantile of the delta norms; nil: C stays fixed.
    public var adaptiveClipping: AdaptiveClipping? = nil

    public init(mode: Mode = .off, clip: Double = 1, noiseMultiplier: Double = 1, delta: Double = 1e-5,
                samplingRate: Double? = nil, epsilonBudget: Double? = nil, noiseSeed: UInt64? = nil) {
        self.mode = mode
        self.clip = clip
        self.noiseMultiplier = noiseMultiplier
        self.delta = delta
        self.samplingRate = samplingRate
        self.epsilonBudget = epsilonBudget
        self.noiseSeed = noiseSeed
    }

    /// q for the accountant.
    public var accountedSamplingRate: Double { samplingRate ?? 1 }

    /// The local DP clients must apply (mode local), else nil.
    public var local: LocalDPConfig? { mode == .local ? LocalDPConfig(clipNorm: clip, noiseMultiplier: noiseMultiplier) : nil }

    /// Why this configuration is invalid (nil when valid or off).
    public func validationError() -> String? {
        guard mode != .off else { return nil }
        guard clip.isFinite, clip > 0 else { return "privacy.clip must be a positive number, not \(clip)" }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else { return "privacy.noise_multiplier must be a positive number, not \(noiseMultiplier)" }
        guard delta.isFinite, delta > 0, delta < 1 else { return "privacy.delta must be in (0, 1), not \(delta)" }
        if mode == .local {
            if samplingRate != nil { return "privacy.sampling applies to central DP: with privacy.mode local every update is released, there is no amplification" }
            if epsilonBudget != nil { return "privacy.epsilon_budget applies to central DP: with privacy.mode local the clients spend their own privacy (docs/SECURITY.md)" }
            if adaptiveClipping != nil { return "privacy.adaptive_clipping applies to central DP: with privacy.mode local the clients clip to the fixed privacy.clip" }
            return nil
        }
        if let q = samplingRate, !(q.isFinite && q > 0 && q <= 1) { return "privacy.sampling_rate must be in (0, 1], not \(q)" }
        if let b = epsilonBudget, !(b.isFinite && b > 0) { return "privacy.epsilon_budget must be a positive number (or 0 for none), not \(b)" }
        if let a = adaptiveClipping {
            guard a.targetQuantile.isFinite, (0...1).contains(a.targetQuantile) else {
                return "privacy.target_quantile must be in [0, 1], not \(a.targetQuantile)"
            }
            guard a.learningRate.isFinite, a.learningRate > 0 else { return "privacy.clip_learning_rate must be a positive number, not \(a.learningRate)" }
            if let sb = a.countStandardDeviation, !(sb.isFinite && 2 * sb > noiseMultiplier) {
                return "privacy.clipped_count_stddev must exceed noise_multiplier / 2 (\(noiseMultiplier / 2)): the count's noise takes a share of the privacy of z, not \(sb)"
            }
        }
        return nil
    }
}

/// What /status (as JSON: `budget_exhausted` for `exhausted`), /metrics and the log show of
/// the privacy spent.
public struct PrivacyStatus: Sendable, Hashable, Codable {
    /// Epsilon at `delta` after `steps` noised flushes (of this run, across restarts).
    public var epsilon: Double
    public var delta: Double
    public var steps: UInt64
    public var noiseMultiplier: Double
    /// C now (it moves with adaptive clipping).
    public var clip: Double
    /// q, 1 for no amplification.
    public var samplingRate: Double
    public var epsilonBudget: Double?
    /// The next flush would exceed the budget: no more server steps; deltas are refused.
    public var exhausted: Bool

    /// `exhausted`, under its /status name.
    public var budgetExhausted: Bool { exhausted }

    private enum CodingKeys: String, CodingKey {
        case epsilon, delta, steps, noiseMultiplier, clip, samplingRate, epsilonBudget
        case exhausted = "budgetExhausted"
    }
}

/// The aggregator's central-DP state: the accountant and the noise. Owned by the thread that
/// owns the buffer.
package final class CentralPrivacy {
    package let config: PrivacyConfig
    package private(set) var accountant: RDPAccountant
    private var noise: GaussianNoise
    /// Epsilon after the steps taken, and after one more.
    package private(set) var epsilon: Double
    package private(set) var epsilonAfterNextStep: Double
    /// C: the bound deltas are clipped to now (fixed unless adaptive).
    package private(set) var clip: Double
    /// K, the fixed denominator of the count of unclipped deltas.
    private let bufferSize: Int
    /// sigma_b (adaptive clipping only).
    package let countStandardDeviation: Double?
    /// The multiplier of the deltas' noise: z, or z_delta with adaptive clipping.
    package let deltaNoiseMultiplier: Double
    /// `sum(b_i - 1/2)` over the buffer's deltas (adaptive clipping).
    private var unclippedCentered = 0.0

    /// `resuming`: a checkpoint's accountant (its RDP keeps adding up) and, with adaptive
    /// clipping, its bound.
    package init(config: PrivacyConfig, bufferSize: Int, resuming saved: CheckpointState.PrivacyState? = nil) {
        precondition(config.mode == .central)
        self.config = config
        self.bufferSize = bufferSize
        accountant = saved?.accountant ?? RDPAccountant()
        noise = config.noiseSeed.map(GaussianNoise.init(seed:)) ?? GaussianNoise()
        clip = config.adaptiveClipping != nil ? (saved?.clip ?? config.clip) : config.clip
        if let a = config.adaptiveClipping {
            let z = config.noiseMultiplier
            let sb = a.countStandardDeviation ?? max(Double(bufferSize) / 20, z)
            countStandardDeviation = sb
            deltaNoiseMultiplier = 1 / (1 / (z * z) - 1 / (4 * sb * sb)).squareRoot()
        } else {
            countStandardDeviation = nil
            deltaNoiseMultiplier = config.noiseMultiplier
        }
        epsilon = 0
        epsilonAfterNextStep = 0
        refresh()
    }

    /// Whether one more flush stays within the budget.
    package var canStep: Bool { config.epsilonBudget.map { epsilonAfterNextStep <= $0 } ?? true }

    /// Why no more deltas are taken (when `canStep` is false).
    package var exhaustedMessage: String {
        "privacy budget exhausted: epsilon \(epsilon) at delta \(config.delta) after \(accountant.steps) server steps; one more would make it "
            + "\(epsilonAfterNextStep), over privacy.epsilon_budget \(config.epsilonBudget ?? .infinity): no more server steps in this run"
    }

    /// The clip factor `min(1, C / norm)` of a delta of L2 norm `norm` that goes into the
    /// buffer (with adaptive clipping, it is counted as clipped or not).
    package func admit(norm: Double) -> Double {
        if config.adaptiveClipping != nil { unclippedCentered += (norm <= clip ? 1 : 0) - 0.5 }
        return norm > clip ? clip / norm : 1
    }

    /// Noises `sum` (the buffer's clipped, weighted sum) with `N(0, (z_delta C)^2)` per value,
    /// charges the accountant one step and, with adaptive clipping, moves C.
    package func release(_ sum: UnsafeMutableBufferPointer<Float>) {
        noise.add(standardDeviation: deltaNoiseMultiplier * clip, to: sum)
        if let a = config.adaptiveClipping, let sb = countStandardDeviation {
            let unclipped = (unclippedCentered + sb * noise.standardNormal()) / Double(bufferSize) + 0.5
            clip *= exp(-a.learningRate * (unclipped - a.targetQuantile))
            unclippedCentered = 0
        }
        accountant.compose(noiseMultiplier: config.noiseMultiplier, samplingRate: config.accountedSamplingRate)
        refresh()
    }

    private func refresh() {
        epsilon = accountant.epsilon(delta: config.delta)
        var next = accountant
        next.compose(noiseMultiplier: config.noiseMultiplier, samplingRate: config.accountedSamplingRate)
        epsilonAfterNextStep = next.epsilon(delta: config.delta)
    }

    package var status: PrivacyStatus {
        PrivacyStatus(epsilon: epsilon, delta: config.delta, steps: accountant.steps, noiseMultiplier: config.noiseMultiplier,
                      clip: clip, samplingRate: config.accountedSamplingRate, epsilonBudget: config.epsilonBudget, exhausted: !canStep)
    }

    /// The accountant's state (and the adaptive bound) for a checkpoint.
    package var checkpointState: CheckpointState.PrivacyState {
        CheckpointState.PrivacyState(steps: accountant.steps, rdp: accountant.rdp, epsilon: epsilon, delta: config.delta,
                                     clip: config.adaptiveClipping != nil ? clip : nil)
    }
}
