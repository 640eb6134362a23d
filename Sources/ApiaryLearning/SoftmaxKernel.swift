#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The inner loops of softmax regression on raw pointers, shared by training and evaluation.
/// Parameters are `W` [d, c] row-major followed by `b` [c].
enum SoftmaxKernel {
    /// `z = b + x W` for one row `x` of `d` features.
    @inline(__always)
    static func logits(
        x: UnsafePointer<Float>, weights w: UnsafePointer<Float>, bias b: UnsafePointer<Float>,
        featureCount d: Int, classCount c: Int, into z: UnsafeMutablePointer<Float>
    ) {
        for k in 0..<c { z[k] = b[k] }
        for j in 0..<d {
            let xj = x[j]
            if xj == 0 { continue }
            let row = w + j &* c
            for k in 0..<c { z[k] += xj * row[k] }
        }
    }

    /// Replaces the logits `z` by softmax probabilities (max subtracted first, so it cannot
    /// overflow) and returns the cross-entropy `-log p[label]`.
    @inline(__always)
    static func softmaxInPlace(_ z: UnsafeMutablePointer<Float>, classCount c: Int, label: Int) -> Float {
        var m = z[0]
        for k in 1..<c where z[k] > m { m = z[k] }
        let shiftedTarget = z[label] - m
        var s: Float = 0
        for k in 0..<c {
            let e = exp(z[k] - m)
            z[k] = e
            s += e
        }
        let inv = 1 / s
        for k in 0..<c { z[k] *= inv }
        return log(s) - shiftedTarget
    }

    /// Cross-entropy `logsumexp(z) - z[label]` without modifying `z`.
    @inline(__always)
    static func crossEntropy(_ z: UnsafePointer<Float>, classCount c: Int, label: Int) -> Float {
        var m = z[0]
        for k in 1..<c where z[k] > m { m = z[k] }
        var s: Float = 0
        for k in 0..<c { s += exp(z[k] - m) }
        return log(s) - (z[label] - m)
    }

    /// Index of the largest logit; ties go to the lowest index.
    @inline(__always)
    static func argmax(_ z: UnsafePointer<Float>, classCount c: Int) -> Int {
        var best = 0
        var m = z[0]
        for k in 1..<c where z[k] > m {
            m = z[k]
            best = k
        }
        return best
    }
}
