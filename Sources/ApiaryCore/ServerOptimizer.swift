/// The server step of buffered aggregation (FedBuff) and of FedAvg rounds: the averaged
/// client delta `d` (the pseudo-gradient, pointing from the model toward the clients) moves
/// the model `x`. Adaptive federated optimization (Reddi et al., ICLR 2021), element-wise,
/// without bias correction, `t` counting server steps:
///
/// | kind | state | step |
/// |---|---|---|
/// | `sgd` | none | `x += lr * d` |
/// | `momentum` (FedAvgM) | `m` | `m = beta1 * m + d`; `x += lr * m` |
/// | `adagrad` | `v` | `v += d^2`; `x += lr * d / (sqrt(v) + epsilon)` |
/// | `adam` | `m`, `v` | `m = beta1 m + (1 - beta1) d`; `v = beta2 v + (1 - beta2) d^2`; `x += lr * m / (sqrt(v) + epsilon)` |
/// | `yogi` | `m`, `v` | `m` as adam; `v = v - (1 - beta2) d^2 sign(v - d^2)`; `x += lr * m / (sqrt(v) + epsilon)` |
///
/// `m` and `v` start at 0. A parameter whose new value would not be finite keeps its value
/// (and its state), so a step never makes the model non-finite. `sgd` with `lr = 1` is plain
/// averaging (FedAvg, and FedBuff's default with the paper's `server_learning_rate` 1).
public struct ServerOptimizer: Sendable, Equatable {
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        case sgd, momentum, adagrad, adam, yogi
    }

    public struct Config: Sendable, Hashable, Codable {
        public var kind: Kind
        public var learningRate: Double
        /// Momentum (for `momentum`) or the first-moment decay (`adam`, `yogi`).
        public var beta1: Double
        /// The second-moment decay (`adam`, `yogi`).
        public var beta2: Double
        /// Added to `sqrt(v)`: the adaptivity floor (Reddi et al.'s tau).
        public var epsilon: Double

        public init(kind: Kind = .sgd, learningRate: Double = 1, beta1: Double = 0.9, beta2: Double = 0.99, epsilon: Double = 1e-3) {
            self.kind = kind
            self.learningRate = learningRate
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
        }

        /// Why this configuration is invalid (nil when valid).
        public func validationError() -> String? {
            guard learningRate.isFinite, learningRate > 0 else { return "server_optimizer.learning_rate must be > 0, not \(learningRate)" }
            guard beta1.isFinite, (0..<1).contains(beta1) else { return "server_optimizer.beta1 must be in [0, 1), not \(beta1)" }
            guard beta2.isFinite, (0..<1).contains(beta2) else { return "server_optimizer.beta2 must be in [0, 1), not \(beta2)" }
            guard epsilon.isFinite, epsilon > 0 else { return "server_optimizer.epsilon must be > 0, not \(epsilon)" }
            return nil
        }

        var usesFirstMoment: Bool { kind == .momentum || kind == .adam || kind == .yogi }
        var usesSecondMoment: Bool { kind == .adagrad || kind == .adam || kind == .yogi }
    }

    public let config: Config
    /// First and second moments (empty when the kind keeps none).
    public private(set) var m: [Float]
    public private(set) var v: [Float]
    /// Server steps taken.
    public private(set) var steps: UInt64 = 0

    public init(_ config: Config, parameterCount: Int) {
        self.config = config
        m = config.usesFirstMoment ? [Float](repeating: 0, count: parameterCount) : []
        v = config.usesSecondMoment ? [Float](repeating: 0, count: parameterCount) : []
    }

    /// Resumes a checkpoint's state when it is of the configured kind; otherwise fresh.
    public init(_ config: Config, parameterCount: Int, resuming saved: CheckpointState.OptimizerState?) {
        if let saved, saved.kind == config.kind.rawValue {
            self.init(config, parameterCount: parameterCount, m: saved.m, v: saved.v, steps: saved.steps)
        } else {
            self.init(config, parameterCount: parameterCount)
        }
    }

    /// Resumes with saved state (`m`, `v` as `self.m`, `self.v` were; nil: fresh).
    public init(_ config: Config, parameterCount: Int, m: [Float]?, v: [Float]?, steps: UInt64) {
        self.init(config, parameterCount: parameterCount)
        if let m, m.count == self.m.count { self.m = m }
        if let v, v.count == self.v.count { self.v = v }
        self.steps = steps
    }

    /// One step: moves `model` by the pseudo-gradient `d` (same count).
    public mutating func step(model x: UnsafeMutableBufferPointer<Float>, pseudoGradient d: UnsafeBufferPointer<Float>) {
        precondition(x.count == d.count, "pseudo-gradient size does not match the model")
        let lr = Float(config.learningRate), b1 = Float(config.beta1), b2 = Float(config.beta2), eps = Float(config.epsilon)
        steps += 1
        switch config.kind {
        case .sgd:
            for i in 0..<x.count {
                let n = x[i] + lr * d[i]
                if n.isFinite { x[i] = n }
            }
        case .momentum:
            for i in 0..<x.count {
                let mi = b1 * m[i] + d[i]
                let n = x[i] + lr * mi
                if n.isFinite && mi.isFinite { x[i] = n; m[i] = mi }
            }
        case .adagrad:
            for i in 0..<x.count {
                let vi = v[i] + d[i] * d[i]
                let n = x[i] + lr * d[i] / (vi.squareRoot() + eps)
                if n.isFinite && vi.isFinite { x[i] = n; v[i] = vi }
            }
        case .adam, .yogi:
            let yogi = config.kind == .yogi
            for i in 0..<x.count {
                let g = d[i], g2 = g * g
                let mi = b1 * m[i] + (1 - b1) * g
                let vi: Float
                if yogi {
                    let s: Float = v[i] > g2 ? 1 : (v[i] < g2 ? -1 : 0)
                    vi = v[i] - (1 - b2) * g2 * s
                } else {
                    vi = b2 * v[i] + (1 - b2) * g2
                }
                let n = x[i] + lr * mi / (vi.squareRoot() + eps)
                if n.isFinite && mi.isFinite && vi.isFinite { x[i] = n; m[i] = mi; v[i] = vi }
            }
        }
    }
}
