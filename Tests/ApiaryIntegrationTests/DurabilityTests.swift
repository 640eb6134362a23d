import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("Aggregator state on disk and the remaining bad-input reasons", .serialized)
struct DurabilityTests {
    func tempDir() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("apiary-durable-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    }

    func aggregator(_ dir: URL?, configure: (inout AggregatorConfig) -> Void = { _ in }) throws -> (Aggregator, Aggregator.Endpoints) {
        var c = anyPortConfig()
        c.checkpointDirectory = dir?.appendingPathComponent("checkpoints").path
        c.ledgerPath = dir?.appendingPathComponent("ledger.sqlite").path
        configure(&c)
        let agg = try Aggregator(config: c, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        return (agg, try agg.start())
    }

    @Test("a merged receipt arrives only after a checkpoint holds the merge; a restart resumes run, version, model and dedup")
    func resume() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (first, e1) = try aggregator(dir)
        let runID = first.runID
        let peer = try RawPeer(e1, clientID: "d1")
        for seq in 1...5 as ClosedRange<UInt64> {
            try peer.sendUpdate(runID: runID, base: seq - 1, seq: seq, values: [Float](repeating: Float(seq), count: 15))
            let r = try peer.receipt()
            #expect(r.decision == .merged)
            // Durable before acknowledged: a checkpoint at or past this version is on disk.
            let onDisk = try #require(Checkpoint.latestValid(in: dir.appendingPathComponent("checkpoints")))
            #expect(onDisk.state.version >= r.modelVersion)
        }
        let model = try #require(first.latestModel).parameters
        first.stop()

        let (second, e2) = try aggregator(dir)
        defer { second.stop() }
        #expect(second.runID == runID)
        #expect(second.stats.version == 5)
        #expect(second.latestModel?.parameters == model)
        // The dedup table survived: a resend of seq 5 is a duplicate, not a second merge.
        let peer2 = try RawPeer(e2, clientID: "d1")
        try peer2.sendUpdate(runID: runID, base: 4, seq: 5, values: [Float](repeating: 5, count: 15))
        #expect(try peer2.receipt().decision == .duplicate)
        second.stop()
        #expect(second.stats.version == 5)
        // Every update is in the ledger, rejected ones included.
        let ledger = try LedgerReader(path: dir.appendingPathComponent("ledger.sqlite").path)
        let rows = try ledger.recent(limit: 100)
        #expect(rows.filter { $0.decision == .merged }.count == 5)
        #expect(rows.filter { $0.decision == .duplicate }.count == 1)
    }

    @Test("a corrupt newest checkpoint is skipped and the one before it is resumed")
    func corruptCheckpoint() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (first, e) = try aggregator(dir) { $0.checkpointKeep = 10 }
        let peer = try RawPeer(e, clientID: "d2")
        for seq in 1...3 as ClosedRange<UInt64> {
            try peer.sendUpdate(runID: first.runID, base: seq - 1, seq: seq, values: [Float](repeating: 1, count: 15))
            _ = try peer.receipt()
        }
        first.stop()
        let ckpts = dir.appendingPathComponent("checkpoints")
        let newest = try #require(try FileManager.default.contentsOfDirectory(atPath: ckpts.path).filter { $0.hasSuffix(".safetensors") }.sorted().last)
        // Flip a byte in the middle of the newest file's data.
        let url = ckpts.appendingPathComponent(newest)
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 8] ^= 0xFF
        try bytes.write(to: url)
        let (second, _) = try aggregator(dir)
        defer { second.stop() }
        #expect(second.stats.version < 3)
        #expect(second.runID == first.runID)
    }

    @Test("an update over the norm bound is rejected, or clipped to the bound", arguments: [NormPolicy.reject, .clip])
    func normBound(policy: NormPolicy) throws {
        let (agg, e) = try aggregator(nil) {
            $0.maxUpdateNorm = 1
            $0.normPolicy = policy
        }
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "n1")
        // |update - model| = sqrt(15 * 4) ~ 7.75 > 1.
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 2, count: 15))
        let r = try peer.receipt()
        agg.stop()
        let m = try #require(agg.latestModel)
        switch policy {
        case .reject:
            #expect(r.reason == .normTooLarge)
            #expect(m.parameters == [Float](repeating: 0, count: 15))
        case .clip:
            #expect(r.decision == .merged)
            // The model moved by alpha * (the update clipped to norm 1): norm 0.5.
            let moved = m.parameters.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
            #expect(abs(moved - 0.5) < 1e-5)
        }
    }

    @Test("an oversized frame drops that peer's connection; the aggregator carries on")
    func oversized() throws {
        let (agg, e) = try aggregator(nil) { $0.maxFrameBytes = 4096; $0.chunkParameters = 1024 }
        defer { agg.stop() }
        let ctx = try Context()
        let hostile = try ctx.socket(.push)
        try hostile.connect(e.update)
        try hostile.send([UInt8](repeating: 0x41, count: 1 << 20))
        let peer = try RawPeer(e, clientID: "o1")
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 1, count: 15))
        #expect(try peer.receipt().decision == .merged)
        agg.stop()  // the counters are final once stopped
        #expect(agg.stats.received == 1)  // the oversized frame never reached the aggregator
    }

    @Test("unknown message types and wrong frame counts are counted by reason and do no harm")
    func unknownType() throws {
        let (agg, e) = try aggregator(nil)
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "u1")
        var header = Codec.encode(UpdateHeader(runID: agg.runID, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "u1"))
        header[5] = 99
        try peer.send(frames: [header, Codec.encodeLayout(testLayout), [Float](repeating: 1, count: 15).withUnsafeBytes { Array($0) }])
        // A valid header with no payload frames: wrong frame count, receipted as malformed.
        try peer.send(frames: [Codec.encode(UpdateHeader(runID: agg.runID, baseVersion: 0, seq: 2, sampleCount: 1, clientID: "u1"))])
        #expect(try peer.receipt().reason == .malformed)
        agg.stop()
        #expect(agg.stats.rejected[.unknownMessageType] == 1)
        #expect(agg.stats.rejected[.malformed] == 1)
        #expect(agg.stats.version == 0)
    }
}
