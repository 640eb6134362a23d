/// Strings that came from a peer (a client id, an evaluator's dataset name, a reject detail
/// quoting a payload), made safe to write into a log line, a metric label, the ledger or the
/// dashboard: the one place that decides how.
///
/// - Control characters (C0 including newline, carriage return, tab and ESC; DEL; C1), the
///   Unicode line and paragraph separators and the bidirectional overrides and isolates are
///   written as escapes (`\n`, `\r`, `\t`, `\u{1B}`), and a backslash as `\\`, so that a peer can
///   neither start a forged log line nor send terminal escape sequences, and an escaped
///   string is never mistaken for an unescaped one.
/// - The result is at most `limit` characters (Unicode scalars) plus a marker
///   `...(+N bytes)` saying how many bytes of the original were left out.
///
/// Strings Apiary validated itself (client ids of `A-Z a-z 0-9 . _ -`, metric names) pass
/// unchanged; escaping them is cheap and harmless.
public enum PeerText {
    /// The default bound, in Unicode scalars.
    public static let defaultLimit = 200

    public static func escaped(_ s: String, limit: Int = defaultLimit) -> String {
        // Fast path: printable ASCII without backslashes, within the bound.
        if s.utf8.count <= limit, s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != 0x5C }) { return s }
        var out = String.UnicodeScalarView()
        var used = 0
        var consumedBytes = 0
        for scalar in s.unicodeScalars {
            let piece = escape(scalar)
            guard used + piece.count <= limit else { break }
            out.append(contentsOf: piece)
            used += piece.count
            consumedBytes += String(scalar).utf8.count
        }
        var result = String(out)
        let left = s.utf8.count - consumedBytes
        if left > 0 { result += "...(+\(left) bytes)" }
        return result
    }

    private static func escape(_ c: Unicode.Scalar) -> [Unicode.Scalar] {
        switch c.value {
        case 0x0A: return ["\\", "n"]
        case 0x0D: return ["\\", "r"]
        case 0x09: return ["\\", "t"]
        case 0x5C: return ["\\", "\\"]
        case 0x00..<0x20, 0x7F...0x9F, 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF:
            return Array("\\u{\(String(c.value, radix: 16, uppercase: true))}".unicodeScalars)
        default: return [c]
        }
    }
}
