import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryTesting
import Foundation
import Testing

/// 20 % of the shared workload's clients attack over real loopback sockets; a defence holds
/// them off, its absence shows (so the test can fail either way).
@Suite("Attacking clients are held off", .serialized)
struct AttackTests {
    /// A run of `versions` model versions (not of a fixed time: on a loaded machine fewer
    /// updates arrive in a second, and the test must judge the same amount of training).
    static func run(_ attack: AttackPlan?, versions: UInt64, configure: (inout AggregatorConfig) -> Void) async throws -> FleetSummary {
        var config = anyPortConfig(FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 128))
        configure(&config)
        var o = InProcessFleet.Options(target: 0.99, timeLimit: 180)
        o.stopAtTarget = false
        o.maxVersions = versions
        let workload = try DigitsModel.workload()
        return try await InProcessFleet(config: config, workload: workload, clients: workload.clientCount, delayScale: 0.1,
                                        attack: attack, options: o, logger: quietLogger()).run()
    }

    /// The mean accuracy of the last tenth of a run's evaluations (one evaluation alone varies).
    static func settled(_ s: FleetSummary) -> Double {
        let tail = s.series.suffix(max(1, s.series.count / 10)).map(\.2)
        return tail.isEmpty ? s.finalAccuracy : tail.reduce(0, +) / Double(tail.count)
    }

    @Test("sign flip (x4) by 4 of 20 clients: FedAsync's anomaly filter keeps the model near 0.9 and rejects them as anomalous; without it the model collapses")
    func signFlipAgainstTheAnomalyFilter() async throws {
        let plan = AttackPlan(kind: .signFlip, fraction: 0.2)
        #expect(plan.attackers(clients: 20) == [0, 5, 10, 15])
        let defended = try await Self.run(plan, versions: 3000) { $0.anomaly = AnomalyConfig() }
        let undefended = try await Self.run(plan, versions: 3000) { _ in }
        let (d, u) = (Self.settled(defended), Self.settled(undefended))
        #expect(d >= 0.85, "defended: \(defended.text())")
        #expect(u <= d - 0.2, "undefended \(u) against defended \(d)")
        #expect(defended.updatesRejected > 50, "\(defended.text())")
        #expect(defended.attack == "sign-flip 4/20")
    }

    @Test("sign flip (x4) by 4 of 20 clients: FedBuff's trimmed mean (beta 0.3) stays near 0.9")
    func signFlipAgainstTheTrimmedMean() async throws {
        let defended = try await Self.run(AttackPlan(kind: .signFlip, fraction: 0.2), versions: 300) {
            $0.buffer = FedBuffConfig(bufferSize: 10, maxWait: .seconds(5), optimizer: .init(kind: .sgd, learningRate: 1),
                                      aggregate: .trimmedMean, trimFraction: 0.3)
        }
        #expect(Self.settled(defended) >= 0.85, "\(defended.text())")
    }
}
