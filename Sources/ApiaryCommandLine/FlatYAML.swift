/// The YAML of Apiary's config files, read without Foundation: what the edge binary reads its
/// config with (`apiary-edge`, built without the package's `YAML` trait), since Yams, and so
/// swift-configuration's YAML provider, import Foundation, whose static link alone costs a
/// client process about 5 MiB of resident memory (docs/BENCHMARKS.md, "footprint").
///
/// The subset: block mappings of plain keys by indentation (spaces), scalars plain, 'single'
/// or "double" quoted, sequences as `[a, b]` on one line or as `- item` lines of scalars, `{}`,
/// and `#` comments. Anything else (anchors, aliases, tags, multi-line scalars, flow maps,
/// several documents, tabs as indentation, duplicate keys) is an error naming its line, never
/// read some other way. Plain scalars resolve as Yams resolves them (YAML 1.1: `yes`/`on` are
/// bools, `0x1F` an integer, `~` null), and values convert on request as swift-configuration's
/// YAMLSnapshot converts them, so a file means the same to `apiary-edge` as to `apiary client`
/// (FlatYAMLTests compares both readers on every config file of the repository).
public enum FlatYAML {
    /// One scalar as written: its text (quotes and escapes removed) and whether it was plain
    /// (unquoted; only plain scalars are numbers, bools or null).
    public struct Scalar: Sendable, Equatable {
        public var text: String
        public var plain: Bool

        public init(_ text: String, plain: Bool) {
            self.text = text
            self.plain = plain
        }
    }

    public indirect enum Node: Sendable, Equatable {
        case scalar(Scalar)
        case sequence([Scalar])
        case mapping([Entry])
    }

    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: Node
    }

    /// YAML null, where Yams gives NSNull.
    public struct Null: Sendable, Equatable {}

    /// A plain scalar that YAML 1.1 resolves as a timestamp (where Yams gives a Date): no
    /// config key takes one, so it is only ever reported as the wrong type.
    public struct Timestamp: Sendable, Equatable {
        public var text: String
    }

    public struct SyntaxError: Error, CustomStringConvertible {
        public let line: Int
        public let reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// The document's root: a mapping, or nil for an empty document (only comments).
    public static func parse(_ text: String) throws(SyntaxError) -> Node? {
        var p = Parser(lines: try logicalLines(text))
        guard !p.lines.isEmpty else { return nil }
        let first = p.lines[0]
        let root = try p.block(indent: first.indent)
        if p.index < p.lines.count {
            let l = p.lines[p.index]
            throw SyntaxError(line: l.number, reason: "indentation does not match any open section")
        }
        return root
    }

    // MARK: Typed values, as Yams.load gives them (for the strict key check)

    /// The node as `Yams.load` gives it: [String: Any], [Any], String, Int, Double, Bool, Null
    /// (or Timestamp).
    public static func loaded(_ node: Node) -> Any {
        switch node {
        case .scalar(let s): return resolve(s)
        case .sequence(let items): return items.map(resolve)
        case .mapping(let entries):
            var out: [String: Any] = [:]
            for e in entries { out[e.key] = loaded(e.value) }
            return out
        }
    }

    /// A plain scalar resolved by Yams' default rules (bool, int, float, null, else string).
    static func resolve(_ s: Scalar) -> Any {
        guard s.plain else { return s.text }
        let t = s.text
        if ["yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
            "on", "On", "ON", "off", "Off", "OFF"].contains(t) {
            return bool(s)!
        }
        if Number.isInt(t) { return int(s).map { $0 as Any } ?? t }
        if Number.isFloat(t) { return double(s).map { $0 as Any } ?? t }
        if t == "~" || t == "null" || t == "Null" || t == "NULL" || t.isEmpty { return Null() }
        if Number.isTimestamp(t) { return Timestamp(text: t) }
        return t
    }

    // MARK: Conversions on request, as YAMLSnapshot makes them (Yams' ScalarConstructible)

    public static func bool(_ s: Scalar) -> Bool? {
        guard s.plain else { return nil }
        switch s.text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: return nil
        }
    }

    public static func int(_ s: Scalar) -> Int? {
        guard s.plain else { return nil }
        let signed = s.text.filter { $0 != "_" }
        if signed == "0" { return 0 }
        let negative = signed.hasPrefix("-")
        let hasSign = negative || signed.hasPrefix("+")
        let sign = negative ? "-" : ""
        let digits = signed.dropFirst(hasSign ? 1 : 0)
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where digits.hasPrefix(prefix) {
            return Int(sign + digits.dropFirst(prefix.count), radix: radix)
        }
        if digits.contains(":" as Character) { return sexagesimal(signed) { Int($0) } }
        return Int(signed)
    }

    public static func double(_ s: Scalar) -> Double? {
        guard s.plain else { return nil }
        switch s.text.lowercased() {
        case ".inf", "+.inf": return .infinity
        case "-.inf": return -.infinity
        case ".nan": return .nan
        default:
            let t = s.text.filter { $0 != "_" }
            if t.contains(":" as Character) { return sexagesimal(t) { Double($0) } }
            return Double(t)
        }
    }

    /// `1:30` = 90 (base 60), as Yams reads it.
    static func sexagesimal<T: Numeric>(_ text: String, _ make: (Substring) -> T?) -> T? {
        var t = Substring(text)
        let negative = t.hasPrefix("-")
        if negative || t.hasPrefix("+") { t = t.dropFirst() }
        var value: T = 0
        for part in t.split(separator: ":", omittingEmptySubsequences: false) {
            guard let d = make(part) else { return nil }
            value = value * 60 + d
        }
        return negative ? 0 - value : value
    }

    // MARK: Lines

    struct Line {
        var number: Int
        var indent: Int
        var content: Substring
    }

    /// The lines that carry content, comments and trailing blanks removed.
    static func logicalLines(_ text: String) throws(SyntaxError) -> [Line] {
        var out: [Line] = []
        var number = 0
        var documentStarted = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = raw
            if line.last == "\r" { line = line.dropLast() }
            let body = try stripComment(line, number: number)
            let indentEnd = body.firstIndex { $0 != " " } ?? body.endIndex
            let content = body[indentEnd...]
            if content.isEmpty { continue }
            if content.first == "\t" || body[..<indentEnd].contains("\t" as Character) {
                throw SyntaxError(line: number, reason: "a tab in the indentation (YAML indents with spaces)")
            }
            let indent = body.distance(from: body.startIndex, to: indentEnd)
            if indent == 0 && (content == "---" || content.hasPrefix("--- ")) {
                guard !documentStarted && out.isEmpty else {
                    throw SyntaxError(line: number, reason: "a second YAML document ('---'): a config file holds one")
                }
                documentStarted = true
                guard content == "---" else {
                    throw SyntaxError(line: number, reason: "content after '---' is not supported: start it on the next line")
                }
                continue
            }
            if indent == 0 && content == "..." { break }
            if content.hasPrefix("%") { throw SyntaxError(line: number, reason: "YAML directives (%) are not supported") }
            out.append(Line(number: number, indent: indent, content: content))
        }
        return out
    }

    /// The line up to a comment (`#` at the start or after a blank, outside quotes), without
    /// trailing blanks.
    static func stripComment(_ line: Substring, number: Int) throws(SyntaxError) -> Substring {
        var quote: Character?
        var previous: Character = " "
        var end = line.endIndex
        var i = line.startIndex
        while i < line.endIndex {
            let c = line[i]
            if let q = quote {
                if c == q {
                    if q == "'", line.index(after: i) < line.endIndex, line[line.index(after: i)] == "'" {
                        i = line.index(after: i)  // '' inside single quotes
                    } else {
                        quote = nil
                    }
                } else if c == "\\" && q == "\"" {
                    i = line.index(after: i)
                    if i == line.endIndex { break }
                }
            } else if c == "#" && (previous == " " || previous == "\t") {
                end = i
                break
            } else if (c == "'" || c == "\"") && (previous == " " || previous == "[" || previous == "," || previous == "-" || i == line.startIndex) {
                quote = c
            }
            previous = c
            i = line.index(after: i)
        }
        var body = line[..<end]
        while let last = body.last, last == " " || last == "\t" { body = body.dropLast() }
        return body
    }

    // MARK: Blocks

    struct Parser {
        var lines: [Line]
        var index = 0

        /// The block (mapping or `- ` sequence) whose lines are at `indent`.
        mutating func block(indent: Int) throws(SyntaxError) -> Node {
            let line = lines[index]
            if isSequenceItem(line.content) { return .sequence(try sequence(indent: indent)) }
            var entries: [Entry] = []
            while index < lines.count {
                let l = lines[index]
                if l.indent < indent { break }
                if l.indent > indent { throw SyntaxError(line: l.number, reason: "unexpected indentation") }
                if isSequenceItem(l.content) { throw SyntaxError(line: l.number, reason: "a list item where a key belongs") }
                let (key, rest) = try keyValue(l)
                if entries.contains(where: { $0.key == key }) {
                    throw SyntaxError(line: l.number, reason: "duplicate key '\(key)'")
                }
                index += 1
                let value: Node
                if !rest.isEmpty {
                    value = try inline(rest, line: l.number)
                } else if index < lines.count, lines[index].indent > indent {
                    value = try block(indent: lines[index].indent)
                } else if index < lines.count, lines[index].indent == indent, isSequenceItem(lines[index].content) {
                    value = .sequence(try sequence(indent: indent))  // a list may sit at its key's indentation
                } else {
                    value = .scalar(Scalar("", plain: true))  // `key:` alone is null
                }
                entries.append(Entry(key: key, value: value))
            }
            return .mapping(entries)
        }

        mutating func sequence(indent: Int) throws(SyntaxError) -> [Scalar] {
            var items: [Scalar] = []
            while index < lines.count, lines[index].indent == indent, isSequenceItem(lines[index].content) {
                let l = lines[index]
                let rest = l.content.dropFirst().drop { $0 == " " }
                index += 1
                if index < lines.count, lines[index].indent > indent {
                    throw SyntaxError(line: lines[index].number, reason: "a list item must be one scalar on its line")
                }
                guard case .scalar(let s) = try inline(rest, line: l.number) else {
                    throw SyntaxError(line: l.number, reason: "a list item must be a scalar")
                }
                items.append(s)
            }
            return items
        }

        func isSequenceItem(_ content: Substring) -> Bool {
            content == "-" || content.hasPrefix("- ")
        }

        /// `key: rest` (rest may be empty).
        func keyValue(_ l: Line) throws(SyntaxError) -> (String, Substring) {
            let c = l.content
            guard let first = c.first, first.isLetter || first.isNumber || first == "_" else {
                throw SyntaxError(line: l.number, reason: "expected 'key: value' (plain keys only), got '\(c)'")
            }
            var i = c.startIndex
            while i < c.endIndex {
                if c[i] == ":" {
                    let next = c.index(after: i)
                    if next == c.endIndex || c[next] == " " {
                        return (String(c[..<i]), c[next...].drop { $0 == " " })
                    }
                }
                i = c.index(after: i)
            }
            throw SyntaxError(line: l.number, reason: "expected 'key: value', got '\(c)'")
        }

        /// A value on its key's line: a quoted or plain scalar, `[a, b]` or `{}`.
        func inline(_ text: Substring, line: Int) throws(SyntaxError) -> Node {
            guard let first = text.first else { return .scalar(Scalar("", plain: true)) }
            switch first {
            case "[":
                guard text.last == "]" else { throw SyntaxError(line: line, reason: "a flow list must end on its line with ']'") }
                let inner = text.dropFirst().dropLast()
                if inner.allSatisfy({ $0 == " " }) { return .sequence([]) }
                var items: [Scalar] = []
                for part in try splitFlow(inner, line: line) {
                    let item = part.drop { $0 == " " }
                    guard !item.isEmpty else { throw SyntaxError(line: line, reason: "an empty item in a flow list") }
                    guard case .scalar(let s) = try inline(item, line: line) else {
                        throw SyntaxError(line: line, reason: "a flow list of lists or maps is not supported")
                    }
                    items.append(s)
                }
                return .sequence(items)
            case "{":
                guard text.dropFirst().dropLast().allSatisfy({ $0 == " " }), text.last == "}" else {
                    throw SyntaxError(line: line, reason: "flow maps ({...}) are not supported: write the keys as a block")
                }
                return .mapping([])
            case "'", "\"":
                return .scalar(Scalar(try quoted(text, line: line), plain: false))
            case "&", "*", "!", "|", ">", "%", "@", "`":
                throw SyntaxError(line: line, reason: "'\(first)' (anchors, aliases, tags, block scalars) is not supported")
            default:
                if text.indices.contains(where: { text[$0] == ":" && text.index(after: $0) < text.endIndex && text[text.index(after: $0)] == " " }) || text.hasSuffix(":") {
                    throw SyntaxError(line: line, reason: "a map inside a value is not supported: '\(text)'")
                }
                return .scalar(Scalar(String(text), plain: true))
            }
        }

        /// The parts of a flow list's inside, split at commas outside quotes.
        func splitFlow(_ s: Substring, line: Int) throws(SyntaxError) -> [Substring] {
            var parts: [Substring] = []
            var quote: Character?
            var start = s.startIndex
            var i = s.startIndex
            while i < s.endIndex {
                let c = s[i]
                if let q = quote {
                    if c == q { quote = nil } else if c == "\\" && q == "\"" { i = s.index(after: i) }
                } else if c == "'" || c == "\"" {
                    quote = c
                } else if c == "," {
                    parts.append(trimmed(s[start..<i]))
                    start = s.index(after: i)
                } else if c == "[" || c == "]" || c == "{" || c == "}" {
                    throw SyntaxError(line: line, reason: "nested flow collections are not supported")
                }
                if i < s.endIndex { i = s.index(after: i) }
            }
            let last = trimmed(s[start...])
            if !last.isEmpty || !parts.isEmpty { parts.append(last) }
            if parts.last?.isEmpty == true { parts.removeLast() }  // [a, b,] as YAML allows
            return parts
        }

        func trimmed(_ s: Substring) -> Substring {
            var t = s.drop { $0 == " " }
            while t.last == " " { t = t.dropLast() }
            return t
        }

        /// The text of a whole quoted scalar.
        func quoted(_ text: Substring, line: Int) throws(SyntaxError) -> String {
            let q = text.first!
            guard text.count >= 2, text.last == q else {
                throw SyntaxError(line: line, reason: "an unterminated quoted string (multi-line strings are not supported)")
            }
            let inner = text.dropFirst().dropLast()
            var out = ""
            var i = inner.startIndex
            while i < inner.endIndex {
                let c = inner[i]
                i = inner.index(after: i)
                if q == "'" {
                    if c == "'" {
                        guard i < inner.endIndex, inner[i] == "'" else { throw SyntaxError(line: line, reason: "text after a closing quote") }
                        i = inner.index(after: i)
                    }
                    out.append(c)
                    continue
                }
                if c == "\"" { throw SyntaxError(line: line, reason: "text after a closing quote") }
                guard c == "\\" else { out.append(c); continue }
                guard i < inner.endIndex else { throw SyntaxError(line: line, reason: "a string ending in '\\'") }
                let e = inner[i]
                i = inner.index(after: i)
                switch e {
                case "\\": out.append("\\")
                case "\"": out.append("\"")
                case "/": out.append("/")
                case " ": out.append(" ")
                case "n": out.append("\n")
                case "t", "\t": out.append("\t")
                case "r": out.append("\r")
                case "0": out.append("\0")
                case "x", "u", "U":
                    let n = e == "x" ? 2 : e == "u" ? 4 : 8
                    let end = inner.index(i, offsetBy: n, limitedBy: inner.endIndex) ?? inner.endIndex
                    guard inner.distance(from: i, to: end) == n, let v = UInt32(inner[i..<end], radix: 16), let u = Unicode.Scalar(v) else {
                        throw SyntaxError(line: line, reason: "a bad \\\(e) escape")
                    }
                    out.unicodeScalars.append(u)
                    i = end
                default:
                    throw SyntaxError(line: line, reason: "the escape '\\\(e)' is not supported")
                }
            }
            return out
        }
    }

    // MARK: Yams' resolver patterns, by hand (NSRegularExpression is Foundation)

    enum Number {
        /// `[-+]?0b[0-1_]+ | [-+]?0o?[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+ | sexagesimal`
        static func isInt(_ t: String) -> Bool {
            var s = Substring(t)
            if s.first == "-" || s.first == "+" { s = s.dropFirst() }
            if s.hasPrefix("0b") { return s.count > 2 && s.dropFirst(2).allSatisfy { $0 == "0" || $0 == "1" || $0 == "_" } }
            if s.hasPrefix("0x") { return s.count > 2 && s.dropFirst(2).allSatisfy { $0.isHexDigit || $0 == "_" } }
            if s.hasPrefix("0o") { return s.count > 2 && s.dropFirst(2).allSatisfy { ("0"..."7").contains($0) || $0 == "_" } }
            if s == "0" { return true }
            if s.hasPrefix("0") { return s.count > 1 && s.dropFirst().allSatisfy { ("0"..."7").contains($0) || $0 == "_" } }
            guard let f = s.first, ("1"..."9").contains(f) else { return false }
            if s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "_") }) { return true }
            return isSexagesimal(s, fraction: false)
        }

        /// `[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)? | \.[0-9_]+([eE][-+][0-9]+)? |
        /// sexagesimal float | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
        static func isFloat(_ t: String) -> Bool {
            if [".nan", ".NaN", ".NAN"].contains(t) { return true }
            var s = Substring(t)
            let signed = s.first == "-" || s.first == "+"
            if signed { s = s.dropFirst() }
            if [".inf", ".Inf", ".INF"].contains(s) { return true }
            if s.first == "." {
                if signed { return false }
                let rest = s.dropFirst()
                let mantissa = rest.prefix { isDigit($0) || $0 == "_" }
                guard !mantissa.isEmpty else { return false }
                let exp = rest.dropFirst(mantissa.count)
                if exp.isEmpty { return true }
                guard exp.first == "e" || exp.first == "E" else { return false }
                let e = exp.dropFirst()
                guard e.first == "-" || e.first == "+" else { return false }
                return e.count > 1 && e.dropFirst().allSatisfy(isDigit)
            }
            guard let f = s.first, isDigit(f) else { return false }
            if isSexagesimal(s, fraction: true) { return true }
            let whole = s.prefix { isDigit($0) || $0 == "_" }
            var rest = s.dropFirst(whole.count)
            if rest.first == "." { rest = rest.dropFirst().drop { isDigit($0) || $0 == "_" } }
            if rest.isEmpty { return true }
            guard rest.first == "e" || rest.first == "E" else { return false }
            var e = rest.dropFirst()
            if e.first == "-" || e.first == "+" { e = e.dropFirst() }
            return !e.isEmpty && e.allSatisfy(isDigit)
        }

        /// `[0-9][0-9_]*(:[0-5]?[0-9])+` (then `\.[0-9_]*` for a float).
        static func isSexagesimal(_ s: Substring, fraction: Bool) -> Bool {
            var parts = s.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 2 else { return false }
            if fraction {
                guard let last = parts.last, let dot = last.firstIndex(of: ".") else { return false }
                guard last[last.index(after: dot)...].allSatisfy({ isDigit($0) || $0 == "_" }) else { return false }
                parts[parts.count - 1] = last[..<dot]
            }
            guard let head = parts.first, let f = head.first, isDigit(f), head.allSatisfy({ isDigit($0) || $0 == "_" }) else { return false }
            return parts.dropFirst().allSatisfy { p in
                (p.count == 1 && isDigit(p.first!)) || (p.count == 2 && ("0"..."5").contains(p.first!) && isDigit(p.last!))
            }
        }

        /// `dddd-dd-dd` or a date and time: Yams makes these Dates.
        static func isTimestamp(_ t: String) -> Bool {
            let u = Array(t.utf8)
            guard u.count >= 8, u[0...3].allSatisfy({ (48...57).contains($0) }), u[4] == UInt8(ascii: "-") else { return false }
            return u.dropFirst(5).contains(UInt8(ascii: "-"))
        }

        static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
    }
}
