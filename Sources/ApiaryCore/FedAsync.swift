/// The FedAsync rule: `x = (1 - a_t) x + a_t x_client`, `a_t = alpha * S(staleness)`.
/// Pure arithmetic, no I/O: the aggregator calls it on its merge path.
public struct FedAsync: Sendable, Hashable, Codable {
    /// The base mixing weight `alpha`, in [0, 1].
    public var alpha: Double
    /// The staleness function `S`.
    public var staleness: StalenessFunction
    /// Updates whose staleness exceeds this are rejected.
    public var maxStaleness: UInt64

    public init(alpha: Double, staleness: StalenessFunction, maxStaleness: UInt64) {
        self.alpha = alpha
        self.staleness = staleness
        self.maxStaleness = maxStaleness
    }

    /// Checks the configuration; returns a reason when it is out of range.
    public func validationError() -> String? {
        if !(alpha.isFinite && alpha >= 0 && alpha <= 1) { return "alpha must be in [0, 1], got \(alpha)" }
        return staleness.validationError()
    }

    /// The staleness of an update trained on `baseVersion` when the model is at `currentVersion`,
    /// or nil when the base version is newer than the model (it cannot come from this run).
    public static func staleness(currentVersion: UInt64, baseVersion: UInt64) -> UInt64? {
        baseVersion <= currentVersion ? currentVersion - baseVersion : nil
    }

    /// The mixing weight `a_t = alpha * S(s)`.
    public func mixingWeight(staleness s: UInt64) -> Double {
        alpha * staleness.weight(staleness: s)
    }

    /// Whether an update of staleness `s` may be merged.
    public func accepts(staleness s: UInt64) -> Bool { s <= maxStaleness }

    /// `model = (1 - weight) * model + weight * update`, element-wise, in place, computed as
    /// `model + a * (update - model)` with `a = Float(weight)`, so that an update equal to the
    /// model leaves it bit-for-bit unchanged, `a == 0` is a no-op and `a == 1` copies the
    /// update. Each result is clamped to lie between the model's and the update's value, so
    /// rounding near the float32 limits can never produce an infinity (found by fuzzing).
    /// `update` must hold `model.count` float32 values (it may be unaligned raw memory, e.g.
    /// a received frame read in place).
    public static func mix(into model: UnsafeMutableBufferPointer<Float>, update: UnsafeRawBufferPointer, weight: Double) {
        precondition(update.count == model.count * MemoryLayout<Float>.size, "update size does not match the model")
        guard let base = model.baseAddress, let src = update.baseAddress else { return }
        let n = model.count
        let a = Float(weight)
        if a == 0 { return }
        if a == 1 {
            UnsafeMutableRawPointer(base).copyMemory(from: src, byteCount: n * 4)
            return
        }
        // min(max(r, min(b, x)), max(b, x)), written as the selects that x86 min/max
        // instructions compute, so that the loop vectorizes to 4 min/max operations per
        // vector instead of compare-and-blend sequences (Swift.min/max order ties and NaNs
        // differently). Same result as Swift.min/max for every input without NaN, signed
        // zeros included. One loop for aligned and unaligned updates: vector loads do not
        // need alignment, and a frame read in place can start at any byte.
        @inline(__always) func mixed(_ b: Float, _ x: Float) -> Float {
            let r = b + a * (x - b)
            let lo = x < b ? x : b
            let hi = b > x ? b : x
            let m = r > lo ? r : lo
            return hi < m ? hi : m
        }
        for i in 0..<n { base[i] = mixed(base[i], src.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)) }
    }
}
