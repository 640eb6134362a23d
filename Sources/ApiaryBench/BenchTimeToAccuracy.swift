import ApiaryLearning
import ApiaryAggregator
import ApiaryCore
import ApiaryTesting
import Foundation
import Logging

/// time-to-accuracy: FedAsync against synchronous FedAvg on the shared workload (digits,
/// 20 clients, Dirichlet 0.5, delays 0.2 / 1.0 / 5.0 s), same learners, data, delays and
/// sockets. Sync runs first, to 0.90 (or its 60 rounds); async then runs for the same wall
/// time without stopping at the target, so both final accuracies are taken at equal time.
enum TimeToAccuracyBench {
    static func run(quick: Bool, logger: Logger, say: @escaping @Sendable (String) -> Void) async throws -> [BenchResult] {
        let workload = try DigitsModel.workload()
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*",
                                      updateEndpoint: "tcp://127.0.0.1:*",
                                      rule: FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 128), insecure: true)
        // A quick run shrinks the delays 50-fold and stops sooner; it only proves the path works.
        let target = quick ? 0.85 : 0.90
        let delayScale = quick ? 0.02 : 1
        var options = InProcessFleet.Options(target: target, timeLimit: quick ? 30 : 600, progressEvery: quick ? 1e9 : 5, secure: false)
        let quiet: @Sendable (String) -> Void = { _ in }

        config.sync = FedAvgConfig(expectedClients: workload.clientCount, roundTimeout: .seconds(60))
        options.maxVersions = quick ? 20 : 60
        say("time-to-accuracy: synchronous FedAvg (waits for the slowest device every round)...")
        let sync = try await InProcessFleet(config: config, workload: workload, clients: workload.clientCount, delayScale: delayScale,
                                          options: options, logger: logger, say: quick ? quiet : say).run()

        config.sync = nil
        options.maxVersions = nil
        options.stopAtTarget = false
        options.timeLimit = max(sync.elapsed, 5)
        say("time-to-accuracy: FedAsync for the same \(String(format: "%.1f", options.timeLimit)) s...")
        let async = try await InProcessFleet(config: config, workload: workload, clients: workload.clientCount, delayScale: delayScale,
                                          options: options, logger: logger, say: quick ? quiet : say).run()

        func speedup(_ name: String, _ a: Double?, _ s: Double?, goal: String?, goalRatio: Double?) -> BenchResult {
            let ratio = (a != nil && s != nil && a! > 0) ? s! / a! : nil
            return BenchResult(name: "time-to-accuracy/\(name)", group: "time-to-accuracy",
                               status: a == nil ? "failed" : "measured", figure: a, unit: "s (async)",
                               bound: s, boundUnit: "s (sync FedAvg)", ratio: ratio,
                               ratioMeaning: "sync time / async time (how many times faster async is)",
                               goal: goal, met: goalRatio.flatMap { g in ratio.map { $0 >= g } },
                               params: params(), note: a == nil ? "async did not reach it" : (s == nil ? "sync did not reach it" : nil))
        }
        func params() -> [String: BenchValue] {
            ["clients": .int(workload.clientCount), "delay_scale": .double(delayScale),
             "async_merged": .int(Int(async.updatesMerged)), "sync_merged": .int(Int(sync.updatesMerged)),
             "sync_rounds": .int(Int(sync.versions)), "async_versions": .int(Int(async.versions))]
        }
        var results = [
            speedup("0.85", async.timeTo085, sync.timeTo085, goal: nil, goalRatio: nil),
        ]
        if !quick {
            results.append(speedup("0.90", async.timeToTarget, sync.timeToTarget, goal: "async >= 5x faster to 0.90", goalRatio: 5))
        }
        results.append(BenchResult(name: "time-to-accuracy/final-accuracy", group: "time-to-accuracy",
                                   figure: async.finalAccuracy, unit: "accuracy (async, same wall time)",
                                   bound: sync.finalAccuracy, boundUnit: "accuracy (sync at its end)",
                                   ratio: sync.finalAccuracy > 0 ? async.finalAccuracy / sync.finalAccuracy : nil,
                                   ratioMeaning: "async final accuracy / sync final accuracy",
                                   goal: "no worse than sync", met: async.finalAccuracy >= sync.finalAccuracy, params: params()))
        return results
    }
}
