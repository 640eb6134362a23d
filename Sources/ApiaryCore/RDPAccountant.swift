#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Rényi differential privacy (RDP) accounting for the (Poisson-subsampled) Gaussian
/// mechanism: Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
/// Mechanism" (2019). The same computation as Google's `dp-accounting` package
/// (`dp_accounting.rdp.RdpAccountant`, add-or-remove-one neighbouring): its default orders,
/// integer orders by the binomial expansion and fractional ones by the two-series bound (as
/// its version 0.6 computes them), all in log space, composition by adding RDP per order, and
/// its conversion to (epsilon, delta), the improved bound of Canonne, Kamath and Steinke 2020 (arXiv:2004.00010, Proposition 12):
///
///     epsilon = min over orders a of  rdp(a) + log1p(-1/a) - log(delta * a) / (a - 1)
///
/// (an order with `delta^2 + expm1(-rdp(a)) > 0` gives 0; orders at or below 1.01 are skipped).
///
/// One step is one release of a sum of clipped contributions with Gaussian noise of standard
/// deviation `noiseMultiplier * clip` on it, each contribution taken with probability
/// `samplingRate` independently (Poisson sampling); `samplingRate` 1 is no amplification.
/// A value type: copy it freely; not tied to a thread.
public struct RDPAccountant: Sendable, Equatable {
    /// dp-accounting's `DEFAULT_RDP_ORDERS`: 1.1, 1.2, ..., 10.9, then 11...63, 128, 256, 512, 1024.
    public static let defaultOrders: [Double] = {
        var orders: [Double] = (1..<100).map { (x: Int) -> Double in 1 + Double(x) / 10 }
        orders += (11..<64).map { (x: Int) -> Double in Double(x) }
        orders += [128, 256, 512, 1024]
        return orders
    }()

    /// The orders alpha at which RDP is tracked.
    public let orders: [Double]
    /// The RDP spent so far, one value per order (composition adds them).
    public private(set) var rdp: [Double]
    /// Steps composed so far.
    public private(set) var steps: UInt64 = 0

    public init(orders: [Double] = RDPAccountant.defaultOrders) {
        precondition(orders.allSatisfy { $0 > 1 }, "RDP orders must exceed 1")
        self.orders = orders
        rdp = [Double](repeating: 0, count: orders.count)
    }

    /// Resumes a saved state (`rdp` one value per default order, each >= 0); nil when it does not fit.
    public init?(rdp: [Double], steps: UInt64) {
        guard rdp.count == Self.defaultOrders.count, rdp.allSatisfy({ $0 >= 0 && !$0.isNaN }) else { return nil }
        self.init()
        self.rdp = rdp
        self.steps = steps
    }

    /// Composes `count` steps of the Gaussian mechanism with `noiseMultiplier`, each on a
    /// Poisson sample of rate `samplingRate` (in [0, 1]; 1: every contributor every step).
    public mutating func compose(noiseMultiplier z: Double, samplingRate q: Double, count: UInt64 = 1) {
        let step = Self.stepRDP(noiseMultiplier: z, samplingRate: q, orders: orders)
        for i in rdp.indices { rdp[i] += step[i] * Double(count) }
        steps += count
    }

    /// Epsilon at `delta` for what was composed so far (0 before the first step; infinity
    /// when no order gives a finite bound).
    public func epsilon(delta: Double) -> Double {
        Self.epsilon(orders: orders, rdp: rdp, delta: delta)
    }

    /// Epsilon after `steps` steps of one mechanism, from nothing (what `apiary privacy epsilon` prints).
    public static func epsilon(noiseMultiplier z: Double, samplingRate q: Double, steps: UInt64, delta: Double) -> Double {
        var a = RDPAccountant()
        a.compose(noiseMultiplier: z, samplingRate: q, count: steps)
        return a.epsilon(delta: delta)
    }

    // MARK: The computation (dp_accounting/rdp/rdp_privacy_accountant.py)

    /// RDP of one step at each order.
    static func stepRDP(noiseMultiplier z: Double, samplingRate q: Double, orders: [Double]) -> [Double] {
        orders.map { a in
            if q == 0 { return 0 }
            if a.isInfinite || z == 0 { return .infinity }
            if q == 1 { return a / (2 * z * z) }
            return logA(q: q, sigma: z, alpha: a) / (a - 1)
        }
    }

    static func logA(q: Double, sigma: Double, alpha: Double) -> Double {
        alpha == alpha.rounded() ? logAInteger(q: q, sigma: sigma, alpha: Int(alpha)) : logAFractional(q: q, sigma: sigma, alpha: alpha)
    }

    /// `log(A_alpha)` for an integer order: the binomial expansion.
    static func logAInteger(q: Double, sigma: Double, alpha: Int) -> Double {
        var logA = -Double.infinity
        let a = Double(alpha)
        for i in 0...alpha {
            let k = Double(i)
            let logCoefficient = logBinomial(a, k) + k * log(q) + (a - k) * log1p(-q)
            logA = logAdd(logA, logCoefficient + (k * k - k) / (2 * sigma * sigma))
        }
        return logA
    }

    /// `log(A_alpha)` for a fractional order: the two series of Sec. 3.3 of arXiv:1908.10530
    /// with `|binom(alpha, i)|` (an upper bound, as dp-accounting 0.6 takes it), summed until
    /// both terms decrease and are below e^-30 of the total; infinity (the order is then
    /// useless) when that takes over 1000 terms.
    static func logAFractional(q: Double, sigma: Double, alpha: Double) -> Double {
        var logA0 = -Double.infinity, logA1 = -Double.infinity
        let z0 = sigma * sigma * log(1 / q - 1) + 0.5
        let log1mq = log1p(-q)
        var lastS0 = -Double.infinity, lastS1 = -Double.infinity
        for step in 0..<1000 {
            let i = Double(step)
            let logCoefficient = logBinomial(alpha, i)
            let j = alpha - i
            let logT0 = logCoefficient + i * log(q) + j * log1mq
            let logT1 = logCoefficient + j * log(q) + i * log1mq
            let logE0 = log(0.5) + logErfc((i - z0) / (2.0.squareRoot() * sigma))
            let logE1 = log(0.5) + logErfc((z0 - j) / (2.0.squareRoot() * sigma))
            let logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0
            let logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1
            logA0 = logAdd(logA0, logS0)
            logA1 = logAdd(logA1, logS1)
            let total = logAdd(logA0, logA1)
            if logS0 < lastS0 && logS1 < lastS1 && max(logS0, logS1) < total - 30 { return total }
            lastS0 = logS0
            lastS1 = logS1
        }
        return .infinity
    }

    /// `log|binom(n, k)|` for real `n` and `k >= 0` (lgamma is `log|Gamma|`), dp-accounting's `_log_comb`.
    static func logBinomial(_ n: Double, _ k: Double) -> Double {
        lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
    }

    /// `log(exp(x) + exp(y))`.
    static func logAdd(_ x: Double, _ y: Double) -> Double {
        let a = min(x, y), b = max(x, y)
        if a == -.infinity { return b }
        return log1p(exp(a - b)) + b
    }

    /// `log(erfc(x))`, also where `erfc` underflows (its asymptotic series).
    static func logErfc(_ x: Double) -> Double {
        let r = erfc(x)
        if r > 1e-300 { return log(r) }
        let x2 = x * x
        return -log(Double.pi) / 2 - log(x) - x2
            + log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2) + 105 / (16 * x2 * x2 * x2 * x2))
    }

    /// The improved RDP-to-(epsilon, delta) conversion (Canonne, Kamath, Steinke 2020).
    static func epsilon(orders: [Double], rdp: [Double], delta: Double) -> Double {
        precondition(delta >= 0, "delta must not be negative")
        if delta == 0 { return rdp.allSatisfy { $0 == 0 } ? 0 : .infinity }
        var best = Double.infinity
        for (a, r) in zip(orders, rdp) {
            let e: Double
            if r < 0 || delta * delta + expm1(-r) > 0 {
                e = 0
            } else if a > 1.01 {
                e = r + log1p(-1 / a) - log(delta * a) / (a - 1)
            } else {
                e = .infinity
            }
            if e < best { best = e }
        }
        return max(0, best)
    }
}
