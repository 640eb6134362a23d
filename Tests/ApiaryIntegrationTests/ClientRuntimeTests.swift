import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Synchronization
import Testing
import ZeroMQ

@Suite("Client runtime against a real aggregator", .serialized)
struct ClientRuntimeTests {
    func aggregator(_ config: AggregatorConfig = anyPortConfig()) throws -> Aggregator {
        try Aggregator(config: config, layout: testLayout,
                       initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
    }

    @Test("clients train, push and get their updates merged")
    func trainsAndMerges() async throws {
        let agg = try aggregator()
        let e = try agg.start()
        defer { agg.stop() }
        let client = try ClientRuntime(config: clientConfig("worker-1", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let task = Task { try await client.run() }
        defer { task.cancel() }
        try await eventually("10 merges") { agg.stats.merged >= 10 }
        try await eventually("the client's receipts") { client.stats.merged >= 5 }
        #expect(client.stats.rejected == 0)
        // The model moves toward the trainer's target and stays finite.
        let m = try #require(agg.latestModel)
        #expect(m.parameters.allSatisfy { $0 > 0.5 && $0 <= 1 })
    }

    @Test("a late joiner gets the current model from the snapshot endpoint at once")
    func lateJoiner() async throws {
        let agg = try aggregator()
        let e = try agg.start()
        defer { agg.stop() }
        let early = try ClientRuntime(config: clientConfig("early", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let t1 = Task { try await early.run() }
        defer { t1.cancel() }
        try await eventually("20 merges") { agg.stats.merged >= 20 }
        early.stop()
        _ = try? await t1.value
        let versionAtJoin = agg.stats.version

        let joined = Mutex<UInt64?>(nil)
        // A trainer so slow it never finishes: the late joiner's first model must come
        // from the snapshot, not from a broadcast triggered by its own update.
        let late = try ClientRuntime(config: clientConfig("late", e), trainer: StepTrainer(layout: testLayout, delay: .seconds(60)),
                                     logger: quietLogger(), onEvent: { ev in
                                         if case .joined(let v) = ev { joined.withLock { $0 = $0 ?? v } }
                                     })
        let t2 = Task { try await late.run() }
        defer { t2.cancel() }
        try await eventually("the late joiner's first model", within: 5) { joined.withLock { $0 } != nil }
        #expect(joined.withLock { $0 } == versionAtJoin)
        #expect(late.stats.snapshotsReceived == 1)
        #expect(late.currentModel?.parameters == agg.latestModel?.parameters)
        late.stop()
    }

    @Test("a client carries on by itself after the aggregator restarts")
    func survivesRestart() async throws {
        // Fix the ports so the second aggregator listens where the first one did.
        var config = anyPortConfig()
        let first = try aggregator(config)
        let e = try first.start()
        config.modelEndpoint = e.model
        config.snapshotEndpoint = e.snapshot
        config.updateEndpoint = e.update

        let client = try ClientRuntime(config: clientConfig("survivor", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let task = Task { try await client.run() }
        defer { task.cancel() }
        try await eventually("merges on the first aggregator") { first.stats.merged >= 5 }
        first.stop()

        // A new process would start from scratch: a new run, version 0.
        let second = try aggregator(config)
        try second.start()
        defer { second.stop() }
        try await eventually("merges on the restarted aggregator") { second.stats.merged >= 5 }
        #expect(second.runID != first.runID)
        #expect(client.currentModel?.runID == second.runID)
    }
}
