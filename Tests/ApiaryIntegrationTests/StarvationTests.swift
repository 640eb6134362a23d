import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryMerge
import Foundation
import Testing
import ApiaryTesting

/// Issue 13 item 3: a slow client's work counts. Two fast clients and one slow one whose every
/// round lasts while 40 updates of the others are merged (slowness measured in the fleet's
/// work, not in seconds, so that a loaded machine does not change the test), against
/// max_staleness 16: under FedAsync that is 40 versions, so every slow update is too stale and
/// its data never reaches the model; under FedBuff (K = 8) it is 5 flushes, and it is merged.
struct FleetPacedTrainer: Trainer {
    let layout: ParameterLayout
    let mergedSoFar: @Sendable () -> UInt64
    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        let start = mergedSoFar()
        while mergedSoFar() < start + 40 { try await Task.sleep(for: .milliseconds(5)) }
        return TrainingResult(parameters: model.parameters.map { $0 + 0.5 * (1 - $0) }, sampleCount: 10)
    }
}

@Suite("No starved client", .serialized)
struct StarvationTests {
    func run(fedbuff: Bool) async throws -> (slow: ClientStats, activity: ClientActivity?) {
        var config = anyPortConfig(FedAsync(alpha: 0.5, staleness: .polynomial(a: 0.5), maxStaleness: 16))
        if fedbuff { config.buffer = FedBuffConfig(bufferSize: 8, maxWait: .seconds(1)) }
        let agg = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                 logger: quietLogger())
        let e = try agg.start()
        defer { agg.stop() }
        let fast = try (0..<2).map { k in
            try ClientRuntime(config: clientConfig("fast-\(k)", e), trainer: StepTrainer(layout: testLayout, delay: .milliseconds(10)), logger: quietLogger())
        }
        let slow = try ClientRuntime(config: clientConfig("slow", e), trainer: FleetPacedTrainer(layout: testLayout) { [agg] in agg.stats.merged },
                                     logger: quietLogger())
        let tasks = (fast + [slow]).map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        try await eventually("four receipts for the slow client", within: 60) { slow.stats.merged + slow.stats.rejected >= 4 }
        // The per-client activity is published about once a second.
        try await eventually("the slow client's activity") { (agg.activity.clients["slow"]?.received ?? 0) >= 4 }
        return (slow.stats, agg.activity.clients["slow"])
    }

    @Test("FedAsync starves the slow client (every update too stale); FedBuff merges its updates and its share shows")
    func slowClientCounts() async throws {
        let fedasync = try await run(fedbuff: false)
        #expect(fedasync.slow.merged == 0 && fedasync.slow.rejected >= 4, "FedAsync: \(fedasync.slow)")
        let fedbuff = try await run(fedbuff: true)
        #expect(fedbuff.slow.merged >= 3, "FedBuff: \(fedbuff.slow)")
        #expect((fedbuff.activity?.merged ?? 0) >= 3 && (fedbuff.activity?.mixingWeight ?? 0) > 0)
    }
}
