import ApiaryCore
import Testing

@Suite("StalenessFunction S(s)")
struct StalenessFunctionTests {
    @Test("constant weighs every staleness as 1", arguments: [0, 1, 2, 7, 1000, 1 << 40, UInt64.max] as [UInt64])
    func constantIsOne(s: UInt64) {
        #expect(StalenessFunction.constant.weight(staleness: s) == 1)
    }

    @Test("polynomial a=0.5 is (s+1)^(-1/2): 1 at s=0, 1/2 at s=3, 1/3 at s=8",
          arguments: [(0, 1.0), (3, 0.5), (8, 1.0 / 3.0), (15, 0.25), (99, 0.1)] as [(UInt64, Double)])
    func polynomialHalf(s: UInt64, expected: Double) {
        #expect(approximatelyEqual(StalenessFunction.polynomial(a: 0.5).weight(staleness: s), expected))
    }

    @Test("polynomial a=1 is 1/(s+1): 0.2 at s=4", arguments: [(UInt64(0), 1.0), (1, 0.5), (4, 0.2), (9, 0.1)])
    func polynomialOne(s: UInt64, expected: Double) {
        #expect(approximatelyEqual(StalenessFunction.polynomial(a: 1).weight(staleness: s), expected))
    }

    @Test("polynomial a=0 is constant 1", arguments: [0, 5, UInt64.max] as [UInt64])
    func polynomialZero(s: UInt64) {
        #expect(StalenessFunction.polynomial(a: 0).weight(staleness: s) == 1)
    }

    @Test("hinge a=2 b=3 is 1 up to s=3, then 1/(2(s-3)+1)",
          arguments: [(0, 1.0), (1, 1.0), (3, 1.0), (4, 1.0 / 3.0), (5, 0.2), (8, 1.0 / 11.0)] as [(UInt64, Double)])
    func hinge(s: UInt64, expected: Double) {
        #expect(approximatelyEqual(StalenessFunction.hinge(a: 2, b: 3).weight(staleness: s), expected))
    }

    @Test("hinge with a=0 never discounts")
    func hingeFlat() {
        for s: UInt64 in [0, 1, 10, .max] { #expect(StalenessFunction.hinge(a: 0, b: 0).weight(staleness: s) == 1) }
    }

    @Test("very large staleness gives a finite weight in [0, 1], positive for the usual parameters",
          arguments: [StalenessFunction.constant, .polynomial(a: 0.5), .polynomial(a: 1), .polynomial(a: 3),
                      .hinge(a: 2, b: 3), .hinge(a: 10, b: 0)])
    func largeStaleness(f: StalenessFunction) {
        for s in [UInt64(1) << 40, UInt64.max / 2, UInt64.max] {
            let w = f.weight(staleness: s)
            #expect(w.isFinite, "\(f) at \(s)")
            #expect(w > 0, "\(f) at \(s)")
            #expect(w <= 1, "\(f) at \(s)")
        }
        // Hand-computed magnitudes.
        if case .polynomial(a: 0.5) = f {
            #expect(approximatelyEqual(f.weight(staleness: 1 << 40), 1 / (Double(1 << 40) + 1).squareRoot()))
        }
        if case .hinge(a: 2, b: 3) = f {
            #expect(approximatelyEqual(f.weight(staleness: .max), 1 / (2 * (Double(UInt64.max) - 3) + 1), tolerance: 1e-9))
        }
    }

    @Test("a huge exponent underflows to 0 but stays in [0, 1] (never NaN or negative)")
    func hugeExponent() {
        let w = StalenessFunction.polynomial(a: 1000).weight(staleness: .max)
        #expect(w.isFinite && w >= 0 && w <= 1)
    }

    @Test("S is non-increasing in s and stays in (0, 1] for valid parameters")
    func monotone() {
        let functions: [StalenessFunction] = [.constant, .polynomial(a: 0.5), .polynomial(a: 2), .hinge(a: 2, b: 3),
                                               .hinge(a: 0.5, b: 0), .hinge(a: 1, b: 2.5)]
        for f in functions {
            var previous = f.weight(staleness: 0)
            #expect(previous == 1, "\(f)")
            for s: UInt64 in 1...200 {
                let w = f.weight(staleness: s)
                #expect(w <= previous && w > 0, "\(f) at \(s)")
                previous = w
            }
        }
    }

    @Test("valid parameters pass validation",
          arguments: [StalenessFunction.constant, .polynomial(a: 0), .polynomial(a: 0.5), .hinge(a: 0, b: 0), .hinge(a: 2, b: 3)])
    func valid(f: StalenessFunction) {
        #expect(f.validationError() == nil)
    }

    @Test("negative, NaN or infinite parameters are rejected",
          arguments: [StalenessFunction.polynomial(a: -0.1), .polynomial(a: .nan), .polynomial(a: .infinity),
                      .polynomial(a: -.infinity), .hinge(a: -1, b: 0), .hinge(a: 0, b: -1), .hinge(a: .nan, b: 0),
                      .hinge(a: 0, b: .nan), .hinge(a: .infinity, b: 0), .hinge(a: 1, b: .infinity)])
    func invalid(f: StalenessFunction) {
        let message = f.validationError()
        #expect(message != nil)
        #expect(message?.isEmpty == false)
    }

    @Test("descriptions name the function and its parameters")
    func descriptions() {
        #expect(StalenessFunction.constant.description == "constant")
        #expect(StalenessFunction.polynomial(a: 0.5).description == "polynomial(a=0.5)")
        #expect(StalenessFunction.hinge(a: 2, b: 3).description == "hinge(a=2.0, b=3.0)")
    }
}
