/// One pass over an update's float32 payload (possibly split over several frames, read in
/// place): whether every value is finite, and the L2 norm of `update - model`.
public struct PayloadScan: Sendable, Hashable {
    public var allFinite: Bool
    /// L2 norm of the difference between the update and the model (NaN when a value is not
    /// finite; infinity when a difference overflows float32).
    public var deltaNorm: Double

    /// Scans `frames` (float32 little-endian, concatenated = the flat vector) against `model`.
    /// The frames must add up to `model.count` values (the codec checks that first).
    public static func scan(_ frames: some Collection<UnsafeRawBufferPointer>, against model: UnsafeBufferPointer<Float>) -> PayloadScan {
        var offset = 0
        var sum: Double = 0
        var finite = true
        for f in frames {
            let n = f.count / 4
            guard n > 0, let src = f.baseAddress else { continue }
            precondition(offset + n <= model.count, "payload larger than the model")
            var bad = false
            for j in 0..<n {
                let x = src.loadUnaligned(fromByteOffset: j &* 4, as: Float.self)
                bad = bad || !x.isFinite
                // The square in Double: float32 differences up to 3.4e38 square without overflow.
                let d = Double(x - model[offset + j])
                sum += d * d
            }
            if bad { finite = false }
            offset += n
        }
        return PayloadScan(allFinite: finite, deltaNorm: finite ? sum.squareRoot() : .nan)
    }
}
