import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Synchronization
import Testing
import ZeroMQ
import ApiaryTesting

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
        // An update the early client pushed just before it stopped may still be merged after
        // versionAtJoin was read: the joiner gets whichever model is current when it asks.
        let v = try #require(joined.withLock { $0 })
        #expect(v >= versionAtJoin && v <= agg.stats.version)
        #expect(late.stats.snapshotsReceived == 1)
        if agg.latestModel?.version == v {
            #expect(late.currentModel?.parameters == agg.latestModel?.parameters)
        }
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

@Suite("Synchronous FedAvg rounds over the same sockets", .serialized)
struct SyncRoundTests {
    @Test("a round waits for every expected client, averages by sample count, and publishes the next version")
    func rounds() async throws {
        var config = anyPortConfig()
        config.sync = FedAvgConfig(expectedClients: 3, roundTimeout: .seconds(30))
        let agg = try Aggregator(config: config, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        let e = try agg.start()
        defer { agg.stop() }
        // Three clients pulling toward 1, 2 and 3 with step 1: each round's average is 2.
        let clients = try (1...3).map { k in
            try ClientRuntime(config: clientConfig("s\(k)", e), trainer: StepTrainer(layout: testLayout, target: Float(k), step: 1),
                              logger: quietLogger())
        }
        let tasks = clients.map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        try await eventually("three rounds") { agg.stats.version >= 3 }
        let s = agg.stats
        // Every version is one round of exactly three contributions.
        #expect(s.merged >= 3 * s.version - 3 && s.merged <= 3 * s.version)
        #expect(s.maxStaleness == 0)
        let m = try #require(agg.latestModel)
        #expect(m.parameters.allSatisfy { abs($0 - 2) < 1e-5 })
        #expect(clients.allSatisfy { $0.stats.rejected == 0 })
    }
}
