import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Testing

/// Local differential privacy (issue 14 item 2): the client's clip and noise, and the
/// aggregator's refusal of an update that does not say it was privatized.
struct LocalPrivacyTests {
    static func norm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }

    @Test("a delta over the bound is scaled to it (direction kept); one within it is left as it is")
    func clipping() {
        // Noise 1e-9 C: small enough to see the clip alone.
        var p = LocalPrivatizer(config: LocalDPConfig(clipNorm: 1, noiseMultiplier: 1e-9), noise: GaussianNoise(seed: 1))
        var big: [Float] = [3, 4, 0, 0]  // norm 5
        let before = big.withUnsafeMutableBufferPointer { p.privatize($0) }
        #expect(before == 5)
        #expect(abs(Self.norm(big) - 1) < 1e-6)
        for (x, y) in zip(big, [0.6, 0.8, 0, 0] as [Float]) { #expect(abs(x - y) < 1e-6) }
        var small: [Float] = [0.3, -0.4, 0, 0]  // norm 0.5
        #expect(abs((small.withUnsafeMutableBufferPointer { p.privatize($0) } ?? 0) - 0.5) < 1e-6)
        for (x, y) in zip(small, [0.3, -0.4, 0, 0] as [Float]) { #expect(abs(x - y) < 1e-6) }
    }

    @Test("the noise has standard deviation z C per value (seeded): empirical std within 1 %, mean near 0")
    func noiseScale() {
        let c = 0.5, z = 3.0, n = 200_000
        var p = LocalPrivatizer(config: LocalDPConfig(clipNorm: c, noiseMultiplier: z), noise: GaussianNoise(seed: 42))
        var zeros = [Float](repeating: 0, count: n)
        #expect(zeros.withUnsafeMutableBufferPointer { p.privatize($0) } == 0)
        let mean = zeros.reduce(0) { $0 + Double($1) } / Double(n)
        let std = (zeros.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n - 1)).squareRoot()
        #expect(abs(std - z * c) / (z * c) < 0.01, "std \(std), expected \(z * c)")
        #expect(abs(mean) < 4 * z * c / Double(n).squareRoot(), "mean \(mean)")
        // Two generators keyed from the system's CSPRNG do not repeat each other.
        var a = LocalPrivatizer(config: LocalDPConfig(clipNorm: 1, noiseMultiplier: 1)), b = LocalPrivatizer(config: LocalDPConfig(clipNorm: 1, noiseMultiplier: 1))
        var x = [Float](repeating: 0, count: 8), y = x
        _ = x.withUnsafeMutableBufferPointer { a.privatize($0) }
        _ = y.withUnsafeMutableBufferPointer { b.privatize($0) }
        #expect(x != y)
    }

    @Test("a value that is not finite cannot be privatized: nil, nothing changed")
    func nonFinite() {
        var p = LocalPrivatizer(config: LocalDPConfig(clipNorm: 1, noiseMultiplier: 1), noise: GaussianNoise(seed: 3))
        var v: [Float] = [1, .infinity, 2]
        #expect(v.withUnsafeMutableBufferPointer { p.privatize($0) } == nil)
        #expect(v == [1, .infinity, 2])
    }

    @Test("one client's epsilon: k updates of the Gaussian mechanism of multiplier z / 2 (sensitivity 2C), no amplification")
    func accounting() {
        let l = LocalDPConfig(clipNorm: 1, noiseMultiplier: 4)
        #expect(l.epsilon(updates: 10, delta: 1e-5) == RDPAccountant.epsilon(noiseMultiplier: 2, samplingRate: 1, steps: 10, delta: 1e-5))
        #expect(l.epsilon(updates: 1, delta: 1e-5) < l.epsilon(updates: 10, delta: 1e-5))
        #expect(LocalDPConfig(clipNorm: 1, noiseMultiplier: 0).validationError() != nil)
        #expect(LocalDPConfig(clipNorm: .nan, noiseMultiplier: 1).validationError() != nil)
        #expect(LocalDPConfig(clipNorm: 2, noiseMultiplier: 1).validationError() == nil)
    }

    static func update(_ e: MergeEngine, seq: UInt64, privatized: Bool, delta: Bool = false, values: [Float]) -> MergeEngine.Outcome {
        let header = Codec.encode(UpdateHeader(runID: MergeEngineTests.runID, baseVersion: e.version, seq: seq, sampleCount: 1,
                                               clientID: "c1", isDelta: delta, isPrivatized: privatized))
        return [header, Codec.encodeLayout(MergeEngineTests.layout), values.withUnsafeBytes { Array($0) }].withUnsafeRawBuffers { e.ingest($0) }
    }

    @Test("an aggregator that requires local DP refuses an update without flag bit 3 (not_privatized, 18) and changes nothing")
    func refusesUnprivatized() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        e.requireLocalPrivacy(LocalDPConfig(clipNorm: 1, noiseMultiplier: 1), delta: 1e-5)
        let o = Self.update(e, seq: 1, privatized: false, values: [1, 1, 1, 1, 1, 1])
        #expect(o.reason == .notPrivatized && o.reason.rawValue == 18 && o.reason.name == "not_privatized")
        #expect(o.receipt?.decision == .rejected && o.receipt?.reason == .notPrivatized && o.receipt?.mixingWeight == 0)
        #expect(o.receipt?.message.contains("local differential privacy") == true && o.receipt?.message.contains("flag bit 3") == true)
        #expect(e.version == 0 && e.stats.merged == 0 && e.stats.rejected[.notPrivatized] == 1)
        #expect(Array(e.parameters) == [Float](repeating: 0, count: 6))
        // Its resend is a duplicate of the rejection; a privatized update merges.
        #expect(Self.update(e, seq: 1, privatized: true, values: [1, 1, 1, 1, 1, 1]).reason == .duplicate)
        let ok = Self.update(e, seq: 2, privatized: true, values: [1, 1, 1, 1, 1, 1])
        #expect(ok.reason == .none && ok.receipt?.decision == .merged && e.version == 1)
    }

    @Test("without local DP an update with or without flag bit 3 merges (the bit is ignored)")
    func bitIgnoredWithoutLocalDP() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        #expect(Self.update(e, seq: 1, privatized: false, values: [1, 1, 1, 1, 1, 1]).reason == .none)
        #expect(Self.update(e, seq: 2, privatized: true, values: [1, 1, 1, 1, 1, 1]).reason == .none)
        #expect(e.version == 2)
    }
}
