import ApiaryCore
import Testing

@Suite("PeerText: peer-supplied strings made safe for logs, labels, the ledger and the dashboard")
struct PeerTextTests {
    @Test("PeerText escapes control characters and separators, bounds the length, and is idempotent")
    func peerText() {
        #expect(PeerText.escaped("client-1") == "client-1")
        #expect(PeerText.escaped("a\nb\r\t\u{1b}[0m") == "a\\nb\\r\\t\\u{1B}[0m")
        #expect(PeerText.escaped("x\u{2028}y\u{202E}z\u{85}") == "x\\u{2028}y\\u{202E}z\\u{85}")
        #expect(PeerText.escaped("Grüße, 世界") == "Grüße, 世界")
        let long = PeerText.escaped(String(repeating: "é", count: 500), limit: 60)
        #expect(long == String(repeating: "é", count: 28) + "...(+944 bytes)")
        let newlines = PeerText.escaped(String(repeating: "\n", count: 300))
        #expect(!newlines.contains("\n") && newlines.unicodeScalars.count <= PeerText.defaultLimit)
        for s in ["a\nb\u{1b}", long, newlines, String(repeating: "x\n", count: 150)] {
            #expect(PeerText.escaped(PeerText.escaped(s)) == PeerText.escaped(s))
        }
    }
}
