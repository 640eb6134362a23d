/// Local differential privacy (PROTOCOL.md 4.8): what an aggregator that does not want to be
/// trusted with raw updates requires of every client, sent in the snapshot config as
/// `"local_dp": {"clip_norm": C, "noise_multiplier": z}`. A client clips its delta
/// `trained - base` to L2 norm C and adds `N(0, (z C)^2)` to every value before it sends
/// anything, and flags the update (header flag bit 3).
///
/// Accounting. The clipped delta of any two training runs differs by at most 2C (both lie in
/// the ball of radius C), so one update is the Gaussian mechanism with sensitivity 2C and noise
/// z C: the accountant's multiplier is z / 2 (replace-one adjacency of the client's whole data,
/// the definition of local DP), with no amplification (every update is released). A client's
/// epsilon after k updates is that of k such steps composed.
public struct LocalDPConfig: Sendable, Hashable, Codable {
    /// C: the L2 bound of a client's delta.
    public var clipNorm: Double
    /// z: the noise's standard deviation over C.
    public var noiseMultiplier: Double

    public init(clipNorm: Double, noiseMultiplier: Double) {
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
    }

    enum CodingKeys: String, CodingKey {
        case clipNorm = "clip_norm"
        case noiseMultiplier = "noise_multiplier"
    }

    /// What is wrong with these values, or nil.
    public func validationError() -> String? {
        guard clipNorm.isFinite, clipNorm > 0 else { return "local_dp.clip_norm must be a positive number, not \(clipNorm)" }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            return "local_dp.noise_multiplier must be a positive number, not \(noiseMultiplier)"
        }
        return nil
    }

    /// The accountant's noise multiplier of one update: noise z C over sensitivity 2C.
    public var accountedNoiseMultiplier: Double { noiseMultiplier / 2 }

    /// One client's epsilon at `delta` after `updates` privatized updates.
    public func epsilon(updates: UInt64, delta: Double) -> Double {
        RDPAccountant.epsilon(noiseMultiplier: accountedNoiseMultiplier, samplingRate: 1, steps: updates, delta: delta)
    }
}

/// A client's side of local DP: clips a delta and noises it in place, with noise from a
/// `GaussianNoise` keyed from the system's CSPRNG (tests pass a seeded one).
package struct LocalPrivatizer {
    package let config: LocalDPConfig
    private var noise: GaussianNoise

    package init(config: LocalDPConfig, noise: GaussianNoise = GaussianNoise()) {
        self.config = config
        self.noise = noise
    }

    /// `delta = delta * min(1, C / ||delta||) + N(0, (z C)^2)` per value; returns the norm
    /// before clipping. Nil, and `delta` unchanged, when a value is not finite (then nothing
    /// can be privatized: the update must not be sent).
    package mutating func privatize(_ delta: UnsafeMutableBufferPointer<Float>) -> Double? {
        var sum = 0.0
        for v in delta {
            guard v.isFinite else { return nil }
            sum += Double(v) * Double(v)
        }
        let norm = sum.squareRoot()
        let c = config.clipNorm
        let scale = norm > c ? c / norm : 1
        let std = config.noiseMultiplier * c
        for i in delta.indices {
            delta[i] = Float(Double(delta[i]) * scale + std * noise.standardNormal())
        }
        return norm
    }
}

/// What /status shows of the local DP an aggregator requires: the settings and one client's
/// epsilon per update (k updates of a client: `LocalDPConfig.epsilon(updates: k, delta:)`).
public struct LocalPrivacyStatus: Sendable, Hashable, Codable {
    public var clipNorm: Double
    public var noiseMultiplier: Double
    public var delta: Double
    /// One client's epsilon at `delta` for one update.
    public var epsilonPerUpdate: Double
    /// ...and for 100 updates (epsilon grows about as the square root of the count).
    public var epsilonPer100Updates: Double

    public init(config: LocalDPConfig, delta: Double) {
        clipNorm = config.clipNorm
        noiseMultiplier = config.noiseMultiplier
        self.delta = delta
        epsilonPerUpdate = config.epsilon(updates: 1, delta: delta)
        epsilonPer100Updates = config.epsilon(updates: 100, delta: delta)
    }
}
