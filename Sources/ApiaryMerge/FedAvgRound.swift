import ApiaryCore
import ApiaryProtocol
import Foundation

/// Synchronous FedAvg over the same sockets: the baseline every speed claim is measured
/// against. Round r trains on version r; the aggregator waits for the expected clients (or,
/// after `roundTimeout`, a quorum of `minClients`), then sets
/// `d = sum(w_i (x_i - x)) / sum(w_i)` with `w_i` the sample counts, takes the server step
/// (`ServerOptimizer`; `sgd` with learning rate 1, the default, is plain FedAvg `x += d`;
/// `momentum` is FedAvgM, `adam` FedAdam, `yogi` FedYogi), and publishes version r + 1.
/// Receipts of a round go out when it closes.
public struct FedAvgConfig: Sendable, Hashable {
    /// Clients a round waits for.
    public var expectedClients: Int
    /// After `roundTimeout`, a round closes with at least this many contributions (by
    /// default all of them: `expectedClients`).
    public var minClients: Int
    public var roundTimeout: Duration
    /// The server step with the round's average.
    public var optimizer: ServerOptimizer.Config

    public init(expectedClients: Int, minClients: Int? = nil, roundTimeout: Duration = .seconds(60), optimizer: ServerOptimizer.Config = .init()) {
        self.expectedClients = expectedClients
        self.minClients = minClients ?? expectedClients
        self.roundTimeout = roundTimeout
        self.optimizer = optimizer
    }

    /// Why this configuration is invalid (nil when valid).
    public func validationError() -> String? {
        guard expectedClients >= 1 else { return "sync.expected_clients must be at least 1, not \(expectedClients)" }
        guard (1...expectedClients).contains(minClients) else {
            return "sync.min_clients must be in 1...\(expectedClients) (sync.expected_clients), not \(minClients)"
        }
        guard roundTimeout > .zero else { return "sync.round_timeout_s must be positive" }
        return optimizer.validationError()
    }
}

/// The contributions of the round in progress.
package final class FedAvgRound {
    package let config: FedAvgConfig
    package private(set) var started: ContinuousClock.Instant?
    private var sumDelta: [Float]
    private var totalWeight: Double = 0
    /// Client id -> its contribution's receipt (finished when the round closes) and ledger data.
    package private(set) var contributions: [String: Contribution] = [:]
    /// A contribution: its receipt, the client epoch it came with (for the dedup table), its
    /// weight and ledger data.
    package typealias Contribution = (receipt: Receipt, epoch: UInt64, weight: Double, norm: Double, samples: UInt64)

    package private(set) var optimizer: ServerOptimizer

    /// `resuming`: the optimizer state of a checkpoint; used when it is of the configured kind.
    package init(config: FedAvgConfig, parameterCount: Int, resuming saved: CheckpointState.OptimizerState? = nil) {
        self.config = config
        sumDelta = [Float](repeating: 0, count: parameterCount)
        optimizer = ServerOptimizer(config.optimizer, parameterCount: parameterCount, resuming: saved)
    }

    package var count: Int { contributions.count }

    /// When the round may close on a quorum.
    package var deadline: ContinuousClock.Instant? { started.map { $0 + config.roundTimeout } }

    package func isReady(now: ContinuousClock.Instant) -> Bool {
        if count >= config.expectedClients { return true }
        if let d = deadline, now >= d, count >= config.minClients { return true }
        return false
    }

    /// Adds `weight * clip * (update - model)` to the round's sum.
    package func add(_ payload: some Sequence<UnsafeRawBufferPointer>, model: UnsafeBufferPointer<Float>, weight: Double, clip: Double,
             receipt: Receipt, epoch: UInt64 = 0, norm: Double, samples: UInt64) {
        if started == nil { started = .now }
        let c = Float(weight * clip)
        var offset = 0
        sumDelta.withUnsafeMutableBufferPointer { sum in
            for f in payload {
                let n = f.count / 4
                guard n > 0, let src = f.baseAddress else { continue }
                for i in 0..<n {
                    let x = src.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
                    sum[offset + i] += c * (x - model[offset + i])
                }
                offset += n
            }
        }
        totalWeight += weight
        contributions[receipt.clientID] = (receipt, epoch, weight, norm, samples)
    }

    /// Applies the average to `model` and returns the contributions; resets the round.
    package func close(into model: UnsafeMutableBufferPointer<Float>) -> [Contribution] {
        let scale = Float(1 / max(totalWeight, .leastNormalMagnitude))
        sumDelta.withUnsafeMutableBufferPointer { sum in
            for i in 0..<sum.count { sum[i] *= scale }
            optimizer.step(model: model, pseudoGradient: UnsafeBufferPointer(sum))
            for i in 0..<sum.count { sum[i] = 0 }
        }
        let done = contributions.values.map { c -> Contribution in
            var r = c.receipt
            r.mixingWeight = c.weight / totalWeight
            return (r, c.epoch, c.weight, c.norm, c.samples)
        }
        contributions = [:]
        totalWeight = 0
        started = nil
        return done
    }
}

extension MergeEngine {
    /// Sync mode: adds a validated update to the round instead of merging it. Its receipt is
    /// deferred to the close of the round (the outcome carries no receipt).
    package func contribute(_ h: UpdateHeader, payload: some Sequence<UnsafeRawBufferPointer>, norm: Double, clip: Double) -> Outcome {
        guard let round else { preconditionFailure("contribute outside sync mode") }
        if let existing = round.contributions[h.clientID] {
            if existing.receipt.seq == h.seq && existing.epoch == h.epoch {
                // A resend of the update already in this round: its receipt comes with the round.
                stats.rejected[.duplicate, default: 0] += 1
                return Outcome(receipt: nil, reason: .none, detail: "deferred", sampleCount: h.sampleCount)
            }
            return reject(h, reason: .duplicate, detail: "client already contributed to round \(version)", staleness: 0)
        }
        let weight = Double(max(h.sampleCount, 1))
        let r = receipt(for: h, .merged, version: version + 1, staleness: 0)
        round.add(payload, model: UnsafeBufferPointer(parameters), weight: weight, clip: clip, receipt: r, epoch: h.epoch, norm: norm,
                  samples: h.sampleCount)
        return Outcome(receipt: nil, reason: .none, detail: "deferred", updateNorm: norm, sampleCount: h.sampleCount)
    }

    /// Closes the round when it is ready: applies the average, bumps the version, records
    /// the contributions in the dedup table and returns their outcomes (with receipts).
    package func closeRoundIfReady(now: ContinuousClock.Instant) -> [Outcome] {
        guard let round, round.isReady(now: now) else { return [] }
        let done = round.close(into: parameters)
        version += 1
        stats.version = version
        var outcomes: [Outcome] = []
        for c in done {
            stats.merged += 1
            dedup.record(client: c.receipt.clientID, epoch: c.epoch, seq: c.receipt.seq, outcome: c.receipt.outcome)
            outcomes.append(Outcome(receipt: c.receipt, reason: .none, detail: "", updateNorm: c.norm, sampleCount: c.samples))
        }
        return outcomes
    }
}
