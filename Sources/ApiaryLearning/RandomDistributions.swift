#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Continuous distributions drawn from `SplitMix64`.
///
/// These use `sqrt` (exactly rounded everywhere) and `log`/`pow` from the platform's C library;
/// glibc and Darwin agree on these to the last bit for practically every input, but a last-ulp
/// difference could in principle change one accept/reject decision of the gamma sampler.
extension SplitMix64 {
    /// A standard normal draw (Marsaglia's polar method; the second value of the pair is
    /// discarded so that the generator carries no extra state).
    public mutating func nextNormal() -> Double {
        while true {
            let u = 2 * nextDouble() - 1
            let v = 2 * nextDouble() - 1
            let s = u * u + v * v
            if s > 0 && s < 1 {
                return u * (-2 * log(s) / s).squareRoot()
            }
        }
    }

    /// A Gamma(`shape`, 1) draw by Marsaglia & Tsang (2000); for `shape < 1` it draws
    /// Gamma(`shape + 1`) and multiplies by `U^(1/shape)`. `shape` must be positive and finite.
    public mutating func nextGamma(shape: Double) -> Double {
        precondition(shape > 0 && shape.isFinite, "gamma shape must be positive and finite")
        if shape < 1 {
            let g = nextGamma(shape: shape + 1)
            return g * pow(nextOpenDouble(), 1 / shape)
        }
        let d = shape - 1.0 / 3.0
        let c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double
            var v: Double
            repeat {
                x = nextNormal()
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = nextOpenDouble()
            let x2 = x * x
            if u < 1 - 0.0331 * x2 * x2 { return d * v }
            if log(u) < 0.5 * x2 + d * (1 - v + log(v)) { return d * v }
        }
    }

    /// A draw from the symmetric Dirichlet distribution with `count` components of
    /// concentration `concentration` (normalised gamma draws). If every gamma draw underflows
    /// to zero (only possible for tiny concentrations), all mass goes to one uniformly chosen
    /// component, the distribution's limit as the concentration goes to zero.
    public mutating func nextDirichlet(concentration: Double, count: Int) -> [Double] {
        precondition(count > 0, "count must be positive")
        var g = [Double](repeating: 0, count: count)
        var sum = 0.0
        for k in 0..<count {
            g[k] = nextGamma(shape: concentration)
            sum += g[k]
        }
        guard sum > 0 && sum.isFinite else {
            var p = [Double](repeating: 0, count: count)
            p[nextInt(below: count)] = 1
            return p
        }
        for k in 0..<count { g[k] /= sum }
        return g
    }
}
