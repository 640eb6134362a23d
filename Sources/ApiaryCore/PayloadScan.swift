/// One pass over an update's float32 payload (possibly split over several frames, read in
/// place): whether every value is finite, and the L2 norm of `update - model`.
public struct PayloadScan: Sendable, Hashable {
    public var allFinite: Bool
    /// L2 norm of the difference between the update and the model (NaN when a value is not
    /// finite; infinity when a difference overflows float32).
    public var deltaNorm: Double

    /// Scans `frames` (float32 little-endian, concatenated = the flat vector) against `model`.
    /// The frames must add up to `model.count` values (the codec checks that first). A
    /// sequence that decodes on the fly (`DenseBlocks`) is iterated twice at most.
    public static func scan(_ frames: some Sequence<UnsafeRawBufferPointer>, against model: UnsafeBufferPointer<Float>) -> PayloadScan {
        // Fast pass: only the sum of squared differences, with eight independent accumulators
        // (one accumulator is a chain of dependent additions that runs about 3.5 times
        // slower). The sum is finite exactly when every difference is: a NaN or infinite
        // value, or a difference that overflows float32, makes it NaN or infinite, while
        // finite float32 differences squared and summed (at most 2^34 of them) stay far
        // inside Double's range. Only a non-finite sum needs the careful pass.
        var sum: Double = 0
        var offset = 0
        for f in frames {
            let n = f.count / 4
            guard n > 0, let src = f.baseAddress else { continue }
            precondition(offset + n <= model.count, "payload larger than the model")
            sum += sumOfSquaredDifferences(src, model.baseAddress! + offset, n)
            offset += n
        }
        if sum.isFinite { return PayloadScan(allFinite: true, deltaNorm: sum.squareRoot()) }
        return carefulScan(frames, against: model)
    }

    /// Sum over j of Double(x[j] - m[j])^2, x read unaligned, in eight lanes.
    static func sumOfSquaredDifferences(_ x: UnsafeRawPointer, _ m: UnsafePointer<Float>, _ n: Int) -> Double {
        var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0
        @inline(__always) func d(_ j: Int) -> Double { Double(x.loadUnaligned(fromByteOffset: j &* 4, as: Float.self) - m[j]) }
        var j = 0
        while j &+ 8 <= n {
            let d0 = d(j), d1 = d(j &+ 1), d2 = d(j &+ 2), d3 = d(j &+ 3)
            let d4 = d(j &+ 4), d5 = d(j &+ 5), d6 = d(j &+ 6), d7 = d(j &+ 7)
            s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3
            s4 += d4 * d4; s5 += d5 * d5; s6 += d6 * d6; s7 += d7 * d7
            j &+= 8
        }
        while j < n {
            let dj = d(j)
            s0 += dj * dj
            j &+= 1
        }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    }

    /// Value by value: which values are finite, and the norm (NaN or infinity when not finite).
    static func carefulScan(_ frames: some Sequence<UnsafeRawBufferPointer>, against model: UnsafeBufferPointer<Float>) -> PayloadScan {
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

    /// A sparse delta's values (top-k entries): finiteness and the L2 norm.
    public static func scan(sparseValues each: ((Float) -> Void) -> Void) -> PayloadScan {
        var sum: Double = 0
        var finite = true
        each { v in
            finite = finite && v.isFinite
            sum += Double(v) * Double(v)
        }
        return PayloadScan(allFinite: finite, deltaNorm: finite ? sum.squareRoot() : .nan)
    }
}
