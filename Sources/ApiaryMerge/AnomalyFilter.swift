import ApiaryCore
import Foundation

/// FedAsync's robust defence (there is no buffer to take a median over): every update is
/// scored on its own before it is mixed in, and an outlier is rejected with reason
/// `anomalous` (code 19). The delta scored is `update - base model`: what the client's
/// training changed. FedAsync clients send the trained model, so the filter keeps the models of
/// the last `history` versions; an update whose base is older than those (or from before a
/// restart) is scored against the current model instead, and does not teach the filter (its
/// delta also holds the model's drift since its base, which at a staleness of tens of versions
/// outweighs the client's own step).
///
/// Two scores per update:
/// - `log ||delta||`: too large (scaling, noise of a larger norm) is suspicious, too small is
///   not (a small step does little harm);
/// - the cosine of `delta` to `a`, an exponential average of accepted deltas
///   (`a = (1 - decay) a + decay delta`): pointing away from where accepted updates pull
///   (sign flip, label flip, noise) is suspicious.
/// Each is compared with the median of the last `window` accepted updates' scores in units of
/// their robust spread `1.4826 * MAD` (floored at 0.05, so a very regular fleet is not held to
/// a hair's width): the update is rejected when `log norm` is more than `normThreshold` such
/// units above the median, or its cosine more than `cosineThreshold` units below it.
///
/// Nothing is rejected before `warmup` updates were accepted. The state (average, score
/// windows) moves only when an update is accepted, so rejected attackers cannot drag it.
/// The median and MAD break down when half of the window is hostile, so during the warm-up
/// fewer than half of the updates may come from attackers; after it, an attacker gets in only
/// with an update whose norm and direction lie within the honest updates' spread (which is what
/// "a little is enough" does: no per-update filter stops it; see docs/BENCHMARKS.md).
///
/// The state is not checkpointed: after a restart it is rebuilt by a new warm-up.
/// Memory: one float per parameter (the average). Cost: one more pass over the update for the
/// dot product, and one over accepted updates for the average.
public struct AnomalyConfig: Sendable, Hashable {
    /// Accepted updates before anything is rejected.
    public var warmup: Int
    /// How many recent accepted updates' scores the median and MAD are taken over.
    public var window: Int
    /// Robust deviations of `log ||delta||` above the median that reject.
    public var normThreshold: Double
    /// Robust deviations of the cosine below the median that reject.
    public var cosineThreshold: Double
    /// The weight of an accepted delta in the running average, in (0, 1].
    public var decay: Double
    /// Recent versions whose models are kept to score updates against their base:
    /// `history x parameters x 4` bytes. The default covers fedasync.max_staleness 128.
    public var history: Int

    public init(warmup: Int = 20, window: Int = 100, normThreshold: Double = 3, cosineThreshold: Double = 3, decay: Double = 0.02,
                history: Int = 129) {
        self.warmup = warmup
        self.window = window
        self.normThreshold = normThreshold
        self.cosineThreshold = cosineThreshold
        self.decay = decay
        self.history = history
    }

    /// Why this configuration is invalid (nil when valid).
    public func validationError() -> String? {
        guard window >= 3 else { return "robust.anomaly.window must be >= 3, not \(window)" }
        guard warmup >= 3 && warmup <= window else { return "robust.anomaly.warmup must be in 3...window (\(window)), not \(warmup)" }
        guard normThreshold.isFinite, normThreshold > 0 else { return "robust.anomaly.norm_threshold must be a positive number, not \(normThreshold)" }
        guard cosineThreshold.isFinite, cosineThreshold > 0 else {
            return "robust.anomaly.cosine_threshold must be a positive number, not \(cosineThreshold)"
        }
        guard decay.isFinite, decay > 0, decay <= 1 else { return "robust.anomaly.decay must be in (0, 1], not \(decay)" }
        guard history >= 1 && history <= 4096 else { return "robust.anomaly.history must be in 1...4096, not \(history)" }
        return nil
    }
}

/// The anomaly filter's state (see `AnomalyConfig`). Owned by the merge engine's thread.
package final class AnomalyFilter {
    package let config: AnomalyConfig
    /// The running average of accepted deltas.
    package private(set) var average: [Float]
    private var averageNorm = 0.0
    /// Scores of recent accepted updates (ring buffers, at most `window` each).
    package private(set) var logNorms: [Double] = []
    package private(set) var cosines: [Double] = []
    private var nextNorm = 0, nextCosine = 0
    package private(set) var accepted: UInt64 = 0
    /// The models of recent versions, at `version % history`, with their versions.
    private var models: [[Float]]
    private var modelVersions: [UInt64?]

    /// The smallest robust spread a score is measured in.
    static let minimumSpread = 0.05

    package init(config: AnomalyConfig, parameterCount: Int) {
        self.config = config
        average = [Float](repeating: 0, count: parameterCount)
        models = Array(repeating: [], count: config.history)
        modelVersions = Array(repeating: nil, count: config.history)
    }

    /// Keeps `model` as version `version` (after every change of the model).
    package func record(version: UInt64, model: UnsafeBufferPointer<Float>) {
        let i = Int(version % UInt64(config.history))
        if models[i].count == model.count {
            models[i].withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: model) }
        } else {
            models[i] = Array(model)
        }
        modelVersions[i] = version
    }

    /// The model of `version`, when it is still kept.
    package func model(at version: UInt64) -> [Float]? {
        let i = Int(version % UInt64(config.history))
        return modelVersions[i] == version ? models[i] : nil
    }

    /// An update's scores, and why it is rejected (nil: accepted).
    package struct Verdict {
        package var logNorm: Double
        /// Nil while the average is zero.
        package var cosine: Double?
        package var rejection: String?
        /// Scored against its base model (not the current one): it may teach the filter.
        package var againstBase = true
    }

    /// Scores the dense update `blocks` (float32, the flat vector) as `update - base`, where
    /// `base` is the model the client trained from, or the current model when that is no
    /// longer kept (finite values: the caller checked).
    package func judge(_ blocks: some Sequence<UnsafeRawBufferPointer>, base: UnsafeBufferPointer<Float>) -> Verdict {
        var dot = 0.0, squares = 0.0
        var offset = 0
        average.withUnsafeBufferPointer { a in
            for f in blocks {
                let n = f.count / 4
                guard n > 0, let src = f.baseAddress else { continue }
                var s = 0.0, q = 0.0
                for j in 0..<n {
                    let d = Double(src.loadUnaligned(fromByteOffset: j &* 4, as: Float.self) - base[offset + j])
                    s += d * Double(a[offset + j])
                    q += d * d
                }
                dot += s
                squares += q
                offset += n
            }
        }
        let norm = squares.squareRoot()
        let logNorm = log(max(norm, 1e-30))
        let cosine = averageNorm > 0 && norm > 0 ? min(1, max(-1, dot / (norm * averageNorm))) : nil
        var v = Verdict(logNorm: logNorm, cosine: cosine)
        guard logNorm.isFinite, cosine?.isFinite ?? true else {
            v.rejection = "update differs from its base by more than can be scored"
            return v
        }
        guard accepted >= UInt64(config.warmup) else { return v }
        let (mn, sn) = Self.medianAndSpread(logNorms)
        let zn = (logNorm - mn) / sn
        if zn > config.normThreshold {
            v.rejection = String(format: "update norm %.4g is %.1f robust deviations above the recent median %.4g (robust.anomaly.norm_threshold %g)",
                                 norm, zn, exp(mn), config.normThreshold)
            return v
        }
        if let c = cosine, cosines.count >= 3 {
            let (mc, sc) = Self.medianAndSpread(cosines)
            let zc = (mc - c) / sc
            if zc > config.cosineThreshold {
                v.rejection = String(format: "cosine %.3f to the average of accepted updates is %.1f robust deviations below the recent median %.3f (robust.anomaly.cosine_threshold %g)",
                                     c, zc, mc, config.cosineThreshold)
            }
        }
        return v
    }

    /// Learns from an accepted update (`verdict` its scores, against `base`): the delta
    /// `blocks - base` goes into the average, its scores into the windows.
    package func learn(_ blocks: some Sequence<UnsafeRawBufferPointer>, base model: UnsafeBufferPointer<Float>, verdict: Verdict) {
        guard verdict.againstBase else { return }
        let d = Float(config.decay)
        var sum = 0.0
        var offset = 0
        average.withUnsafeMutableBufferPointer { a in
            for f in blocks {
                let n = f.count / 4
                guard n > 0, let src = f.baseAddress else { continue }
                for j in 0..<n {
                    let delta = src.loadUnaligned(fromByteOffset: j &* 4, as: Float.self) - model[offset + j]
                    let v = (1 - d) * a[offset + j] + d * delta
                    // A finite delta keeps the average finite; guard it anyway.
                    a[offset + j] = v.isFinite ? v : a[offset + j]
                    sum += Double(a[offset + j]) * Double(a[offset + j])
                }
                offset += n
            }
        }
        averageNorm = sum.squareRoot()
        Self.push(verdict.logNorm, into: &logNorms, at: &nextNorm, window: config.window)
        if let c = verdict.cosine { Self.push(c, into: &cosines, at: &nextCosine, window: config.window) }
        accepted += 1
    }

    static func push(_ x: Double, into ring: inout [Double], at next: inout Int, window: Int) {
        if ring.count < window {
            ring.append(x)
        } else {
            ring[next] = x
            next = (next + 1) % window
        }
    }

    /// The median of `xs` and `max(1.4826 * MAD, minimumSpread)`.
    static func medianAndSpread(_ xs: [Double]) -> (median: Double, spread: Double) {
        let m = median(xs)
        let mad = median(xs.map { abs($0 - m) })
        return (m, max(1.4826 * mad, minimumSpread))
    }

    static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        let n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }
}
