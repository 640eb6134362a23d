import ApiaryCore
import ApiaryProtocol
import Testing

/// `peekUpdateSender` finds who sent a CLIENT_UPDATE whose header is otherwise invalid, so the
/// rejection can be receipted (docs/PROTOCOL.md §4.1 step 1).
@Suite("Codec.peekUpdateSender")
struct PeekUpdateSenderTests {
    typealias Sender = (clientID: String, seq: UInt64, baseVersion: UInt64)

    func peek(_ frame: [UInt8]) -> Sender? {
        withFrames([frame]) { v in Codec.peekUpdateSender(v[0]) }
    }

    func header(version: UInt8 = 1, type: UInt8 = 4, reserved: UInt16 = 0, codec: UInt8 = 0, idLength: UInt8? = nil,
                id: [UInt8] = Array("peer-7".utf8), trailing: [UInt8] = []) -> [UInt8] {
        LE().common(type, version: version, reserved: reserved).u64(0xAA).u64(41).u64(9001).u64(12)
            .u8(codec).u8(idLength ?? UInt8(id.count)).u16(0).raw(id).raw(trailing).bytes
    }

    @Test("a valid header gives its client id, seq and base version")
    func valid() throws {
        let s = try #require(peek(Codec.encode(Sample.updateHeader)))
        #expect(s.clientID == Sample.updateHeader.clientID)
        #expect(s.seq == Sample.updateHeader.seq)
        #expect(s.baseVersion == Sample.updateHeader.baseVersion)
    }

    @Test("the sender is found despite a wrong version, codec, reserved bytes or trailing bytes", arguments: [
        (UInt8(2), UInt16(0), UInt8(0), [UInt8]()),
        (1, 1, 0, []),
        (1, 0, 9, []),
        (1, 0, 0, [0, 0, 0]),
        (0, 0xFFFF, 255, [1]),
    ])
    func otherFieldsWrong(version: UInt8, reserved: UInt16, codec: UInt8, trailing: [UInt8]) throws {
        let frame = header(version: version, reserved: reserved, codec: codec, trailing: trailing)
        #expect(decodeError(frame: frame) { (f) throws(WireError) in try Codec.decodeUpdateHeader(f) } != nil)
        let s = try #require(peek(frame))
        #expect(s.clientID == "peer-7" && s.seq == 9001 && s.baseVersion == 41)
    }

    @Test("no sender without the magic, type 4, or a valid client id at offset 44")
    func noSender() {
        var badMagic = header()
        badMagic[0] = 0x61
        #expect(peek(badMagic) == nil)
        #expect(peek(header(type: 5)) == nil)
        #expect(peek(header(type: 99)) == nil)
        #expect(peek(header(id: Array("a b".utf8))) == nil)
        #expect(peek(header(id: Array("a/b".utf8))) == nil)
        #expect(peek(header(id: Array("é".utf8))) == nil)
        #expect(peek(header(id: Array(String(repeating: "x", count: 65).utf8))) == nil)
        #expect(peek(header(idLength: 0, id: [])) == nil)
        #expect(peek(header(idLength: 0, id: Array("abc".utf8))) == nil)
        #expect(peek(header(idLength: 7, id: Array("peer-7".utf8))) == nil) // length past the end
    }

    @Test("a short frame has no sender, at every length below 45")
    func short() {
        let full = header(id: [0x61])
        #expect(peek(full)?.clientID == "a")
        for length in 0..<full.count {
            #expect(peek(Array(full.prefix(length))) == nil, "length \(length)")
        }
    }

    @Test("random and mutated headers never trap")
    func fuzz() {
        var rng = SplitMix64(seed: 0x9EEC)
        let base = header()
        var found = 0
        for i in 0..<20_000 {
            var frame: [UInt8]
            if i % 2 == 0 {
                frame = base
                for _ in 0...rng.below(3) {
                    switch rng.below(3) {
                    case 0: frame[rng.below(frame.count)] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: frame = Array(frame.prefix(rng.below(frame.count + 1)))
                    default: frame += rng.bytes(rng.below(80))
                    }
                    if frame.isEmpty { break }
                }
            } else {
                frame = [0x41, 0x50, 0x52, 0x59, 1, 4] + rng.bytes(rng.below(120))
            }
            if let s = peek(frame) {
                found += 1
                #expect(ClientID.isValid(s.clientID))
            }
        }
        #expect(found > 0)
    }
}
