/// The safetensors file format (https://github.com/huggingface/safetensors), float32 only:
///
///     u64 little-endian N | N bytes of UTF-8 JSON header | data section
///
/// The header is one JSON object. Each tensor is a key whose value is
/// `{"dtype":"F32","shape":[...],"data_offsets":[begin,end]}`, the offsets being byte offsets
/// into the data section; the optional key `"__metadata__"` maps strings to strings. The data
/// section holds the raw little-endian values.
///
/// `encode` writes `"__metadata__"` first (keys in ascending UTF-8 byte order), then the tensors
/// in layout order with contiguous data in that order, and pads the header with spaces so that
/// the data section starts at a multiple of 8 bytes. The output is deterministic.
///
/// `decode` accepts any valid float32 file (any key order, any padding) and validates
/// everything: the header length against the file size, the JSON (strict RFC 8259, no duplicate
/// keys, nesting depth at most 64), the fields of each tensor, dtype `F32` only, offsets that
/// match the shapes and tile the data section exactly (contiguous from 0, no overlap, no gap,
/// no trailing bytes), and the resulting `ParameterLayout`. Invalid input throws a
/// `SafetensorsError`; it never traps.
public enum Safetensors {
    /// Largest header accepted (the reference implementation's limit).
    public static let maxHeaderLength: UInt64 = 100_000_000

    /// The reserved header key of the string-to-string metadata.
    public static let metadataKey = "__metadata__"

    /// What a file holds.
    public struct Decoded: Sendable, Equatable {
        /// The tensors in the order of their data offsets.
        public var layout: ParameterLayout
        /// The flat parameters, in layout order.
        public var parameters: [Float]
        public var metadata: [String: String]
        /// N, the length of the JSON header (with its padding) in bytes.
        public var headerLength: Int
        /// Where the data section starts: 8 + N.
        public var dataOffset: Int

        public static func == (a: Decoded, b: Decoded) -> Bool {
            a.layout == b.layout && a.metadata == b.metadata && a.headerLength == b.headerLength
                && a.dataOffset == b.dataOffset
                && a.parameters.elementsEqual(b.parameters) { $0.bitPattern == $1.bitPattern }
        }
    }

    // MARK: Encoding

    /// The safetensors bytes of `parameters` (which must hold `layout.parameterCount` values)
    /// with `metadata`.
    public static func encode(layout: ParameterLayout, parameters: [Float], metadata: [String: String],
                              extra: [RawTensor] = []) throws(SafetensorsError) -> [UInt8] {
        guard parameters.count == layout.parameterCount else {
            throw .parameterCountMismatch(expected: layout.parameterCount, got: parameters.count)
        }
        if let t = layout.tensors.first(where: { $0.name == metadataKey }) { throw .reservedName(t.name) }
        if let t = extra.first(where: { $0.name == metadataKey }) { throw .reservedName(t.name) }
        let header = encodeHeader(layout: layout, metadata: metadata, extra: extra)
        var out: [UInt8] = []
        out.reserveCapacity(header.count + parameters.count * 4 + extra.reduce(0) { $0 + $1.bytes.count })
        out.append(contentsOf: header)
        withLittleEndianBytes(parameters) { out.append(contentsOf: $0) }
        for t in extra { out.append(contentsOf: t.bytes) }
        return out
    }

    /// A tensor kept as the bytes of its file (any dtype): what `encode` writes after the
    /// float32 tensors, unchanged.
    public struct RawTensor: Sendable, Equatable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: [UInt8]

        public init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }
    }

    /// The 8-byte length prefix and the padded JSON header for `layout`, `metadata` and the
    /// raw `extra` tensors (after the float32 data).
    static func encodeHeader(layout: ParameterLayout, metadata: [String: String], extra: [RawTensor] = []) -> [UInt8] {
        var json: [UInt8] = []
        json.append(UInt8(ascii: "{"))
        JSONText.appendString(metadataKey, to: &json)
        json.append(UInt8(ascii: ":"))
        json.append(UInt8(ascii: "{"))
        for (i, key) in metadata.keys.sorted(by: utf8Less).enumerated() {
            if i > 0 { json.append(UInt8(ascii: ",")) }
            JSONText.appendString(key, to: &json)
            json.append(UInt8(ascii: ":"))
            JSONText.appendString(metadata[key]!, to: &json)
        }
        json.append(UInt8(ascii: "}"))
        for (i, t) in layout.tensors.enumerated() {
            let begin = layout.offsets[i] * 4
            let end = begin + t.count * 4
            json.append(UInt8(ascii: ","))
            JSONText.appendString(t.name, to: &json)
            json.append(contentsOf: Array(#":{"dtype":"F32","shape":["#.utf8))
            json.append(contentsOf: Array(t.shape.map(String.init).joined(separator: ",").utf8))
            json.append(contentsOf: Array(#"],"data_offsets":["#.utf8))
            json.append(contentsOf: Array("\(begin),\(end)]}".utf8))
        }
        var offset = layout.parameterCount * 4
        for t in extra {
            json.append(UInt8(ascii: ","))
            JSONText.appendString(t.name, to: &json)
            json.append(contentsOf: Array(#":{"dtype":"#.utf8))
            JSONText.appendString(t.dtype, to: &json)
            json.append(contentsOf: Array(#","shape":["#.utf8))
            json.append(contentsOf: Array(t.shape.map(String.init).joined(separator: ",").utf8))
            json.append(contentsOf: Array(#"],"data_offsets":["#.utf8))
            json.append(contentsOf: Array("\(offset),\(offset + t.bytes.count)]}".utf8))
            offset += t.bytes.count
        }
        json.append(UInt8(ascii: "}"))
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }

    /// Calls `body` with the little-endian float32 bytes of `values` (in place on a
    /// little-endian machine).
    static func withLittleEndianBytes<R>(_ values: [Float], _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        #if _endian(little)
        return try values.withUnsafeBytes(body)
        #else
        return try values.map { $0.bitPattern.littleEndian }.withUnsafeBytes(body)
        #endif
    }

    /// Ascending order of the UTF-8 bytes (= Unicode code point order, = Python's `sorted`).
    static func utf8Less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    // MARK: Decoding

    /// Decodes and validates a whole file.
    public static func decode(_ bytes: [UInt8]) throws(SafetensorsError) -> Decoded {
        let r: Result<Decoded, SafetensorsError> = bytes.withUnsafeBytes { raw in
            Result { () throws(SafetensorsError) in try decode(raw) }
        }
        return try r.get()
    }

    /// Decodes and validates a whole float32 file.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(SafetensorsError) -> Decoded {
        let header = try parseHeader(bytes) { $0 == "F32" ? 4 : nil }
        let layout: ParameterLayout
        do {
            layout = try ParameterLayout(header.entries.map { TensorSpec(name: $0.name, shape: $0.shape) })
        } catch {
            throw .invalidLayout(error)
        }
        let count = layout.parameterCount
        let data = UnsafeRawBufferPointer(rebasing: bytes[header.dataOffset...])
        let parameters = [Float](unsafeUninitializedCapacity: count) { buf, initialized in
            for k in 0..<count {
                buf[k] = Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: k &* 4, as: UInt32.self)))
            }
            initialized = count
        }
        return Decoded(layout: layout, parameters: parameters, metadata: header.metadata,
                       headerLength: header.headerLength, dataOffset: header.dataOffset)
    }

    /// One tensor of a header, its byte range checked against its shape and dtype.
    public struct Entry: Sendable, Equatable {
        public var name: String
        /// The dtype as the file spells it (`F32`, `BF16`, `I64`, ...).
        public var dtype: String
        public var shape: [Int]
        /// The number of elements (the product of the shape).
        public var count: Int
        /// The byte range in the data section.
        public var begin: Int
        public var end: Int
    }

    /// A validated header: the tensors tile the data section exactly.
    public struct Header: Sendable {
        /// The tensors in the order of their data offsets.
        public var entries: [Entry]
        public var metadata: [String: String]
        /// N, the length of the JSON header (with its padding) in bytes.
        public var headerLength: Int
        /// Where the data section starts: 8 + N.
        public var dataOffset: Int
    }

    /// The element width in bytes of each dtype of the safetensors format; nil for names it
    /// does not define.
    public static func elementWidth(ofDType d: String) -> Int? {
        switch d {
        case "F64", "I64", "U64": 8
        case "F32", "I32", "U32": 4
        case "F16", "BF16", "I16", "U16": 2
        case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": 1
        default: nil
        }
    }

    /// Parses and validates the header of a whole file: the header length against the file
    /// size, the JSON, each tensor's fields, its dtype (`width` gives the element width of the
    /// dtypes the caller accepts, nil for the others, which throw `unsupportedDType`), offsets
    /// that match the shapes and tile the data section exactly.
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, width: (String) -> Int?) throws(SafetensorsError) -> Header {
        let size = bytes.count
        guard size >= 8 else { throw .truncated(expected: 8, actual: size) }
        let n = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard n <= maxHeaderLength else { throw .headerTooLarge(n) }
        guard n <= UInt64(size - 8) else { throw .headerLengthOutOfBounds(length: n, fileSize: size) }
        let headerLength = Int(n)
        let dataOffset = 8 + headerLength
        let root: JSONValue
        do {
            root = try JSONText.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<dataOffset]))
        } catch {
            throw .badHeader(error.description)
        }
        guard case .object(let entries) = root else { throw .badHeader("the header is not a JSON object") }

        var metadata: [String: String] = [:]
        var tensors: [Entry] = []
        for (name, value) in entries {
            if name == metadataKey {
                guard case .object(let m) = value else { throw .badMetadata("__metadata__ is not an object") }
                for (k, v) in m {
                    guard case .string(let s) = v else { throw .badMetadata("the value of '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard case .object(let fields) = value else { throw .invalidTensor(name: name, reason: "not an object") }
            var dtype: String?, shapeValue: [JSONValue]?, offsetsValue: [JSONValue]?
            for (k, v) in fields {
                switch (k, v) {
                case ("dtype", .string(let s)): dtype = s
                case ("shape", .array(let a)): shapeValue = a
                case ("data_offsets", .array(let a)): offsetsValue = a
                case ("dtype", _), ("shape", _), ("data_offsets", _):
                    throw .invalidTensor(name: name, reason: "'\(k)' has the wrong JSON type")
                default:
                    throw .invalidTensor(name: name, reason: "unknown field '\(k)'")
                }
            }
            guard let dtype else { throw .invalidTensor(name: name, reason: "missing dtype") }
            guard let shapeValue else { throw .invalidTensor(name: name, reason: "missing shape") }
            guard let offsetsValue else { throw .invalidTensor(name: name, reason: "missing data_offsets") }
            guard let elementWidth = width(dtype) else { throw .unsupportedDType(name: name, dtype: dtype) }
            var shape: [Int] = []
            var count = 1
            var overflow = false
            for d in shapeValue {
                guard let u = d.uint64, u <= UInt64(Int.max) else {
                    throw .invalidTensor(name: name, reason: "the shape holds a value that is not a non-negative integer")
                }
                shape.append(Int(u))
                let r = count.multipliedReportingOverflow(by: Int(u))
                count = r.partialValue
                overflow = overflow || r.overflow
            }
            let bytesNeeded = count.multipliedReportingOverflow(by: elementWidth)
            guard !overflow, !bytesNeeded.overflow else { throw .invalidTensor(name: name, reason: "the shape \(shape) is too large") }
            guard offsetsValue.count == 2, let b = offsetsValue[0].uint64, let e = offsetsValue[1].uint64 else {
                throw .invalidTensor(name: name, reason: "data_offsets is not two non-negative integers")
            }
            guard b <= e else { throw .invalidOffsets(name: name, begin: b, end: e) }
            guard e - b == UInt64(bytesNeeded.partialValue) else {
                throw .offsetsMismatchShape(name: name, shape: shape, begin: b, end: e)
            }
            // Ends past the data section are reported as truncation after the tiling check;
            // this bound only keeps the arithmetic below in range.
            guard e <= UInt64(Int.max / 2) else {
                throw .offsetsOutOfRange(name: name, begin: b, end: e, dataSize: size - dataOffset)
            }
            tensors.append(Entry(name: name, dtype: dtype, shape: shape, count: count, begin: Int(b), end: Int(e)))
        }

        // Tile the data section: sorted by offset (a stable sort keeps the header order of
        // empty tensors at the same offset), contiguous from 0.
        let order = tensors.indices.sorted { i, j in
            (tensors[i].begin, tensors[i].end, i) < (tensors[j].begin, tensors[j].end, j)
        }
        var expected = 0
        var previous: String?
        for i in order {
            let t = tensors[i]
            if t.begin < expected { throw .overlappingOffsets(previous ?? "", t.name) }
            if t.begin > expected { throw .gapInData(name: t.name, expectedBegin: expected, begin: t.begin) }
            expected = t.end
            previous = t.name
        }
        let dataSize = size - dataOffset
        if expected > dataSize { throw .truncated(expected: dataOffset + expected, actual: size) }
        if expected < dataSize { throw .trailingBytes(count: dataSize - expected) }
        return Header(entries: order.map { tensors[$0] }, metadata: metadata, headerLength: headerLength, dataOffset: dataOffset)
    }
}

/// Why a safetensors file was rejected (or could not be written).
public enum SafetensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file is shorter than 8 bytes, or than its header's data offsets require.
    case truncated(expected: Int, actual: Int)
    /// The header length N is over `Safetensors.maxHeaderLength`.
    case headerTooLarge(UInt64)
    /// 8 + N is past the end of the file.
    case headerLengthOutOfBounds(length: UInt64, fileSize: Int)
    /// The header is not a JSON object (invalid UTF-8 or JSON, duplicate keys, too deep).
    case badHeader(String)
    /// `__metadata__` is not an object of strings.
    case badMetadata(String)
    /// A tensor entry lacks a field, has an unknown one, or a malformed shape or data_offsets.
    case invalidTensor(name: String, reason: String)
    /// A dtype the caller does not accept (the float32 decoder: anything but F32).
    case unsupportedDType(name: String, dtype: String)
    /// begin > end.
    case invalidOffsets(name: String, begin: UInt64, end: UInt64)
    /// end - begin is not 4 × the number of elements of the shape.
    case offsetsMismatchShape(name: String, shape: [Int], begin: UInt64, end: UInt64)
    /// Offsets far past the end of the data section.
    case offsetsOutOfRange(name: String, begin: UInt64, end: UInt64, dataSize: Int)
    /// Two tensors share bytes.
    case overlappingOffsets(String, String)
    /// Bytes of the data section that no tensor covers, before `name`.
    case gapInData(name: String, expectedBegin: Int, begin: Int)
    /// Bytes after the last tensor.
    case trailingBytes(count: Int)
    /// The tensors do not form a valid `ParameterLayout` (none, a name over 255 bytes, rank over 8).
    case invalidLayout(LayoutError)
    /// Encoding: the parameter vector does not match the layout.
    case parameterCountMismatch(expected: Int, got: Int)
    /// Encoding: a tensor named `__metadata__`.
    case reservedName(String)

    public var description: String {
        switch self {
        case .truncated(let e, let a): "truncated: \(a) bytes, expected \(e)"
        case .headerTooLarge(let n): "header length \(n) is over the limit of \(Safetensors.maxHeaderLength) bytes"
        case .headerLengthOutOfBounds(let n, let s): "header length \(n) runs past the end of the \(s)-byte file (truncated?)"
        case .badHeader(let r): "invalid header: \(r)"
        case .badMetadata(let r): "invalid __metadata__: \(r)"
        case .invalidTensor(let n, let r): "tensor '\(n)': \(r)"
        case .unsupportedDType(let n, let d): "tensor '\(n)' has dtype \(d); only F32 is supported"
        case .invalidOffsets(let n, let b, let e): "tensor '\(n)' has data_offsets [\(b), \(e)] with begin > end"
        case .offsetsMismatchShape(let n, let s, let b, let e): "tensor '\(n)' has data_offsets [\(b), \(e)], which do not match its shape \(s) and the size of its dtype"
        case .offsetsOutOfRange(let n, let b, let e, let d): "tensor '\(n)' has data_offsets [\(b), \(e)] past the \(d)-byte data section"
        case .overlappingOffsets(let a, let b): "tensors '\(a)' and '\(b)' overlap in the data section"
        case .gapInData(let n, let x, let b): "uncovered bytes in the data section before tensor '\(n)' (offset \(x) to \(b))"
        case .trailingBytes(let c): "\(c) trailing bytes after the last tensor"
        case .invalidLayout(let e): "invalid layout: \(e)"
        case .parameterCountMismatch(let e, let g): "the layout has \(e) parameters, got \(g)"
        case .reservedName(let n): "a tensor cannot be named \(n)"
        }
    }
}

// MARK: - A small strict JSON reader and writer (headers and checkpoint metadata)

/// A parsed JSON value. Objects keep their key order; numbers keep their text, so that 64-bit
/// integers are exact.
enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// The value as a non-negative integer (plain digits, no sign, fraction or exponent).
    var uint64: UInt64? {
        guard case .number(let s) = self, !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(s)
    }

    /// The value as a signed integer (no fraction or exponent).
    var int64: Int64? {
        guard case .number(let s) = self, !s.utf8.contains(where: { $0 == 0x2E || $0 == 0x65 || $0 == 0x45 }) else { return nil }
        return Int64(s)
    }

    /// The value as a number.
    var double: Double? {
        guard case .number(let s) = self else { return nil }
        return Double(s)
    }

    var string: String? {
        guard case .string(let s) = self else { return nil }
        return s
    }

    /// The member named `key` of an object.
    subscript(key: String) -> JSONValue? {
        guard case .object(let entries) = self else { return nil }
        return entries.first { $0.0 == key }?.1
    }
}

struct JSONParseError: Error, CustomStringConvertible {
    var message: String
    var offset: Int
    var description: String { "\(message) at byte \(offset)" }
}

enum JSONText {
    static let maxDepth = 64

    /// Parses one JSON value (with optional surrounding whitespace) from `bytes`.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        var p = Parser(bytes: bytes)
        p.skipWhitespace()
        let v = try p.value(depth: 0)
        p.skipWhitespace()
        guard p.i == bytes.count else { throw p.fail("unexpected data after the JSON value") }
        return v
    }

    static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var s = text
        let r: Result<JSONValue, JSONParseError> = s.withUTF8 { buf in
            Result { () throws(JSONParseError) in try parse(UnsafeRawBufferPointer(buf)) }
        }
        return try r.get()
    }

    struct Parser {
        let bytes: UnsafeRawBufferPointer
        var i = 0

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func fail(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: i) }

        mutating func skipWhitespace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func expect(_ literal: StaticString) throws(JSONParseError) {
            let n = literal.utf8CodeUnitCount
            guard i + n <= bytes.count else { throw fail("invalid literal") }
            let p = literal.utf8Start
            for k in 0..<n where bytes[i + k] != p[k] { throw fail("invalid literal") }
            i += n
        }

        mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
            guard depth < JSONText.maxDepth else { throw fail("nesting deeper than \(JSONText.maxDepth)") }
            guard i < bytes.count else { throw fail("unexpected end of JSON") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var entries: [(String, JSONValue)] = []
                var keys = Set<String>()
                skipWhitespace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(entries) }
                while true {
                    skipWhitespace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let keyAt = i
                    let key = try string()
                    guard keys.insert(key).inserted else { throw JSONParseError(message: "duplicate key '\(key)'", offset: keyAt) }
                    skipWhitespace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    skipWhitespace()
                    entries.append((key, try value(depth: depth + 1)))
                    skipWhitespace()
                    guard i < bytes.count else { throw fail("unexpected end of JSON") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(entries) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONValue] = []
                skipWhitespace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipWhitespace()
                    items.append(try value(depth: depth + 1))
                    skipWhitespace()
                    guard i < bytes.count else { throw fail("unexpected end of JSON") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try expect("true"); return .bool(true)
            case UInt8(ascii: "f"):
                try expect("false"); return .bool(false)
            case UInt8(ascii: "n"):
                try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try number())
            default:
                throw fail("unexpected character")
            }
        }

        mutating func digits() -> Int {
            let start = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            return i - start
        }

        mutating func number() throws(JSONParseError) -> String {
            let start = i
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count else { throw fail("invalid number") }
            if bytes[i] == UInt8(ascii: "0") {
                i += 1
            } else {
                guard digits() > 0 else { throw fail("invalid number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { throw fail("invalid number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw fail("invalid number") }
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        }

        mutating func hex4() throws(JSONParseError) -> UInt32 {
            guard i + 4 <= bytes.count else { throw fail("invalid \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        /// A string at `i` (which is at its opening quote).
        mutating func string() throws(JSONParseError) -> String {
            i += 1
            var out: [UInt8] = []
            var runStart = i
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
                    i += 1
                    break
                }
                if c < 0x20 { throw fail("control character in a string") }
                if c != UInt8(ascii: "\\") { i += 1; continue }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var u = try hex4()
                    if u >= 0xD800 && u < 0xDC00 {
                        guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate")
                        }
                        i += 2
                        let lo = try hex4()
                        guard lo >= 0xDC00 && lo < 0xE000 else { throw fail("unpaired surrogate") }
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    } else if u >= 0xDC00 && u < 0xE000 {
                        throw fail("unpaired surrogate")
                    }
                    guard let scalar = Unicode.Scalar(u) else { throw fail("invalid \\u escape") }
                    UTF8.encode(scalar) { out.append($0) }
                default:
                    throw fail("invalid escape")
                }
                runStart = i
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
            return s
        }
    }

    /// Appends `s` as a JSON string: `"` and `\` escaped, control characters as `\uXXXX`
    /// (`\n`, `\r`, `\t` short), everything else as raw UTF-8.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: out.append(contentsOf: [0x5C, 0x22])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }

    /// `s` as a JSON string literal.
    static func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        appendString(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// A JSON number for `d` that reads back to the same Double (Swift's shortest round-trip
    /// form); non-finite values, which JSON lacks, as the strings "NaN", "Infinity", "-Infinity".
    static func number(_ d: Double) -> String {
        if d.isNaN { return "\"NaN\"" }
        if d.isInfinite { return d > 0 ? "\"Infinity\"" : "\"-Infinity\"" }
        return "\(d)"
    }

    /// Reads what `number(_:)` wrote.
    static func double(_ v: JSONValue) -> Double? {
        switch v {
        case .number: return v.double
        case .string("NaN"): return .nan
        case .string("Infinity"): return .infinity
        case .string("-Infinity"): return -.infinity
        default: return nil
        }
    }
}
