import ApiaryCore

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
public struct PrivacyConfig: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// No noise, no accounting.
        case off
        /// Clip and noise at the aggregator (fedbuff only).
        case central
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

    /// Why this configuration is invalid (nil when valid or off).
    public func validationError() -> String? {
        guard mode == .central else { return nil }
        guard clip.isFinite, clip > 0 else { return "privacy.clip must be a positive number, not \(clip)" }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else { return "privacy.noise_multiplier must be a positive number, not \(noiseMultiplier)" }
        guard delta.isFinite, delta > 0, delta < 1 else { return "privacy.delta must be in (0, 1), not \(delta)" }
        if let q = samplingRate, !(q.isFinite && q > 0 && q <= 1) { return "privacy.sampling_rate must be in (0, 1], not \(q)" }
        if let b = epsilonBudget, !(b.isFinite && b > 0) { return "privacy.epsilon_budget must be a positive number (or 0 for none), not \(b)" }
        return nil
    }
}

/// What /status, /metrics and the log show of the privacy spent.
public struct PrivacyStatus: Sendable, Hashable {
    /// Epsilon at `delta` after `steps` noised flushes (of this run, across restarts).
    public var epsilon: Double
    public var delta: Double
    public var steps: UInt64
    public var noiseMultiplier: Double
    public var clip: Double
    /// q, 1 for no amplification.
    public var samplingRate: Double
    public var epsilonBudget: Double?
    /// The next flush would exceed the budget: no more server steps; deltas are refused.
    public var exhausted: Bool
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

    /// `resuming`: the accountant of a checkpoint (its RDP keeps adding up).
    package init(config: PrivacyConfig, resuming saved: RDPAccountant? = nil) {
        precondition(config.mode == .central)
        self.config = config
        accountant = saved ?? RDPAccountant()
        noise = config.noiseSeed.map(GaussianNoise.init(seed:)) ?? GaussianNoise()
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

    /// The clip factor of a delta of L2 norm `norm`: `min(1, C / norm)`.
    package func clipFactor(norm: Double) -> Double { norm > config.clip ? config.clip / norm : 1 }

    /// Noises `sum` (the buffer's clipped, weighted sum) with `N(0, (z C)^2)` per value and
    /// charges the accountant one step.
    package func release(_ sum: UnsafeMutableBufferPointer<Float>) {
        noise.add(standardDeviation: config.noiseMultiplier * config.clip, to: sum)
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
                      clip: config.clip, samplingRate: config.accountedSamplingRate, epsilonBudget: config.epsilonBudget, exhausted: !canStep)
    }

    /// The accountant's state for a checkpoint.
    package var checkpointState: CheckpointState.PrivacyState {
        CheckpointState.PrivacyState(steps: accountant.steps, rdp: accountant.rdp, epsilon: epsilon, delta: config.delta)
    }
}
