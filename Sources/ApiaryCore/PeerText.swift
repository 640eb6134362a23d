/// Strings that came from a peer (a client id, an evaluator's dataset name, a reject detail
/// quoting a payload), made safe to write into a log line, a metric label, the ledger or the
/// dashboard: the one place that decides how.
///
/// - Control characters (C0 including newline, carriage return, tab and ESC; DEL; C1), the
///   Unicode line and paragraph separators, the byte-order mark and the bidirectional marks,
///   overrides and isolates are written as escapes (`\n`, `\r`, `\t`, `\u{1B}`), so that a
///   peer can neither start a forged log line nor send terminal escape sequences.
/// - The result is at most `limit` characters (Unicode scalars), ending in `...(+N bytes)`
///   (how many bytes of the original were left out) when it had to be cut.
///
/// Escaping is idempotent (`escaped(escaped(s)) == escaped(s)`), so a string escaped where it
/// was quoted (a `WireError` message) and again where it is logged is escaped once.
public enum PeerText {
    /// The default bound, in Unicode scalars.
    public static let defaultLimit = 200

    public static func escaped(_ s: String, limit: Int = defaultLimit) -> String {
        let limit = max(limit, 40)
        var scalars = 0
        var clean = true
        for c in s.unicodeScalars {
            scalars += 1
            if needsEscape(c) { clean = false; break }
        }
        if clean && scalars <= limit { return s }
        // The full escaped form, if it fits; else as much as fits before the marker.
        var full = String.UnicodeScalarView()
        for c in s.unicodeScalars { full.append(contentsOf: escape(c)) }
        if full.count <= limit { return String(full) }
        let budget = limit - 32  // the longest marker: "...(+18446744073709551615 bytes)"
        var out = String.UnicodeScalarView()
        var consumedBytes = 0
        for c in s.unicodeScalars {
            let piece = escape(c)
            guard out.count + piece.count <= budget else { break }
            out.append(contentsOf: piece)
            consumedBytes += String(c).utf8.count
        }
        return String(out) + "...(+\(s.utf8.count - consumedBytes) bytes)"
    }

    private static func needsEscape(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x00..<0x20, 0x7F...0x9F, 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF: true
        default: false
        }
    }

    private static func escape(_ c: Unicode.Scalar) -> [Unicode.Scalar] {
        guard needsEscape(c) else { return [c] }
        switch c.value {
        case 0x0A: return ["\\", "n"]
        case 0x0D: return ["\\", "r"]
        case 0x09: return ["\\", "t"]
        default: return Array("\\u{\(String(c.value, radix: 16, uppercase: true))}".unicodeScalars)
        }
    }
}
