import ApiaryCore
import ApiaryProtocol

/// Buffered asynchronous aggregation (FedBuff; Nguyen et al., AISTATS 2022). Clients send
/// deltas `trained - base` (header flag bit 1). Each valid delta `d_i` of staleness `s_i`
/// (versions = buffer flushes since its base) goes into the buffer with weight
/// `w_i = S(s_i) * e_i`, where `e_i` is 1, or with example weighting the client's example
/// count capped at `exampleCap`. When the buffer holds `bufferSize` deltas (or, after
/// `maxWait`, at least one), one server step takes the pseudo-gradient
/// `D = sum(w_i d_i) / sum(e_i)` (`ServerOptimizer`: `x += lr * D` with sgd) and publishes a
/// new version. `aggregate` can replace that mean by a coordinate-wise median or trimmed mean
/// of the `w_i d_i` (`RobustAggregate`); `privacy` (mean only) clips each delta, noises the sum
/// and divides it by K (`PrivacyConfig`, `CentralPrivacy`).
///
/// Receipts: a buffered delta is not acknowledged until its buffer is flushed (and, with
/// checkpoints, the flushed version is durable); the receipt then says `merged` at the
/// flushed version, its mixing weight `w_i / sum(e_i)`. A resend of a delta still in the
/// buffer is answered with that receipt. A crash loses only an unacknowledged buffer, which
/// clients resend; a flushed buffer is in the checkpoint with the dedup entries of its deltas,
/// so it is never applied twice.
public struct FedBuffConfig: Sendable, Hashable {
    /// The statistic of the buffer's deltas that makes the pseudo-gradient.
    public enum Aggregate: String, Sendable, Hashable, CaseIterable {
        /// `sum(w_i d_i) / sum(e_i)`: no attacker tolerated (one delta can move it anywhere).
        case mean
        /// Per coordinate, the median of the n weighted deltas `w_i d_i` (the mean of the two
        /// middle values for even n): tolerates up to `ceil(n / 2) - 1` attackers in a buffer of n.
        case median
        /// Per coordinate, the mean of the n weighted deltas after dropping the
        /// `floor(trimFraction * n)` largest and as many smallest: tolerates that many attackers.
        case trimmedMean = "trimmed_mean"
    }

    /// K: deltas per server step.
    public var bufferSize: Int
    /// A non-empty buffer is flushed this long after its first delta, even when not full
    /// (so that a small fleet is never stuck below K); nil: only when full.
    public var maxWait: Duration?
    /// Weight deltas by their example counts (capped at `exampleCap`), not equally.
    public var exampleWeighting: Bool
    public var exampleCap: UInt64
    /// The server step.
    public var optimizer: ServerOptimizer.Config
    /// Mean, or a robust statistic. The robust ones keep the buffer's n deltas, not only their
    /// sum: n x (parameters of the model or shard) x 4 bytes more memory (K = 10 and 1M
    /// parameters: 40 MB).
    public var aggregate: Aggregate = .mean
    /// beta of `trimmedMean`, in [0, 0.5).
    public var trimFraction: Double = 0.1
    /// Central differential privacy (mode `off` by default).
    public var privacy = PrivacyConfig()

    public init(bufferSize: Int = 10, maxWait: Duration? = .seconds(30), exampleWeighting: Bool = false, exampleCap: UInt64 = 10_000,
                optimizer: ServerOptimizer.Config = .init(), aggregate: Aggregate = .mean, trimFraction: Double = 0.1,
                privacy: PrivacyConfig = PrivacyConfig()) {
        self.bufferSize = bufferSize
        self.maxWait = maxWait
        self.exampleWeighting = exampleWeighting
        self.exampleCap = exampleCap
        self.optimizer = optimizer
        self.aggregate = aggregate
        self.trimFraction = trimFraction
        self.privacy = privacy
    }

    /// Why this configuration is invalid (nil when valid).
    public func validationError() -> String? {
        guard bufferSize >= 1 else { return "fedbuff.buffer_size must be >= 1, not \(bufferSize)" }
        if let w = maxWait, w <= .zero { return "fedbuff.max_wait_s must be > 0" }
        guard exampleCap >= 1 else { return "fedbuff.example_cap must be >= 1" }
        guard trimFraction.isFinite, trimFraction >= 0, trimFraction < 0.5 else {
            return "fedbuff.trim_fraction must be in [0, 0.5), not \(trimFraction)"
        }
        if aggregate != .mean && exampleWeighting {
            return "fedbuff.aggregate \(aggregate.rawValue) weighs every delta alike: set fedbuff.example_weighting false"
        }
        if let e = privacy.validationError() { return e }
        if privacy.mode == .central {
            if aggregate != .mean {
                return "privacy.mode central needs fedbuff.aggregate mean: the noise is calibrated to the sum's sensitivity, not to a \(aggregate.rawValue)'s"
            }
            if exampleWeighting {
                return "privacy.mode central needs fedbuff.example_weighting false: an example weight would let one client move the sum by more than privacy.clip"
            }
        }
        return optimizer.validationError()
    }
}

/// The deltas waiting for the next server step.
package final class FedBuffer {
    /// A buffered delta: its receipt (finished at the flush), the client epoch it came with
    /// (for the dedup table), its weight and ledger data.
    package typealias Contribution = (receipt: Receipt, epoch: UInt64, weight: Double, norm: Double, samples: UInt64)
    package let config: FedBuffConfig
    package private(set) var optimizer: ServerOptimizer
    package private(set) var started: ContinuousClock.Instant?
    private var sum: [Float]
    /// The weighted deltas `w_i d_i`, in arrival order (robust aggregates only).
    private var deltas: [[Float]] = []
    private var exampleTotal: Double = 0
    /// Central DP: clipping bound, noise and accountant (nil when privacy is off).
    package let privacy: CentralPrivacy?
    /// What the norm of a delta is measured against.
    package let zeros: [Float]
    /// "client id \0 epoch \0 seq" -> its contribution; in arrival order in `order`.
    package private(set) var contributions: [String: Contribution] = [:]
    private var order: [String] = []
    /// The clients with a delta in the buffer.
    private var clients: Set<String> = []
    /// Server steps taken (flushes), for /status.
    package private(set) var flushes: UInt64 = 0

    /// `resuming`: the optimizer state of a checkpoint, used when it is of the configured kind;
    /// `privacy`: the privacy accountant of a checkpoint.
    package init(config: FedBuffConfig, parameterCount: Int, resuming saved: CheckpointState.OptimizerState? = nil,
                 privacy savedPrivacy: CheckpointState.PrivacyState? = nil) {
        self.config = config
        optimizer = ServerOptimizer(config.optimizer, parameterCount: parameterCount, resuming: saved)
        sum = [Float](repeating: 0, count: config.aggregate == .mean ? parameterCount : 0)
        zeros = [Float](repeating: 0, count: parameterCount)
        privacy = config.privacy.mode == .central ? CentralPrivacy(config: config.privacy, bufferSize: config.bufferSize, resuming: savedPrivacy) : nil
    }

    package var count: Int { order.count }
    package var deadline: ContinuousClock.Instant? { started.flatMap { s in config.maxWait.map { s + $0 } } }

    package func isReady(now: ContinuousClock.Instant) -> Bool {
        if count >= config.bufferSize { return true }
        if count > 0, let d = deadline, now >= d { return true }
        return false
    }

    static func key(_ client: String, _ epoch: UInt64, _ seq: UInt64) -> String { client + "\u{0}" + String(epoch) + "\u{0}" + String(seq) }

    package func contains(client: String, epoch: UInt64 = 0, seq: UInt64) -> Bool { contributions[Self.key(client, epoch, seq)] != nil }

    /// Whether `client` has a delta in the buffer.
    package func holds(client: String) -> Bool { clients.contains(client) }

    /// The example weight `e_i` of an update with `samples` examples.
    package func exampleWeight(samples: UInt64) -> Double {
        config.exampleWeighting ? Double(min(max(samples, 1), config.exampleCap)) : 1
    }

    /// Adds `staleness weight * e_i * clip * delta` to the sum: a dense delta's float32 blocks.
    package func add(_ payload: some Sequence<UnsafeRawBufferPointer>, stalenessWeight: Double, clip: Double, receipt: Receipt,
                     epoch: UInt64 = 0, norm: Double, samples: UInt64) {
        admit(stalenessWeight: stalenessWeight, clip: clip, receipt: receipt, epoch: epoch, norm: norm, samples: samples) { s, c in
            var offset = 0
            for f in payload {
                let n = f.count / 4
                guard n > 0, let src = f.baseAddress else { continue }
                for i in 0..<n { s[offset + i] += c * src.loadUnaligned(fromByteOffset: i &* 4, as: Float.self) }
                offset += n
            }
        }
    }

    /// The same for a sparse delta (top-k entries).
    package func add(sparse frames: some Collection<UnsafeRawBufferPointer>, stalenessWeight: Double, clip: Double, receipt: Receipt,
                     epoch: UInt64 = 0, norm: Double, samples: UInt64) {
        admit(stalenessWeight: stalenessWeight, clip: clip, receipt: receipt, epoch: epoch, norm: norm, samples: samples) { s, c in
            UpdateCodec.forEachEntry(frames) { i, v in s[i] += c * v }
        }
    }

    /// Records a contribution and lets `accumulate` add `c * delta` to the sum, `c` its weight.
    private func admit(stalenessWeight: Double, clip: Double, receipt: Receipt, epoch: UInt64, norm: Double, samples: UInt64,
                       accumulate: (UnsafeMutableBufferPointer<Float>, Float) -> Void) {
        if started == nil { started = .now }
        let e = exampleWeight(samples: samples)
        let w = stalenessWeight * e * clip
        if config.aggregate == .mean {
            sum.withUnsafeMutableBufferPointer { accumulate($0, Float(w)) }
        } else {
            var d = zeros
            d.withUnsafeMutableBufferPointer { accumulate($0, Float(w)) }
            deltas.append(d)
        }
        exampleTotal += e
        let k = Self.key(receipt.clientID, epoch, receipt.seq)
        contributions[k] = (receipt, epoch, w, norm, samples)
        order.append(k)
        clients.insert(receipt.clientID)
    }

    /// One server step on `model` with the buffer's average; returns the contributions (their
    /// receipts at `version`) and empties the buffer.
    /// With central DP, the sum is noised and divided by K (not by its count): see `PrivacyConfig`.
    package func flush(into model: UnsafeMutableBufferPointer<Float>, version: UInt64) -> [Contribution] {
        // The mean's divisor: the example total, or K with central DP.
        let divisor = privacy == nil ? exampleTotal : Double(config.bufferSize)
        switch config.aggregate {
        case .mean:
            let scale = Float(1 / max(divisor, .leastNormalMagnitude))
            sum.withUnsafeMutableBufferPointer { s in
                privacy?.release(s)
                for i in 0..<s.count { s[i] *= scale }
                optimizer.step(model: model, pseudoGradient: UnsafeBufferPointer(s))
                for i in 0..<s.count { s[i] = 0 }
            }
        case .median, .trimmedMean:
            let trim = config.aggregate == .median ? nil : Int((config.trimFraction * Double(deltas.count)).rounded(.down))
            let d = RobustAggregate.coordinateWise(deltas, trim: trim)
            d.withUnsafeBufferPointer { optimizer.step(model: model, pseudoGradient: $0) }
            deltas = []
        }
        let done = order.map { k -> Contribution in
            let c = contributions[k]!
            var r = c.receipt
            r.modelVersion = version
            r.mixingWeight = c.weight / divisor
            return (r, c.epoch, c.weight, c.norm, c.samples)
        }
        contributions = [:]
        order = []
        clients = []
        exampleTotal = 0
        started = nil
        flushes += 1
        return done
    }
}

extension MergeEngine {
    /// FedBuff: adds a validated delta to the buffer. Its receipt is deferred to the flush.
    package func buffer(_ h: UpdateHeader, view: Codec.UpdateView, staleness s: UInt64, norm: Double, clip: Double) -> Outcome {
        guard let buffer else { preconditionFailure("buffer outside fedbuff mode") }
        let r = receipt(for: h, .merged, version: version + 1, staleness: s)
        let w = rule.staleness.weight(staleness: s)
        if h.codec.isSparse {
            buffer.add(sparse: view.payload, stalenessWeight: w, clip: clip, receipt: r, epoch: h.epoch, norm: norm, samples: h.sampleCount)
        } else {
            buffer.add(denseBlocks(view), stalenessWeight: w, clip: clip, receipt: r, epoch: h.epoch, norm: norm, samples: h.sampleCount)
        }
        return Outcome(receipt: nil, reason: .none, detail: "deferred", updateNorm: norm, sampleCount: h.sampleCount)
    }

    /// Flushes the buffer when it is full (or waited long enough): one server step, a new
    /// version, the contributions recorded in the dedup table; returns their outcomes.
    package func flushBufferIfReady(now: ContinuousClock.Instant) -> [Outcome] {
        guard let buffer, buffer.isReady(now: now) else { return [] }
        if let p = buffer.privacy { precondition(p.canStep, "a delta was buffered past the privacy budget") }
        version += 1
        let done = buffer.flush(into: parameters, version: version)
        stats.version = version
        var outcomes: [Outcome] = []
        for c in done {
            stats.merged += 1
            stats.stalenessSum += c.receipt.staleness ?? 0
            stats.maxStaleness = max(stats.maxStaleness, c.receipt.staleness ?? 0)
            dedup.record(client: c.receipt.clientID, epoch: c.epoch, seq: c.receipt.seq, outcome: c.receipt.outcome)
            outcomes.append(Outcome(receipt: c.receipt, reason: .none, detail: "", updateNorm: c.norm, sampleCount: c.samples))
        }
        if let p = buffer.privacy { stats.privacy = p.status }
        return outcomes
    }
}
