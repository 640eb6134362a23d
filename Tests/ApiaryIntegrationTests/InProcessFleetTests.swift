import ApiaryAggregator
import ApiaryCore
import Foundation
import Testing
import ApiaryTesting

/// `InProcessFleet` with the user's own trainers: what the ApiaryTesting product offers for
/// testing a trainer against a real aggregator.
@Suite("An in-process fleet of the user's own trainers", .serialized)
struct InProcessFleetTests {
    /// The share of parameters within 0.01 of 1 (where every StepTrainer pulls them).
    static func nearOne(_ p: [Float]) -> Double { Double(p.filter { abs($0 - 1) < 0.01 }.count) / Double(p.count) }

    @Test("three trainers bring the global model to the target over loopback sockets; the summary counts them and their merges")
    func ownTrainers() async throws {
        let members = (0..<3).map { _ in InProcessFleet.Member(trainer: StepTrainer(layout: testLayout)) }
        let fleet = InProcessFleet(config: anyPortConfig(), layout: testLayout,
                                   initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), members: members,
                                   options: .init(target: 1, timeLimit: 60, lowerTarget: 0.5), logger: quietLogger(),
                                   evaluate: Self.nearOne)
        let summary = try await fleet.run()
        // alpha 0.5 on a step of 0.5: each merge closes a quarter of the gap, 17 merges reach 0.01.
        #expect(summary.timeToTarget != nil && summary.finalAccuracy == 1)
        #expect(summary.clients == 3 && summary.algorithm == "fedasync")
        #expect(summary.updatesMerged >= 17 && summary.versions >= 17)
        #expect(summary.series.last?.2 == 1 && summary.series.map(\.0) == summary.series.map(\.0).sorted())
        #expect(summary.slowestTier == nil, "no delays, no slowest tier")
    }

    @Test("a target out of reach stops at the time limit and says it was not reached")
    func timeLimit() async throws {
        let fleet = InProcessFleet(config: anyPortConfig(), layout: testLayout,
                                   initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                   members: [.init(trainer: StepTrainer(layout: testLayout, target: 0.5))],
                                   options: .init(target: 1, timeLimit: 0.5), logger: quietLogger(), evaluate: Self.nearOne)
        let summary = try await fleet.run()
        #expect(summary.timeToTarget == nil && summary.finalAccuracy == 0)
        #expect(summary.elapsed >= 0.5)
    }
}
