import ApiaryCore
@testable import ApiaryMerge
import ApiaryProtocol
import Foundation
import Testing

/// FedAsync's anomaly filter in the merge engine: seeded honest updates pull the model along
/// one direction with noise; attackers send that step negated, scaled or replaced by noise.
struct AnomalyFilterTests {
    static let count = 40
    static let layout = try! ParameterLayout([TensorSpec(name: "w", shape: [count])])

    /// A seeded normal generator (xorshift + Box-Muller), so that the tests need no other module.
    struct Normal {
        var state: UInt64
        mutating func uniform() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Double(state >> 11) + 0.5) / 9_007_199_254_740_992
        }
        mutating func next() -> Double { (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) }
    }

    /// Ingests `model + delta` as client `client`'s update `seq` on the current version.
    static func send(_ e: MergeEngine, client: String, seq: UInt64, delta: [Float]) -> MergeEngine.Outcome {
        let values = zip(Array(e.parameters), delta).map { $0 + $1 }
        let header = Codec.encode(UpdateHeader(runID: 7, baseVersion: e.version, seq: seq, sampleCount: 10, clientID: client))
        let frames: [[UInt8]] = [header, Codec.encodeLayout(layout), values.withUnsafeBytes { Array($0) }]
        return frames.withUnsafeRawBuffers { e.ingest($0) }
    }

    static func engine(_ config: AnomalyConfig = AnomalyConfig(warmup: 20, window: 100)) -> MergeEngine {
        let e = MergeEngine(layout: layout, parameters: [Float](repeating: 0, count: count), version: 0, runID: 7,
                            rule: FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 8), dedupWindow: 64)
        e.anomaly = AnomalyFilter(config: config, parameterCount: count)
        return e
    }

    /// The honest step: a fixed direction of norm 1 plus noise of norm about 0.5.
    static func honest(_ rng: inout Normal) -> [Float] {
        (0..<count).map { i in Float((i % 2 == 0 ? 1.0 : -1.0) / Double(count).squareRoot() + 0.5 * rng.next() / Double(count).squareRoot()) }
    }

    /// An engine that has accepted `n` honest updates.
    static func warmed(_ rng: inout Normal, n: Int = 60) -> MergeEngine {
        let e = engine()
        for s in 1...n { _ = send(e, client: "h", seq: UInt64(s), delta: honest(&rng)) }
        return e
    }

    @Test func honestUpdatesPassAfterTheWarmUp() {
        var rng = Normal(state: 0x5EED)
        let e = Self.engine()
        var rejected = 0
        for s in 1...300 {
            let o = Self.send(e, client: "h\(s % 10)", seq: UInt64(s), delta: Self.honest(&rng))
            if o.reason == .anomalous { rejected += 1 } else { #expect(o.reason == .none, "\(o.detail)") }
        }
        // A few false alarms at 3 robust deviations are expected; not more than 2 %.
        #expect(rejected <= 6, "\(rejected) honest updates of 300 rejected")
        #expect(e.anomaly!.accepted == UInt64(300 - rejected))
    }

    @Test(arguments: ["sign flip", "scaling x10", "noise"])
    func anAttackIsRejectedAndTheFilterDoesNotLearnFromIt(_ attack: String) {
        var rng = Normal(state: 0xA77AC)
        let e = Self.warmed(&rng)
        let f = e.anomaly!
        let (model, version, average, norms, cosines, accepted) = (Array(e.parameters), e.version, f.average, f.logNorms, f.cosines, f.accepted)
        let rejectedBefore = e.stats.rejected[.anomalous] ?? 0
        for s in 1...20 {
            let h = Self.honest(&rng)
            let delta: [Float] = switch attack {
            case "sign flip": h.map { -$0 }
            case "scaling x10": h.map { 10 * $0 }
            default: {
                let norm = h.reduce(0) { $0 + Double($1 * $1) }.squareRoot()
                return (0..<Self.count).map { _ in Float(norm * rng.next() / Double(Self.count).squareRoot()) }
            }()
            }
            let o = Self.send(e, client: "attacker", seq: UInt64(s), delta: delta)
            #expect(o.reason == .anomalous && o.receipt?.decision == .rejected && o.receipt?.reason == .anomalous, "\(attack): \(o.detail)")
        }
        #expect(Array(e.parameters) == model && e.version == version, "nothing merged")
        #expect(f.average == average && f.logNorms == norms && f.cosines == cosines && f.accepted == accepted, "the state did not move")
        #expect(e.stats.rejected[.anomalous] == rejectedBefore + 20)
        // Honest updates still pass afterwards.
        #expect(Self.send(e, client: "h", seq: 1000, delta: Self.honest(&rng)).reason == .none)
    }

    /// Ingests `base model + delta` as an update trained on version `base`.
    static func send(_ e: MergeEngine, client: String, seq: UInt64, base: UInt64, model: [Float], delta: [Float]) -> MergeEngine.Outcome {
        let values = zip(model, delta).map { $0 + $1 }
        let header = Codec.encode(UpdateHeader(runID: 7, baseVersion: base, seq: seq, sampleCount: 10, clientID: client))
        let frames: [[UInt8]] = [header, Codec.encodeLayout(layout), values.withUnsafeBytes { Array($0) }]
        return frames.withUnsafeRawBuffers { e.ingest($0) }
    }

    @Test(arguments: [129, 4])
    func aStaleUpdateIsScoredAgainstItsBaseWhileItIsKept(history: Int) {
        var rng = Normal(state: 21)
        let e = Self.engine(AnomalyConfig(warmup: 20, window: 100, history: history))
        for s in 1...40 { _ = Self.send(e, client: "h", seq: UInt64(s), delta: Self.honest(&rng)) }
        let (base, old) = (e.version, Array(e.parameters))
        // Six more merges (staleness 6, within max_staleness 8) move the model about 3 honest steps on.
        for s in 41...46 { _ = Self.send(e, client: "h", seq: UInt64(s), delta: Self.honest(&rng)) }
        let accepted = e.anomaly!.accepted
        let o = Self.send(e, client: "slow", seq: 1, base: base, model: old, delta: Self.honest(&rng))
        if history > 6 {
            #expect(o.reason == .none, "an honest step from version \(base): \(o.detail)")
            #expect(e.anomaly!.accepted == accepted + 1)
        } else {
            // Its base is no longer kept: against the current model it points backwards.
            #expect(o.reason == .anomalous, "\(o.detail)")
            #expect(e.anomaly!.accepted == accepted)
        }
    }

    @Test func nothingIsRejectedDuringTheWarmUp() {
        var rng = Normal(state: 3)
        let e = Self.engine(AnomalyConfig(warmup: 10, window: 20))
        for s in 1...9 { #expect(Self.send(e, client: "h", seq: UInt64(s), delta: Self.honest(&rng)).reason == .none) }
        #expect(Self.send(e, client: "x", seq: 1, delta: Self.honest(&rng).map { 100 * $0 }).reason == .none, "the 10th accepted update")
        #expect(Self.send(e, client: "x", seq: 2, delta: Self.honest(&rng).map { 100 * $0 }).reason == .anomalous)
    }

    @Test func nonFiniteAndNormBoundKeepTheirReasons() {
        var rng = Normal(state: 11)
        let e = Self.warmed(&rng)
        var bad = Self.honest(&rng)
        bad[3] = .nan
        #expect(Self.send(e, client: "x", seq: 1, delta: bad).reason == .nonFinite)
        bad[3] = .infinity
        #expect(Self.send(e, client: "x", seq: 2, delta: bad).reason == .nonFinite)
        e.maxUpdateNorm = 5
        #expect(Self.send(e, client: "x", seq: 3, delta: Self.honest(&rng).map { 100 * $0 }).reason == .normTooLarge, "the operator's bound comes first")
        #expect(Array(e.parameters).allSatisfy { $0.isFinite })
    }

    @Test func aResendOfARejectedUpdateIsADuplicate() {
        var rng = Normal(state: 12)
        let e = Self.warmed(&rng)
        let flipped = Self.honest(&rng).map { -10 * $0 }
        #expect(Self.send(e, client: "x", seq: 1, delta: flipped).reason == .anomalous)
        let again = Self.send(e, client: "x", seq: 1, delta: flipped)
        #expect(again.reason == .duplicate && again.receipt?.message.contains("anomalous") == true)
    }

    @Test func badParametersAreRefusedWithTheirKey() {
        #expect(AnomalyConfig().validationError() == nil)
        #expect(AnomalyConfig(window: 2).validationError()?.contains("robust.anomaly.window") == true)
        #expect(AnomalyConfig(warmup: 200, window: 100).validationError()?.contains("robust.anomaly.warmup") == true)
        #expect(AnomalyConfig(normThreshold: 0).validationError()?.contains("robust.anomaly.norm_threshold") == true)
        #expect(AnomalyConfig(cosineThreshold: .nan).validationError()?.contains("robust.anomaly.cosine_threshold") == true)
        #expect(AnomalyConfig(decay: 1.5).validationError()?.contains("robust.anomaly.decay") == true)
    }

    @Test func theRobustSpreadIsTheScaledMADWithAFloor() {
        let (m, s) = AnomalyFilter.medianAndSpread([1, 2, 3, 4, 100])
        #expect(m == 3 && abs(s - 1.4826) < 1e-12, "MAD of |x - 3| = [2, 1, 0, 1, 97] is 1")
        #expect(AnomalyFilter.medianAndSpread([5, 5, 5]).spread == AnomalyFilter.minimumSpread)
    }
}
