import ApiaryCore
import Testing

@Suite("DedupTable")
struct DedupTableTests {
    enum Seen: Equatable { case new, seen(String), tooOld, outOfRange }

    func look(_ t: DedupTable<String>, _ client: String, _ seq: UInt64) -> Seen {
        switch t.lookup(client: client, seq: seq) {
        case .new: .new
        case .seen(let o): .seen(o)
        case .tooOld: .tooOld
        case .outOfRange: .outOfRange
        }
    }

    @Test("an unknown client or seq is new")
    func new() {
        var t = DedupTable<String>(window: 4)
        #expect(look(t, "c1", 0) == .new)
        #expect(t.clientCount == 0)
        t.record(client: "c1", seq: 10, outcome: "merged@3")
        #expect(look(t, "c1", 11) == .new)
        #expect(look(t, "c1", 1000) == .new)
        #expect(look(t, "c2", 10) == .new)
    }

    @Test("a recorded seq is seen with its outcome")
    func seen() {
        var t = DedupTable<String>(window: 4)
        t.record(client: "c1", seq: 10, outcome: "merged@3")
        t.record(client: "c1", seq: 12, outcome: "rejected")
        #expect(look(t, "c1", 10) == .seen("merged@3"))
        #expect(look(t, "c1", 12) == .seen("rejected"))
        #expect(look(t, "c1", 11) == .new)
        t.record(client: "c1", seq: 10, outcome: "again")
        #expect(look(t, "c1", 10) == .seen("again"))
    }

    @Test("a seq at or below highest - window that is not remembered is too old")
    func tooOld() {
        var t = DedupTable<String>(window: 4)
        t.record(client: "c1", seq: 10, outcome: "x")
        #expect(look(t, "c1", 6) == .tooOld)  // 10 - 4
        #expect(look(t, "c1", 0) == .tooOld)
        #expect(look(t, "c1", 7) == .new)     // inside the window
        #expect(look(t, "c1", 9) == .new)
    }

    @Test("below the first window nothing is too old")
    func youngClient() {
        var t = DedupTable<String>(window: 4)
        t.record(client: "c1", seq: 3, outcome: "x")
        #expect(look(t, "c1", 0) == .new)
        #expect(look(t, "c1", 3) == .seen("x"))
    }

    @Test("an out-of-order older seq does not lower the highest seq")
    func outOfOrder() {
        var t = DedupTable<String>(window: 4)
        t.record(client: "c1", seq: 20, outcome: "b")
        t.record(client: "c1", seq: 18, outcome: "a")
        #expect(t.clients["c1"]?[0]?.highest == 20)
        #expect(look(t, "c1", 18) == .seen("a"))
        #expect(look(t, "c1", 16) == .tooOld)
    }

    @Test("clients are independent")
    func perClient() {
        var t = DedupTable<String>(window: 2)
        t.record(client: "a", seq: 100, outcome: "a100")
        t.record(client: "b", seq: 1, outcome: "b1")
        #expect(look(t, "a", 1) == .tooOld)
        #expect(look(t, "b", 1) == .seen("b1"))
        #expect(look(t, "b", 100) == .new)
        #expect(look(t, "a", 100) == .seen("a100"))
        #expect(look(t, "c", 100) == .new)
        #expect(t.clientCount == 2)
    }

    @Test("pruning keeps memory bounded and the last window remembered", arguments: [UInt64(1), 16, 256])
    func bounded(window: UInt64) {
        var t = DedupTable<String>(window: window)
        for seq: UInt64 in 0..<10_000 {
            t.record(client: "c", seq: seq, outcome: "o\(seq)")
            let count = t.clients["c"]?[0]?.outcomes.count ?? 0
            #expect(count <= Int(window) * 2)
            if count > Int(window) * 2 { break }
        }
        let highest: UInt64 = 9_999
        for seq in (highest - window + 1)...highest {
            #expect(look(t, "c", seq) == .seen("o\(seq)"))
        }
        #expect(look(t, "c", highest - window) == .tooOld || look(t, "c", highest - window) == .seen("o\(highest - window)"))
        #expect(look(t, "c", 0) == .tooOld)
        #expect(look(t, "c", highest + 1) == .new)
    }

    @Test("anything recorded and later forgotten is reported too old, never new")
    func neverNewAgain() {
        var rng = SplitMix64(seed: 9)
        var t = DedupTable<Int>(window: 8)
        var recorded: [UInt64] = []
        var seq: UInt64 = 1_000
        for _ in 0..<2_000 {
            seq += rng.next() % 3 + 1
            let s = rng.next() % 4 == 0 ? seq - rng.next() % 6 : seq // some resends / reorders
            t.record(client: "c", seq: s, outcome: Int(s))
            recorded.append(s)
        }
        for s in recorded {
            switch t.lookup(client: "c", seq: s) {
            case .new: Issue.record("seq \(s) was recorded but is reported new")
            case .seen(let o): #expect(o == Int(s))
            case .tooOld: break
            case .outOfRange: Issue.record("epoch 0 has no out-of-range seqs")
            }
        }
    }

    @Test("the default window is 256")
    func defaultWindow() {
        #expect(DedupTable<Int>().window == 256)
    }
}
