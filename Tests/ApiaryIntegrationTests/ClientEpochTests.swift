import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

/// Issue 15 item 2 over real sockets: one far-ahead seq cannot lock a client out of the
/// dedup window, not even across an aggregator restart from its checkpoint.
@Suite("Client epochs: no client is locked out of the dedup window", .serialized)
struct ClientEpochIntegrationTests {
    func tempDir() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("apiary-epoch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    }

    /// An aggregator with checkpoints and a ledger in `dir`, on `ports` when given.
    func aggregator(_ dir: URL, at ports: Aggregator.Endpoints? = nil) throws -> (Aggregator, Aggregator.Endpoints) {
        var c = anyPortConfig()
        c.checkpointDirectory = dir.appendingPathComponent("checkpoints").path
        c.ledgerPath = dir.appendingPathComponent("ledger.sqlite").path
        if let ports {
            c.modelEndpoint = ports.model
            c.snapshotEndpoint = ports.snapshot
            c.updateEndpoint = ports.update
        }
        let agg = try Aggregator(config: c, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        return (agg, try agg.start())
    }

    static let values = [Float](repeating: 1, count: testLayout.parameterCount)

    @Test("a client that sends seq 2^64-1 is refused seq_out_of_range, its next seqs merge, also after a restart from the checkpoint")
    func farAheadSeqOverSockets() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (first, e) = try aggregator(dir)
        let runID = first.runID
        let epoch = ClientEpoch.fresh()
        let peer = try RawPeer(e, clientID: "bitflip")
        try peer.sendUpdate(runID: runID, base: 0, seq: 100, values: Self.values, epoch: epoch)
        #expect(try peer.receipt().decision == .merged)
        try peer.sendUpdate(runID: runID, base: 1, seq: .max, values: Self.values, epoch: epoch)
        let refused = try peer.receipt()
        #expect(refused.seq == .max && refused.decision == .rejected && refused.reason == .seqOutOfRange, "\(refused)")
        #expect(refused.message.contains("highest seq 100"))
        try peer.sendUpdate(runID: runID, base: 1, seq: 101, values: Self.values, epoch: epoch)
        let next = try peer.receipt()
        #expect(next.seq == 101 && next.decision == .merged, "\(next)")
        #expect(first.stats.version == 2)
        first.stop()

        // A restart from the checkpoint: nothing of the far-ahead seq was recorded, so the
        // client carries on; its merged seqs are still duplicates.
        let (second, e2) = try aggregator(dir, at: e)
        defer { second.stop() }
        #expect(second.runID == runID && second.stats.version == 2)
        let peer2 = try RawPeer(e2, clientID: "bitflip")
        try peer2.sendUpdate(runID: runID, base: 2, seq: 101, values: Self.values, epoch: epoch)
        #expect(try peer2.receipt().decision == .duplicate)
        try peer2.sendUpdate(runID: runID, base: 2, seq: 102, values: Self.values, epoch: epoch)
        #expect(try peer2.receipt().decision == .merged)
        // A jump of exactly one more than the window (256) is refused too; the window's edge is not.
        try peer2.sendUpdate(runID: runID, base: 3, seq: 102 + 257, values: Self.values, epoch: epoch)
        #expect(try peer2.receipt().reason == .seqOutOfRange)
        try peer2.sendUpdate(runID: runID, base: 3, seq: 102 + 256, values: Self.values, epoch: epoch)
        #expect(try peer2.receipt().decision == .merged)
        #expect(second.stats.version == 4)
        // The operator sees the refusals in the ledger with their own reason.
        second.stop()
        let rows = try LedgerReader(path: dir.appendingPathComponent("ledger.sqlite").path).recent(limit: 100)
        #expect(rows.filter { $0.reason == .seqOutOfRange }.count == 2)
    }

    @Test("a client locked out under epoch 0 (an old client) comes back with a Swift runtime: a new process, a new epoch, seqs from the clock")
    func runtimeIsNotLockedOut() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (agg, e) = try aggregator(dir)
        defer { agg.stop() }
        let runID = agg.runID
        // The device's previous process (without epochs) ran with its clock ten years ahead.
        let future = UInt64(Date().timeIntervalSince1970 * 1_000_000) + 10 * 365 * 86_400 * 1_000_000
        let old = try await offPool {
            let peer = try RawPeer(e, clientID: "device")
            try peer.sendUpdate(runID: runID, base: 0, seq: future, values: Self.values)
            return try peer.receipt()
        }
        #expect(old.decision == .merged)
        // The clock is right again: the runtime's seqs (from the clock) are ten years below.
        let client = try ClientRuntime(config: clientConfig("device", e), trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        let task = Task { try await client.run() }
        defer { task.cancel() }
        // (Without epochs every update would be rejected "older than the dedup window".)
        try await eventually("the restarted device's merges or a rejection") { client.stats.merged >= 3 || client.stats.rejected > 0 }
        #expect(client.stats.merged >= 3 && client.stats.rejected == 0 && client.stats.duplicates == 0,
                "rejected: \(client.stats.rejected), last reason \(String(describing: client.stats.lastRejectReason))")
        #expect(client.epoch != 0)
        client.stop()
        _ = try? await task.value
    }
}
