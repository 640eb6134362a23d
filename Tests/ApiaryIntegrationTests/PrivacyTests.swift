import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

extension RawPeer {
    /// A FedBuff delta (header flag bit 1).
    func sendDelta(runID: UInt64, base: UInt64, seq: UInt64, values: [Float]) throws {
        let header = Codec.encode(UpdateHeader(runID: runID, baseVersion: base, seq: seq, sampleCount: 1, clientID: clientID, isDelta: true))
        try send(frames: [header, Codec.encodeLayout(testLayout), values.withUnsafeBytes { Array($0) }])
    }
}

@Suite("Central DP over real sockets", .serialized)
struct CentralPrivacyProcessTests {
    static let z = 2.0, delta = 1e-5

    func aggregator(_ dir: URL, privacy mode: PrivacyConfig.Mode = .central) throws -> (Aggregator, Aggregator.Endpoints) {
        var c = anyPortConfig()
        c.checkpointDirectory = dir.appendingPathComponent("checkpoints").path
        // A budget that allows exactly three flushes.
        let three = RDPAccountant.epsilon(noiseMultiplier: Self.z, samplingRate: 1, steps: 3, delta: Self.delta)
        c.buffer = FedBuffConfig(bufferSize: 2, maxWait: nil,
                                 privacy: PrivacyConfig(mode: mode, clip: 0.5, noiseMultiplier: Self.z, delta: Self.delta, epsilonBudget: three * 1.0001))
        let agg = try Aggregator(config: c, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                 logger: quietLogger())
        return (agg, try agg.start())
    }

    @Test("a DP-FedBuff aggregator states epsilon after each flush, keeps it in its checkpoint, stops at its budget and resumes where it was")
    func epsilonAfterFlushes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-dp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (agg, e) = try aggregator(dir)
        #expect(agg.stats.privacy?.epsilon == 0 && agg.stats.privacy?.steps == 0)
        let a = try RawPeer(e, clientID: "a"), b = try RawPeer(e, clientID: "b")
        var epsilons: [Double] = []
        for step in 1...3 as ClosedRange<UInt64> {
            try a.sendDelta(runID: agg.runID, base: step - 1, seq: step, values: [Float](repeating: 1, count: 15))
            try b.sendDelta(runID: agg.runID, base: step - 1, seq: step, values: [Float](repeating: 1, count: 15))
            for peer in [a, b] {
                let r = try peer.receipt()
                #expect(r.decision == .merged && r.modelVersion == step)
            }
            let p = try #require(agg.stats.privacy)
            #expect(p.steps == step)
            #expect(abs(p.epsilon - RDPAccountant.epsilon(noiseMultiplier: Self.z, samplingRate: 1, steps: step, delta: Self.delta)) < 1e-9)
            epsilons.append(p.epsilon)
            // Receipted only once durable: the accountant of this step is on disk.
            let onDisk = try #require(Checkpoint.latestValid(in: dir.appendingPathComponent("checkpoints")))
            #expect(onDisk.state.privacy?.steps == step && onDisk.state.privacy?.epsilon == p.epsilon)
        }
        #expect(epsilons == epsilons.sorted() && Set(epsilons).count == 3)
        #expect(agg.stats.privacy?.exhausted == true)
        try a.sendDelta(runID: agg.runID, base: 3, seq: 4, values: [Float](repeating: 1, count: 15))
        let refused = try a.receipt()
        #expect(refused.decision == .rejected && refused.reason == .unavailable && refused.message.contains("privacy budget exhausted"))
        agg.stop()

        // A restart resumes the accountant: epsilon does not go back, and the budget still holds.
        let (again, e2) = try aggregator(dir)
        #expect(again.stats.privacy?.epsilon == epsilons.last && again.stats.privacy?.steps == 3 && again.stats.privacy?.exhausted == true)
        let c = try RawPeer(e2, clientID: "c")
        try c.sendDelta(runID: again.runID, base: 3, seq: 1, values: [Float](repeating: 1, count: 15))
        #expect(try c.receipt().reason == .unavailable)
        again.stop()

        // Without central DP the run's checkpoint does not start: its next steps would not be private.
        #expect(throws: AggregatorError.self) { _ = try aggregator(dir, privacy: .off) }
    }
}
