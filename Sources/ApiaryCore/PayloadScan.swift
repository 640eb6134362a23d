/// One pass over an update's float32 payload (possibly split over several frames, read in
/// place): whether every value is finite, and the L2 norm of `update - model`.
public struct PayloadScan: Sendable, Hashable {
    public var allFinite: Bool
    /// L2 norm of the difference between the update and the model (NaN when not finite).
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
            var acc: Float = 0
            var bad = false
            // Split in blocks so the float accumulator stays accurate; each block is summed
            // into a Double.
            var i = 0
            while i < n {
                let end = min(n, i + 4096)
                acc = 0
                for j in i..<end {
                    let x = src.loadUnaligned(fromByteOffset: j &* 4, as: Float.self)
                    bad = bad || !x.isFinite
                    let d = x - model[offset + j]
                    acc += d * d
                }
                sum += Double(acc)
                i = end
            }
            if bad { finite = false }
            offset += n
        }
        return PayloadScan(allFinite: finite, deltaNorm: finite ? sum.squareRoot() : .nan)
    }
}
