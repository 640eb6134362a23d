import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("Local DP over real sockets", .serialized)
struct LocalPrivacyProcessTests {
    static let clip = 0.01

    func aggregator(_ algorithm: Algorithm, local: Bool = true) throws -> Aggregator {
        var c = anyPortConfig()
        if local { c.localPrivacy = LocalDPConfig(clipNorm: Self.clip, noiseMultiplier: 1e-6) }
        if algorithm == .fedbuff { c.buffer = FedBuffConfig(bufferSize: 2, maxWait: .milliseconds(200)) }
        return try Aggregator(config: c, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                              logger: quietLogger())
    }

    @Test("a Swift client privatizes for a local-DP aggregator and its updates merge; clipped to C on the client", arguments: [Algorithm.fedasync, .fedbuff])
    func swiftClientMerges(algorithm: Algorithm) async throws {
        let agg = try aggregator(algorithm)
        let e = try agg.start()
        defer { agg.stop() }
        #expect(agg.stats.localPrivacy?.clipNorm == Self.clip)
        let client = try ClientRuntime(config: clientConfig("ldp-1", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let task = Task { try await client.run() }
        defer { task.cancel() }
        try await eventually("5 merged receipts") { client.stats.merged >= 5 }
        #expect(client.stats.rejected == 0 && agg.stats.rejected[.notPrivatized, default: 0] == 0)
        // Unclipped, each step would move the model by about half the way to 1 (a norm near 2):
        // clipped to C, it moves by at most C per version (fedasync: alpha C; fedbuff: lr C).
        let m = try #require(agg.latestModel)
        let norm = m.parameters.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(norm > 0 && norm <= Double(m.version) * Self.clip * 1.01 + 1e-3, "norm \(norm) after \(m.version) versions")
    }

    @Test("an update without flag bit 3 is refused not_privatized (18) by a local-DP aggregator, which changes nothing; an old-style update to one without local DP merges")
    func refusesUnprivatized() async throws {
        let agg = try aggregator(.fedasync)
        let e = try agg.start()
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "old")
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 1, count: 15))
        let r = try peer.receipt()
        #expect(r.decision == .rejected && r.reason == .notPrivatized && r.reason.rawValue == 18 && r.message.contains("flag bit 3"))
        #expect(agg.stats.version == 0 && agg.stats.merged == 0)
        #expect(try #require(agg.latestModel).parameters.allSatisfy { $0 == 0 })

        let plain = try aggregator(.fedasync, local: false)
        let e2 = try plain.start()
        defer { plain.stop() }
        let peer2 = try RawPeer(e2, clientID: "old")
        try peer2.sendUpdate(runID: plain.runID, base: 0, seq: 1, values: [Float](repeating: 1, count: 15))
        let r2 = try peer2.receipt()
        #expect(r2.decision == .merged && r2.modelVersion == 1)
    }

    @Test("an aggregator restarted on the same run with local DP turned on: the client's refused update makes it fetch the config, then its updates are privatized and merge")
    func localDPTurnedOnAtARestart() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-ldp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        var config = anyPortConfig()
        config.checkpointDirectory = dir.path
        let first = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                   logger: quietLogger())
        let e = try first.start()
        (config.modelEndpoint, config.snapshotEndpoint, config.updateEndpoint) = (e.model, e.snapshot, e.update)
        let client = try ClientRuntime(config: clientConfig("turned-on", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let task = Task { try await client.run() }
        defer { task.cancel() }
        try await eventually("merges without local DP") { first.stats.merged >= 3 }
        first.stop()

        config.localPrivacy = LocalDPConfig(clipNorm: Self.clip, noiseMultiplier: 1e-6)
        let second = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                    logger: quietLogger())
        try second.start()
        defer { second.stop() }
        #expect(second.runID == first.runID)
        try await eventually("privatized merges on the restarted aggregator") { second.stats.merged >= 5 }
    }
}
