@testable import ApiaryCore
import Foundation
import Testing

/// Client epochs: a window per (client, epoch), far-ahead seqs refused in a non-zero epoch,
/// a bounded number of epochs per client, and their checkpoint form.
@Suite("DedupTable epochs")
struct DedupEpochTests {
    enum Seen: Equatable { case new, seen(String), tooOld, outOfRange(UInt64) }

    func look(_ t: DedupTable<String>, _ client: String, epoch: UInt64, _ seq: UInt64) -> Seen {
        switch t.lookup(client: client, epoch: epoch, seq: seq) {
        case .new: .new
        case .seen(let o): .seen(o)
        case .tooOld: .tooOld
        case .outOfRange(let h): .outOfRange(h)
        }
    }

    @Test("in a non-zero epoch a seq more than the window ahead is out of range, and looking it up records nothing",
          arguments: [UInt64.max, UInt64(100 + 8 + 1)])
    func farAheadIsOutOfRange(seq: UInt64) {
        var t = DedupTable<String>(window: 8)
        t.record(client: "c", epoch: 7, seq: 100, outcome: "m100")
        #expect(look(t, "c", epoch: 7, seq) == .outOfRange(100))
        #expect(look(t, "c", epoch: 7, 108) == .new)   // exactly the window ahead is still new
        #expect(look(t, "c", epoch: 7, 101) == .new)
        #expect(t.clients["c"]?[7]?.highest == 100)
    }

    @Test("epoch 0 (clients without epochs) keeps the old rule: any seq ahead is new")
    func epochZeroUnchanged() {
        var t = DedupTable<String>(window: 8)
        t.record(client: "c", seq: 100, outcome: "m100")
        #expect(look(t, "c", epoch: 0, .max) == .new)
        t.record(client: "c", seq: .max, outcome: "max")
        #expect(look(t, "c", epoch: 0, 101) == .tooOld)  // today's lock-out, for clients that send no epoch
    }

    @Test("a new epoch starts a fresh window; the old epoch still answers its resends")
    func newEpochIsFresh() {
        var t = DedupTable<String>(window: 8)
        t.record(client: "c", epoch: 1, seq: 1_000_000, outcome: "old")
        // A restored image or a clock stepped back: seqs far below the old ones, new epoch.
        #expect(look(t, "c", epoch: 2, 5) == .new)
        t.record(client: "c", epoch: 2, seq: 5, outcome: "new5")
        #expect(look(t, "c", epoch: 2, 5) == .seen("new5"))
        #expect(look(t, "c", epoch: 1, 1_000_000) == .seen("old"))
        #expect(look(t, "c", epoch: 1, 5) == .tooOld)
        #expect(t.epochCount == 2 && t.clientCount == 1)
    }

    @Test("a client keeps at most maxEpochs epochs; the least recently recorded is forgotten first")
    func epochBound() {
        var t = DedupTable<String>(window: 8)
        #expect(DedupTable<String>.maxEpochs == 4)
        for epoch: UInt64 in 1...4 { t.record(client: "c", epoch: epoch, seq: 1, outcome: "e\(epoch)") }
        t.record(client: "c", epoch: 1, seq: 2, outcome: "e1 again")  // epoch 1 used again: 2 is now the oldest
        t.record(client: "c", epoch: 5, seq: 1, outcome: "e5")
        #expect(Set(t.clients["c"]!.keys) == [1, 3, 4, 5])
        #expect(look(t, "c", epoch: 1, 2) == .seen("e1 again"))
        #expect(look(t, "c", epoch: 2, 1) == .new)  // forgotten
        // Another client's epochs do not count.
        t.record(client: "d", epoch: 9, seq: 1, outcome: "d")
        #expect(t.clients["c"]!.count == 4 && t.epochCount == 5)
        // Memory: at most maxEpochs x 2 x window outcomes per client, however many epochs pass.
        var u = DedupTable<Int>(window: 16)
        for epoch: UInt64 in 1...50 {
            for seq: UInt64 in 0..<100 { u.record(client: "c", epoch: epoch, seq: seq, outcome: Int(seq)) }
        }
        let outcomes = u.clients["c"]!.values.reduce(0) { $0 + $1.outcomes.count }
        #expect(u.clients["c"]!.count == 4 && outcomes <= 4 * 2 * 16)
        #expect(Set(u.clients["c"]!.keys) == [47, 48, 49, 50])
    }

    @Test("outcome(client:seq:) finds a seq in any remembered epoch, the most recent first")
    func outcomeAcrossEpochs() {
        var t = DedupTable<String>(window: 8)
        t.record(client: "c", epoch: 1, seq: 3, outcome: "one")
        t.record(client: "c", epoch: 2, seq: 3, outcome: "two")
        t.record(client: "c", epoch: 2, seq: 4, outcome: "four")
        #expect(t.outcome(client: "c", seq: 3) == "two")
        #expect(t.outcome(client: "c", seq: 4) == "four")
        #expect(t.outcome(client: "c", seq: 5) == nil && t.outcome(client: "x", seq: 3) == nil)
    }

    static let merged = UpdateOutcome(decision: .merged, reason: .none, baseVersion: 1, modelVersion: 2, staleness: 1, mixingWeight: 0.5)

    @Test("a checkpoint round-trips the epoch table: windows, highest seqs and the LRU order")
    func checkpointRoundTrip() throws {
        var t = DedupTable<UpdateOutcome>(window: 8)
        t.record(client: "c", seq: 10, outcome: Self.merged)
        for epoch: UInt64 in [UInt64.max, 3, 0xDEAD_BEEF] { t.record(client: "c", epoch: epoch, seq: epoch % 1000, outcome: Self.merged) }
        t.record(client: "other", epoch: 42, seq: 7, outcome: Self.merged)
        var s = sampleCheckpointState()
        s.dedupWindow = t.window
        s.dedup = t.clients
        let bytes = try Checkpoint.encode(s)
        let meta = try Safetensors.decode(bytes).metadata
        #expect(meta["dedup_epochs"] != nil)
        let back = try Checkpoint.decode(bytes)
        #expect(back == s)
        let r = back.dedupTable
        #expect(r.tick == t.tick && r.epochCount == 5)
        #expect(Set(r.clients["c"]!.keys) == [0, .max, 3, 0xDEAD_BEEF])
        // The next new epoch evicts the same one it would have before the restart (epoch 0,
        // the least recently used).
        var a = t, b = r
        a.record(client: "c", epoch: 99, seq: 1, outcome: Self.merged)
        b.record(client: "c", epoch: 99, seq: 1, outcome: Self.merged)
        #expect(Set(a.clients["c"]!.keys) == Set(b.clients["c"]!.keys))
        #expect(b.clients["c"]![0] == nil)
        #expect(try Checkpoint.encode(back) == bytes)
    }

    @Test("a checkpoint written before client epochs loads: its entries are epoch 0")
    func oldFormatLoads() throws {
        // The dedup entry exactly as written before epochs: no "used", no dedup_epochs.
        var s = sampleCheckpointState()
        s.dedup = ["c": [0: .init(highest: 12, outcomes: [12: Self.merged])]]
        let bytes = try Checkpoint.encode(s)
        let meta = try Safetensors.decode(bytes).metadata
        #expect(meta["dedup_epochs"] == nil)
        #expect(meta["dedup"] == #"{"c":{"highest":12,"outcomes":[[12,1,0,1,2,1,0.5]]}}"#)
        let back = try Checkpoint.decode(bytes)
        #expect(back.dedup["c"]?[0]?.highest == 12 && back.dedup["c"]?.count == 1)
        let t = back.dedupTable
        if case .seen = t.lookup(client: "c", seq: 12) {} else { Issue.record("seq 12 is not remembered") }
    }

    @Test("a bad dedup_epochs entry is refused with the key named", arguments: [
        "[", #"{"c":{}}"#, #"{"c":[{"epoch":0,"highest":1,"used":1,"outcomes":[]}]}"#,
        #"{"c":[{"epoch":5,"highest":1,"outcomes":[]}]}"#,
        #"{"c":[{"epoch":5,"highest":1,"used":1,"outcomes":[]},{"epoch":5,"highest":2,"used":2,"outcomes":[]}]}"#,
        #"{"c":[{"epoch":5,"highest":1,"used":1,"outcomes":[[1,1,0,0,0,null]]}]}"#,
    ])
    func badEpochs(text: String) throws {
        var s = sampleCheckpointState()
        s.dedup["c"] = [5: .init(highest: 1, outcomes: [:], lastUsed: 1)]
        let d = try Safetensors.decode(Checkpoint.encode(s))
        var meta = d.metadata
        meta["dedup_epochs"] = text
        meta["checksum"] = nil
        let crc = Safetensors.withLittleEndianBytes(d.parameters) { Checkpoint.checksum(data: $0, metadata: meta) }
        meta["checksum"] = Checkpoint.hex32(crc)
        let bytes = try Safetensors.encode(layout: d.layout, parameters: d.parameters, metadata: meta)
        let e = checkpointError { try Checkpoint.decode(bytes) }
        guard case .badMetadata(let key, _)? = e else { Issue.record("expected bad metadata, got \(String(describing: e))"); return }
        #expect(key == "dedup_epochs")
    }
}
