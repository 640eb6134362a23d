@testable import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Foundation
import Testing

/// The RDP accountant against known values and its own monotonicity (the grid against Google's
/// dp-accounting is Tests/privacy/check_accountant.py, run by `make test`).
struct RDPAccountantTests {
    @Test func theDPSGDExampleOfDpAccountingGivesEpsilon171() {
        // RdpAccountant().compose(PoissonSampledDpEvent(0.01, GaussianDpEvent(1.1)), 1000).get_epsilon(1e-5) = 1.71
        let e = RDPAccountant.epsilon(noiseMultiplier: 1.1, samplingRate: 0.01, steps: 1000, delta: 1e-5)
        #expect(abs(e - 1.71) < 0.01, "\(e)")
    }

    @Test func withoutSamplingEachOrderCostsAlphaOverTwoZSquaredPerStep() {
        // q = 1: rdp(a) = T a / (2 z^2); epsilon is the minimum of the conversion over the orders.
        let z = 4.0, t: UInt64 = 10, delta = 1e-5
        let expected = RDPAccountant.defaultOrders.map { a in
            Double(t) * a / (2 * z * z) + log1p(-1 / a) - log(delta * a) / (a - 1)
        }.min()!
        #expect(abs(RDPAccountant.epsilon(noiseMultiplier: z, samplingRate: 1, steps: t, delta: delta) - expected) < 1e-12)
    }

    @Test func epsilonGrowsWithStepsAndSamplingAndFallsWithNoise() {
        func eps(_ z: Double, _ q: Double, _ t: UInt64) -> Double { RDPAccountant.epsilon(noiseMultiplier: z, samplingRate: q, steps: t, delta: 1e-5) }
        var last = 0.0
        for t: UInt64 in [1, 10, 100, 1000] {
            let e = eps(1.0, 0.05, t)
            #expect(e > last)
            last = e
        }
        #expect(eps(1.0, 0.01, 100) < eps(1.0, 0.1, 100) && eps(1.0, 0.1, 100) < eps(1.0, 1, 100))
        #expect(eps(2.0, 0.1, 100) < eps(1.0, 0.1, 100))
        #expect(RDPAccountant().epsilon(delta: 1e-5) == 0, "nothing spent before the first step")
    }

    @Test func composingStepByStepEqualsComposingAtOnce() {
        var a = RDPAccountant()
        for _ in 0..<50 { a.compose(noiseMultiplier: 1.3, samplingRate: 0.02) }
        var b = RDPAccountant()
        b.compose(noiseMultiplier: 1.3, samplingRate: 0.02, count: 50)
        #expect(a.steps == 50 && abs(a.epsilon(delta: 1e-6) - b.epsilon(delta: 1e-6)) < 1e-9)
    }
}

/// The noise: its cipher, its scale.
struct GaussianNoiseTests {
    @Test func theKeyStreamIsChaCha20s() {
        // RFC 7539 / 8439 appendix A.1, test vector #1: zero key, zero nonce, block 0 starts 76 b8 e0 ad a0 f1 3d 90.
        var g = GaussianNoise(key: [UInt32](repeating: 0, count: 8))
        #expect(g.next() == 0x903d_f1a0_ade0_b876)
    }

    @Test func samplesHaveTheRequestedStandardDeviation() {
        var g = GaussianNoise(seed: 42)
        var v = [Float](repeating: 0, count: 200_000)
        v.withUnsafeMutableBufferPointer { g.add(standardDeviation: 0.5, to: $0) }
        let mean = v.reduce(0.0) { $0 + Double($1) } / Double(v.count)
        let std = (v.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(v.count)).squareRoot()
        #expect(abs(mean) < 0.005 && abs(std - 0.5) < 0.005, "mean \(mean) std \(std)")
    }

    @Test func unseededGeneratorsDiffer() {
        var a = GaussianNoise(), b = GaussianNoise()
        #expect(a.next() != b.next())
    }
}

/// Central DP in the FedBuff engine: clipping, the noise on the sum, the fixed denominator,
/// the budget, the accountant in the checkpoint.
struct CentralPrivacyTests {
    static func config(k: Int, clip: Double = 1, z: Double = 1, budget: Double? = nil, maxWait: Duration? = .seconds(3600)) -> FedBuffConfig {
        FedBuffConfig(bufferSize: k, maxWait: maxWait,
                      privacy: PrivacyConfig(mode: .central, clip: clip, noiseMultiplier: z, delta: 1e-5, epsilonBudget: budget, noiseSeed: 7))
    }

    static func engine(_ c: FedBuffConfig) -> MergeEngine {
        let e = FedBuffTests.engine(k: c.bufferSize)
        e.buffer = FedBuffer(config: c, parameterCount: 6)
        return e
    }

    @Test func everyDeltaIsClippedToTheBoundAndTheSumIsDividedByK() {
        // Noise of std 1e-9 * C: the clipping is what shows.
        let e = Self.engine(Self.config(k: 2, clip: 1, z: 1e-9, maxWait: .seconds(5)))
        _ = FedBuffTests.delta(e, "a", seq: 1, [3, 0, 0, 0, 4, 0])   // norm 5 -> [0.6, 0, 0, 0, 0.8, 0]
        let start = e.buffer!.started!
        let done = e.flushBufferIfReady(now: start + .seconds(5))
        // Its mixing weight: clip factor 0.2 over K = 2 (a flush below K still divides by K).
        #expect(done.count == 1 && abs((done[0].receipt?.mixingWeight ?? 0) - 0.1) < 1e-12)
        let p = Array(e.parameters)
        #expect(abs(p[0] - 0.3) < 1e-6 && abs(p[4] - 0.4) < 1e-6 && abs(p[1]) < 1e-6, "\(p)")
        // A delta inside the bound is not scaled.
        _ = FedBuffTests.delta(e, "b", seq: 1, base: 1, [0.2, 0, 0, 0, 0, 0])
        _ = FedBuffTests.delta(e, "c", seq: 1, base: 1, [0.2, 0, 0, 0, 0, 0])
        #expect(e.flushBufferIfReady(now: .now).count == 2)
        #expect(abs(e.parameters[0] - 0.5) < 1e-6)
    }

    @Test func theNoiseOnTheAverageHasStandardDeviationZTimesCOverK() {
        // K = 4 zero deltas: the step is the noise alone, std z C / K = 1.5 * 2 / 4 = 0.75.
        let n = 100_000
        let b = FedBuffer(config: Self.config(k: 4, clip: 2, z: 1.5), parameterCount: n)
        let zero = [Float](repeating: 0, count: n)
        for i in 0..<4 {
            let r = Receipt(clientID: "c\(i)", runID: 1, seq: 1, baseVersion: 0, modelVersion: 1, staleness: 0, mixingWeight: 0,
                            decision: .merged, reason: .none)
            zero.withUnsafeBytes { raw in b.add(CollectionOfOne(raw), stalenessWeight: 1, clip: 1, receipt: r, norm: 0, samples: 1) }
        }
        var model = [Float](repeating: 0, count: n)
        _ = model.withUnsafeMutableBufferPointer { b.flush(into: $0, version: 1) }
        let mean = model.reduce(0.0) { $0 + Double($1) } / Double(n)
        let std = (model.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n)).squareRoot()
        #expect(abs(mean) < 0.01 && abs(std - 0.75) / 0.75 < 0.01, "mean \(mean) std \(std)")
        #expect(b.privacy?.accountant.steps == 1, "one flush, one step for the accountant")
    }

    @Test("a client's second delta while its first is in the buffer is refused (one delta per client per buffer), its resend is still deferred, and after the flush it is welcome again")
    func oneDeltaPerClientPerBuffer() {
        let e = Self.engine(Self.config(k: 3))
        #expect(FedBuffTests.delta(e, "a", seq: 1, [0.1, 0, 0, 0, 0, 0]).reason == .none)
        let second = FedBuffTests.delta(e, "a", seq: 2, [0.1, 0, 0, 0, 0, 0])
        #expect(second.reason == .unavailable && second.receipt?.decision == .rejected && second.detail.contains("one delta per client per buffer"))
        #expect(FedBuffTests.delta(e, "a", seq: 1, [0.1, 0, 0, 0, 0, 0]).detail == "deferred", "a resend of the buffered one")
        #expect(e.buffer?.count == 1)
        #expect(FedBuffTests.delta(e, "b", seq: 1, [0.1, 0, 0, 0, 0, 0]).reason == .none)
        #expect(FedBuffTests.delta(e, "c", seq: 1, [0.1, 0, 0, 0, 0, 0]).reason == .none)
        #expect(e.flushBufferIfReady(now: .now).count == 3)
        #expect(FedBuffTests.delta(e, "a", seq: 3, base: 1, [0.1, 0, 0, 0, 0, 0]).reason == .none)
    }

    @Test func theBudgetStopsTheFlushThatWouldExceedIt() {
        let two = RDPAccountant.epsilon(noiseMultiplier: 1, samplingRate: 1, steps: 2, delta: 1e-5)
        let three = RDPAccountant.epsilon(noiseMultiplier: 1, samplingRate: 1, steps: 3, delta: 1e-5)
        let e = Self.engine(Self.config(k: 1, budget: (two + three) / 2))
        for seq: UInt64 in 1...2 {
            #expect(FedBuffTests.delta(e, "a", seq: seq, base: seq - 1, [0.1, 0, 0, 0, 0, 0]).reason == .none)
            #expect(e.flushBufferIfReady(now: .now).count == 1)
        }
        #expect(e.version == 2 && e.stats.privacy?.exhausted == true)
        #expect(abs((e.stats.privacy?.epsilon ?? 0) - two) < 1e-12)
        let refused = FedBuffTests.delta(e, "a", seq: 3, base: 2, [0.1, 0, 0, 0, 0, 0])
        #expect(refused.reason == .unavailable && refused.receipt?.decision == .rejected)
        #expect(refused.detail.contains("privacy budget exhausted"))
        #expect(e.flushBufferIfReady(now: .now).isEmpty && e.version == 2 && e.buffer?.count == 0)
    }

    @Test func epsilonIsInTheCheckpointAndNeverGoesBackAfterAResume() throws {
        let c = Self.config(k: 1)
        let e = Self.engine(c)
        for seq: UInt64 in 1...3 {
            _ = FedBuffTests.delta(e, "a", seq: seq, base: seq - 1, [0.1, 0, 0, 0, 0, 0])
            _ = e.flushBufferIfReady(now: .now)
        }
        let before = try #require(e.stats.privacy)
        let saved = try Checkpoint.decode(try Checkpoint.encode(e.checkpointState()))
        let p = try #require(saved.privacy)
        #expect(p.steps == 3 && p.epsilon == before.epsilon && p.delta == 1e-5 && p.rdp == e.buffer?.privacy?.accountant.rdp)
        // Resumed: the accountant goes on from the saved RDP, not from zero.
        let r = MergeEngine(resuming: saved, rule: e.rule, dedupWindow: 64)
        r.buffer = FedBuffer(config: c, parameterCount: 6, privacy: p)
        #expect(r.buffer?.privacy?.epsilon == before.epsilon)
        _ = FedBuffTests.delta(r, "a", seq: 4, base: 3, [0.1, 0, 0, 0, 0, 0])
        #expect(r.flushBufferIfReady(now: .now).count == 1)
        #expect((r.stats.privacy?.epsilon ?? 0) > before.epsilon && r.stats.privacy?.steps == 4)
    }

    @Test func aCheckpointWithABrokenAccountantIsRefused() throws {
        let e = Self.engine(Self.config(k: 1))
        var s = e.checkpointState()
        s.privacy?.rdp.removeLast()
        #expect(throws: CheckpointError.self) { try Checkpoint.encode(s) }
        let good = try #require(try Checkpoint.decode(try Checkpoint.encode(e.checkpointState())).privacy)
        #expect(good.steps == 0 && good.epsilon == 0)
        #expect(throws: CheckpointError.self) { try Checkpoint.parsePrivacy(#"{"steps":1,"epsilon":0.5,"delta":1e-5,"rdp":[1,2]}"#) }
        #expect(throws: CheckpointError.self) { try Checkpoint.parsePrivacy(#"{"steps":1,"epsilon":-1,"delta":1e-5,"rdp":[]}"#) }
        let rdp = [String](repeating: "0.5", count: RDPAccountant.defaultOrders.count).joined(separator: ",")
        #expect(try Checkpoint.parsePrivacy(#"{"steps":2,"epsilon":3.5,"delta":1e-05,"rdp":[\#(rdp)]}"#).steps == 2)
    }

    @Test func anAdaptiveBoundFollowsTheTargetQuantileAndSurvivesACheckpoint() throws {
        // Noise of std 1e-6 (z and sigma_b): the count is exact enough to check the step by hand.
        var c = Self.config(k: 2, clip: 1, z: 1e-6)
        c.privacy.adaptiveClipping = .init(targetQuantile: 0.5, learningRate: 0.2, countStandardDeviation: 1e-6)
        let e = Self.engine(c)
        let p = try #require(e.buffer?.privacy)
        // z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) = z / sqrt(3/4).
        #expect(abs(p.deltaNoiseMultiplier - 1e-6 / 0.75.squareRoot()) < 1e-12)
        // Both deltas over the bound: 0 of 2 unclipped, C *= exp(-0.2 (0 - 0.5)).
        _ = FedBuffTests.delta(e, "a", seq: 1, [5, 0, 0, 0, 0, 0])
        _ = FedBuffTests.delta(e, "b", seq: 1, [0, 5, 0, 0, 0, 0])
        #expect(e.flushBufferIfReady(now: .now).count == 2)
        #expect(abs(p.clip - exp(0.1)) < 1e-5 && abs((e.stats.privacy?.clip ?? 0) - exp(0.1)) < 1e-5)
        // The new bound clips the next buffer: both within it, C *= exp(-0.2 (1 - 0.5)).
        let before = Array(e.parameters)
        _ = FedBuffTests.delta(e, "a", seq: 2, base: 1, [0.5, 0, 0, 0, 0, 0])
        _ = FedBuffTests.delta(e, "b", seq: 2, base: 1, [0.5, 0, 0, 0, 0, 0])
        #expect(e.flushBufferIfReady(now: .now).count == 2)
        #expect(abs(p.clip - 1) < 1e-5 && abs((e.parameters[0] - before[0]) - 0.5) < 1e-5)
        // The bound is in the checkpoint and a resume goes on from it.
        let saved = try #require(try Checkpoint.decode(try Checkpoint.encode(e.checkpointState())).privacy)
        #expect(saved.clip == p.clip)
        let resumed = FedBuffer(config: c, parameterCount: 6, privacy: saved)
        #expect(resumed.privacy?.clip == p.clip && resumed.privacy?.accountant.steps == 2)
        // A fixed bound is not stored.
        #expect(Self.engine(Self.config(k: 1)).checkpointState().privacy?.clip == nil)
    }

    @Test func invalidPrivacySettingsAreNamed() {
        #expect(PrivacyConfig(mode: .central, clip: 0).validationError()?.contains("privacy.clip") == true)
        #expect(PrivacyConfig(mode: .central, noiseMultiplier: -1).validationError()?.contains("privacy.noise_multiplier") == true)
        #expect(PrivacyConfig(mode: .central, delta: 1).validationError()?.contains("privacy.delta") == true)
        #expect(PrivacyConfig(mode: .central, samplingRate: 1.5).validationError()?.contains("privacy.sampling_rate") == true)
        #expect(PrivacyConfig(mode: .off, clip: 0).validationError() == nil, "off: nothing is read")
        var adaptive = PrivacyConfig(mode: .central, noiseMultiplier: 1)
        adaptive.adaptiveClipping = .init(countStandardDeviation: 0.5)
        #expect(adaptive.validationError()?.contains("privacy.clipped_count_stddev must exceed noise_multiplier / 2") == true)
        adaptive.adaptiveClipping = .init(targetQuantile: 1.5)
        #expect(adaptive.validationError()?.contains("privacy.target_quantile") == true)
        var c = Self.config(k: 2)
        c.aggregate = .median
        #expect(c.validationError()?.contains("needs fedbuff.aggregate mean") == true)
        c = Self.config(k: 2)
        c.exampleWeighting = true
        #expect(c.validationError()?.contains("example_weighting false") == true)
    }
}
