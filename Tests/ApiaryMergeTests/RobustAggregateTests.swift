import ApiaryCore
@testable import ApiaryMerge
import ApiaryProtocol
import Testing

/// Coordinate-wise median and trimmed mean, by hand and in the FedBuff engine.
struct RobustAggregateTests {
    @Test func theMedianIsTakenPerCoordinate() {
        let d: [[Float]] = [[1, 9, -3], [5, 2, 0], [3, 4, 100]]
        #expect(RobustAggregate.coordinateWise(d, trim: nil) == [3, 4, 0])
        // Even n: the mean of the two middle values.
        #expect(RobustAggregate.coordinateWise(d + [[0, 0, 1]], trim: nil) == [2, 3, 0.5])
    }

    @Test func theTrimmedMeanDropsTheExtremesOfEachCoordinate() {
        // n = 5, t = 1: the largest and the smallest value of each coordinate go.
        let d: [[Float]] = [[1, -50], [2, 1], [3, 2], [4, 3], [1000, 4]]
        #expect(RobustAggregate.coordinateWise(d, trim: 1) == [3, 2])
        #expect(RobustAggregate.coordinateWise(d, trim: 0) == [202, -8], "t = 0 is the mean")
    }

    static func engine(_ aggregate: FedBuffConfig.Aggregate, k: Int, trim: Double = 0.1) -> MergeEngine {
        let e = FedBuffTests.engine(k: k)
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: k, maxWait: nil, aggregate: aggregate, trimFraction: trim), parameterCount: 6)
        return e
    }

    @Test func oneAttackerOfThreeDoesNotMoveTheMedianStep() {
        let e = Self.engine(.median, k: 3)
        _ = FedBuffTests.delta(e, "a", seq: 1, [1, 1, 1, 1, 1, 1])
        _ = FedBuffTests.delta(e, "b", seq: 1, [2, 2, 2, 2, 2, 2])
        _ = FedBuffTests.delta(e, "attacker", seq: 1, [-1e6, 1e6, -1e6, 1e6, -1e6, 1e6])
        let done = e.flushBufferIfReady(now: .now)
        #expect(done.count == 3 && done.allSatisfy { $0.receipt?.decision == .merged && $0.receipt?.modelVersion == 1 })
        #expect(Array(e.parameters) == [1, 2, 1, 2, 1, 2])
    }

    @Test func aTrimmedMeanOfFiveWithBetaTwentyPercentDropsOneAttacker() {
        let e = Self.engine(.trimmedMean, k: 5, trim: 0.2)
        for (i, v) in [Float(1), 2, 3, 4].enumerated() { _ = FedBuffTests.delta(e, "c\(i)", seq: 1, [Float](repeating: v, count: 6)) }
        _ = FedBuffTests.delta(e, "attacker", seq: 1, [Float](repeating: 1e6, count: 6))
        #expect(e.flushBufferIfReady(now: .now).count == 5)
        // Drops 1 (the smallest) and 1e6 (the largest): (2 + 3 + 4) / 3 = 3.
        for p in e.parameters { #expect(abs(p - 3) < 1e-6) }
    }

    @Test func staleDeltasEnterTheStatisticWithTheirWeight() {
        // polynomial a = 1: a delta of staleness 1 counts at half its size, as in the mean.
        let e = FedBuffTests.engine(k: 1, staleness: .polynomial(a: 1))
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 1, maxWait: nil, aggregate: .median), parameterCount: 6)
        _ = FedBuffTests.delta(e, "a", seq: 1, [0, 0, 0, 0, 0, 0])
        _ = e.flushBufferIfReady(now: .now)
        _ = FedBuffTests.delta(e, "b", seq: 1, base: 0, [4, 4, 4, 4, 4, 4])
        _ = e.flushBufferIfReady(now: .now)
        #expect(Array(e.parameters) == [2, 2, 2, 2, 2, 2])
    }

    @Test func robustAggregatesRefuseExampleWeightsAndAnOutOfRangeTrim() {
        #expect(FedBuffConfig(exampleWeighting: true, aggregate: .median).validationError()?.contains("example_weighting false") == true)
        #expect(FedBuffConfig(aggregate: .trimmedMean, trimFraction: 0.5).validationError()?.contains("fedbuff.trim_fraction") == true)
        #expect(FedBuffConfig(aggregate: .trimmedMean, trimFraction: 0.25).validationError() == nil)
    }
}
