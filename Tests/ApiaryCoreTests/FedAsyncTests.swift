import ApiaryCore
import Foundation
import Testing

@Suite("FedAsync rule")
struct FedAsyncTests {
    // MARK: Mixing weight, staleness, acceptance

    @Test("mixing weight is alpha * S(s)")
    func mixingWeight() {
        #expect(FedAsync(alpha: 0.6, staleness: .constant, maxStaleness: 10).mixingWeight(staleness: 7) == 0.6)
        #expect(approximatelyEqual(FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 10).mixingWeight(staleness: 3), 0.3))
        #expect(approximatelyEqual(FedAsync(alpha: 0.6, staleness: .polynomial(a: 1), maxStaleness: 10).mixingWeight(staleness: 4), 0.12))
        let hinge = FedAsync(alpha: 0.9, staleness: .hinge(a: 2, b: 3), maxStaleness: 10)
        #expect(hinge.mixingWeight(staleness: 3) == 0.9)
        #expect(approximatelyEqual(hinge.mixingWeight(staleness: 4), 0.3))
        #expect(approximatelyEqual(hinge.mixingWeight(staleness: 8), 0.9 / 11))
        #expect(FedAsync(alpha: 0, staleness: .constant, maxStaleness: 10).mixingWeight(staleness: 0) == 0)
    }

    @Test("staleness is current - base, nil when the base is newer than the model",
          arguments: [(UInt64(10), UInt64(7), UInt64?(3)), (5, 5, 0), (0, 0, 0), (.max, 0, .max), (7, 8, nil), (0, .max, nil)])
    func staleness(current: UInt64, base: UInt64, expected: UInt64?) {
        #expect(FedAsync.staleness(currentVersion: current, baseVersion: base) == expected)
    }

    @Test("accepts staleness up to and including maxStaleness")
    func acceptsBoundary() {
        let rule = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 4)
        #expect(rule.accepts(staleness: 0))
        #expect(rule.accepts(staleness: 4))
        #expect(!rule.accepts(staleness: 5))
        #expect(!rule.accepts(staleness: .max))
        let strict = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 0)
        #expect(strict.accepts(staleness: 0))
        #expect(!strict.accepts(staleness: 1))
        let lenient = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: .max)
        #expect(lenient.accepts(staleness: .max))
    }

    // MARK: Validation

    @Test("alpha in [0, 1] with a valid staleness function validates", arguments: [0.0, 0.25, 1.0])
    func validAlpha(alpha: Double) {
        #expect(FedAsync(alpha: alpha, staleness: .polynomial(a: 0.5), maxStaleness: 8).validationError() == nil)
    }

    @Test("alpha outside [0, 1], NaN or infinite is rejected", arguments: [-0.01, 1.01, -1, 2, .nan, .infinity, -.infinity])
    func invalidAlpha(alpha: Double) {
        #expect(FedAsync(alpha: alpha, staleness: .constant, maxStaleness: 8).validationError() != nil)
    }

    @Test("an invalid staleness function invalidates the rule")
    func invalidStaleness() {
        #expect(FedAsync(alpha: 0.5, staleness: .hinge(a: -1, b: 0), maxStaleness: 8).validationError() != nil)
        #expect(FedAsync(alpha: 0.5, staleness: .polynomial(a: .nan), maxStaleness: 8).validationError() != nil)
    }

    @Test("the rule round-trips through JSON")
    func codable() throws {
        for rule in [FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 3),
                     FedAsync(alpha: 0.25, staleness: .polynomial(a: 0.5), maxStaleness: 100),
                     FedAsync(alpha: 1, staleness: .hinge(a: 2, b: 3), maxStaleness: .max)] {
            let data = try JSONEncoder().encode(rule)
            #expect(try JSONDecoder().decode(FedAsync.self, from: data) == rule)
        }
    }

    // MARK: mix

    /// Runs `mix` on a copy of `model` with `update` placed at byte `offset` of a bigger buffer.
    func mixed(_ model: [Float], _ update: [Float], weight: Double, offset: Int = 0) -> [Float] {
        var out = model
        withRawBytes(float32Bytes(update), offset: offset) { raw in
            out.withUnsafeMutableBufferPointer { FedAsync.mix(into: $0, update: raw, weight: weight) }
        }
        return out
    }

    @Test("weight 0 leaves the model unchanged, bit for bit")
    func weightZero() {
        let model: [Float] = [1.5, -2.25, 3e-7, 1e30, .leastNonzeroMagnitude, -7, 0.1]
        let update: [Float] = [100, 200, -300, 4e30, 5, 6, 0.7]
        #expect(mixed(model, update, weight: 0).map(\.bitPattern) == model.map(\.bitPattern))
    }

    @Test("weight 1 replaces the model by the update")
    func weightOne() {
        let model: [Float] = [1.5, -2.25, 3e-7, 1e3, 0, -7, 0.1]
        let update: [Float] = [100, 200, -300, 4e3, 5, 6, 0.7]
        #expect(mixed(model, update, weight: 1).map(\.bitPattern) == update.map(\.bitPattern))
    }

    @Test("weight 0.25 gives 0.75 x + 0.25 x_client exactly")
    func weightQuarter() {
        let model: [Float] = [0, 4, -8, 1, 2, 100]
        let update: [Float] = [4, 0, 8, 1, -2, 0]
        #expect(mixed(model, update, weight: 0.25) == [1, 3, -4, 1, 1, 75])
    }

    @Test("weight 0.5 averages")
    func weightHalf() {
        #expect(mixed([2, -6, 10], [4, 6, -10], weight: 0.5) == [3, 0, 0])
    }

    @Test("an update equal to the model leaves it unchanged, for any weight",
          arguments: [0.0, 0.25, 0.5, 1.0, 0.1, 0.3, 1.0 / 3.0, 0.7, 0.9, 0.01])
    func fixedPoint(weight: Double) {
        var rng = SplitMix64(seed: 0xF1C5_0000 ^ weight.bitPattern)
        let model = (0..<1000).map { _ in Float(Double(rng.next() % 2_000_000) / 1000 - 1000) }
        let out = mixed(model, model, weight: weight)
        let changed = zip(out, model).filter { $0 != $1 }.count
        // KNOWN BUG (Sources/ApiaryCore/FedAsync.swift:49/53): `(1 - a) * x + a * x` is not `x`
        // in float32 for most weights (e.g. 0.1, 0.3, 1/3), so merging an unchanged model drifts
        // it by an ulp. Exact for 0, 0.25, 0.5, 1.
        #expect(changed == 0, "weight \(weight): \(changed) of 1000 values changed")
    }

    @Test("an unaligned update buffer gives the same result as an aligned one", arguments: [1, 2, 3])
    func unaligned(offset: Int) {
        var rng = SplitMix64(seed: 77)
        let model = (0..<257).map { _ in Float(Int(rng.next() % 20_001) - 10_000) / 64 }
        let update = (0..<257).map { _ in Float(Int(rng.next() % 20_001) - 10_000) / 64 }
        let aligned = mixed(model, update, weight: 0.3, offset: 0)
        let misaligned = mixed(model, update, weight: 0.3, offset: offset)
        #expect(aligned.map(\.bitPattern) == misaligned.map(\.bitPattern))
        // And both match the formula x + a (u - x) evaluated in float32.
        let a = Float(0.3)
        #expect(aligned == zip(model, update).map { $0 + a * ($1 - $0) })
    }

    @Test("an empty model is a no-op")
    func empty() {
        #expect(mixed([], [], weight: 0.5) == [])
    }

    @Test("mixing a slice of the model only touches that slice")
    func slice() {
        var model: [Float] = [1, 1, 1, 1, 1, 1]
        withRawBytes(float32Bytes([5, 9])) { raw in
            model.withUnsafeMutableBufferPointer { all in
                FedAsync.mix(into: UnsafeMutableBufferPointer(rebasing: all[2..<4]), update: raw, weight: 0.5)
            }
        }
        #expect(model == [1, 1, 3, 5, 1, 1])
    }
}

@Suite("FedAsync mix near the float32 limits")
struct FedAsyncLimitsTests {
    @Test("a weight just below 1 cannot round a finite mix up to infinity (fuzz regression)")
    func nearOneDoesNotOverflow() {
        var model: [Float] = [Float(bitPattern: 0x73C0_0000)]  // 3 * 2^103
        let update: [Float] = [.greatestFiniteMagnitude]
        model.withUnsafeMutableBufferPointer { m in
            update.withUnsafeBytes { FedAsync.mix(into: m, update: $0, weight: 0.99999999) }
        }
        #expect(model[0].isFinite)
        #expect(model[0] <= .greatestFiniteMagnitude && model[0] >= Float(bitPattern: 0x73C0_0000))
    }
}
