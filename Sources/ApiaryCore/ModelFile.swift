#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A user's model as a safetensors file (`safetensors.torch.save_file(model.state_dict(), F)`,
/// `safetensors.numpy.save_file(arrays, F)`): what the aggregator serves.
///
/// The rules (docs/PROTOCOL.md, "The model and its layout"):
/// - **Order.** The tensors of the served layout are sorted by name in ascending UTF-8 byte
///   order (Python's `sorted(names)`), whatever the order of the file's JSON header or data
///   section; the flat parameter vector concatenates them in that order, each in row-major
///   (C) order.
/// - **Floating point.** F32 tensors are served as they are; F16, BF16 and F64 tensors are
///   converted to float32 (the working dtype of the wire format), and `converted` says which.
/// - **Not trainable.** Integer and bool tensors (BatchNorm's `num_batches_tracked`) and 8-bit
///   floats are refused, each named, unless `exclude` leaves them out; they are never dropped
///   silently. `exclude` holds names or patterns with `*` (any run of characters) and `?`
///   (one character); a pattern that matches no tensor is an error too (a typo would
///   otherwise train a tensor the user meant to leave out).
/// - **Finite.** A NaN or infinite value (also one that overflows float32 when narrowed from
///   F64) is refused: the global model is never non-finite.
public enum ModelFile {
    /// The rule that orders the tensors, as the documentation words it.
    public static let orderRule = "tensors sorted by name (ascending UTF-8 bytes)"

    /// What a file gives the aggregator.
    public struct Loaded: Sendable {
        /// The served layout: the kept tensors sorted by name, all float32.
        public var layout: ParameterLayout
        /// The starting weights in layout order.
        public var parameters: [Float]
        /// Tensors converted to float32, with the dtype they had in the file.
        public var converted: [(name: String, dtype: String)]
        /// Tensors left out by `exclude`, with their dtype.
        public var excluded: [(name: String, dtype: String)]
        /// The left-out tensors themselves, bytes as in the file (for `apiary model export`,
        /// which puts them back unchanged so the file loads into the user's model as it was).
        public var excludedTensors: [Safetensors.RawTensor]
        /// The file's `__metadata__`.
        public var metadata: [String: String]
    }

    /// Reads the model file at `path`.
    public static func load(path: String, exclude: [String] = []) throws(ModelFileError) -> Loaded {
        let bytes: [UInt8]
        do {
            bytes = try FileBytes.read(path: path)
        } catch {
            throw .unreadable(error.description)
        }
        return try decode(bytes, exclude: exclude)
    }

    /// Decodes a whole model file.
    public static func decode(_ bytes: [UInt8], exclude: [String] = []) throws(ModelFileError) -> Loaded {
        let r: Result<Loaded, ModelFileError> = bytes.withUnsafeBytes { raw in
            Result { () throws(ModelFileError) in try decode(raw, exclude: exclude) }
        }
        return try r.get()
    }

    /// Decodes a whole model file.
    public static func decode(_ bytes: UnsafeRawBufferPointer, exclude: [String] = []) throws(ModelFileError) -> Loaded {
        let header: Safetensors.Header
        do {
            header = try Safetensors.parseHeader(bytes, width: Safetensors.elementWidth(ofDType:))
        } catch {
            throw .format(error)
        }
        guard !header.entries.isEmpty else { throw .noTensors }
        if let p = exclude.first(where: { p in !header.entries.contains { glob(p, matches: $0.name) } }) {
            throw .excludeMatchesNothing(p)
        }
        var kept: [Safetensors.Entry] = []
        var excluded: [(name: String, dtype: String)] = []
        var excludedTensors: [Safetensors.RawTensor] = []
        var refused: [(name: String, dtype: String)] = []
        for e in header.entries {
            if exclude.contains(where: { glob($0, matches: e.name) }) {
                excluded.append((e.name, e.dtype))
                let start = header.dataOffset + e.begin, end = header.dataOffset + e.end
                excludedTensors.append(Safetensors.RawTensor(name: e.name, dtype: e.dtype, shape: e.shape, bytes: Array(bytes[start..<end])))
            } else if !floatDTypes.contains(e.dtype) {
                refused.append((e.name, e.dtype))
            } else {
                kept.append(e)
            }
        }
        guard refused.isEmpty else { throw .notTrainable(refused) }
        guard !kept.isEmpty else { throw .everythingExcluded(header.entries.count) }
        kept.sort { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }

        let layout: ParameterLayout
        do {
            layout = try ParameterLayout(kept.map { TensorSpec(name: $0.name, shape: $0.shape) })
        } catch {
            throw .format(.invalidLayout(error))
        }
        let data = UnsafeRawBufferPointer(rebasing: bytes[header.dataOffset...])
        var parameters = [Float](repeating: 0, count: layout.parameterCount)
        var converted: [(name: String, dtype: String)] = []
        try parameters.withUnsafeMutableBufferPointer { out throws(ModelFileError) in
            for (i, e) in kept.enumerated() {
                let base = layout.offsets[i]
                let src = UnsafeRawBufferPointer(rebasing: data[e.begin..<e.end])
                if e.dtype != "F32" { converted.append((e.name, e.dtype)) }
                for k in 0..<e.count {
                    let v: Float
                    switch e.dtype {
                    case "F32": v = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: k &* 4, as: UInt32.self)))
                    case "F16": v = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: k &* 2, as: UInt16.self)))
                    case "BF16": v = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: k &* 2, as: UInt16.self))) << 16)
                    default: v = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: k &* 8, as: UInt64.self))))
                    }
                    guard v.isFinite else { throw .nonFinite(name: e.name, index: k, dtype: e.dtype) }
                    out[base + k] = v
                }
            }
        }
        return Loaded(layout: layout, parameters: parameters, converted: converted, excluded: excluded,
                      excludedTensors: excludedTensors, metadata: header.metadata)
    }

    /// The dtypes served (converted to float32 when not F32).
    public static let floatDTypes: Set<String> = ["F32", "F16", "BF16", "F64"]

    /// IEEE 754 binary16 to binary32 (exact).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31
        let exponent = UInt32((h >> 10) & 0x1F)
        var mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal: normalise.
            var e: Int32 = -1
            repeat { e += 1; mantissa <<= 1 } while mantissa & 0x400 == 0
            mantissa &= 0x3FF
            return Float(bitPattern: sign | UInt32(Int32(127 - 15) - e) << 23 | (mantissa << 13))
        }
        return Float(bitPattern: sign | ((exponent + 127 - 15) << 23) | (mantissa << 13))
    }

    /// Shell-style matching of `name` against `pattern`: `*` any run of characters (also
    /// none, and also `.`), `?` one character, anything else itself.
    public static func glob(_ pattern: String, matches name: String) -> Bool {
        let p = Array(pattern.unicodeScalars), s = Array(name.unicodeScalars)
        var pi = 0, si = 0, star = -1, mark = 0
        while si < s.count {
            if pi < p.count, p[pi] == "?" || p[pi] == s[si] {
                pi += 1; si += 1
            } else if pi < p.count, p[pi] == "*" {
                star = pi; mark = si; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; si = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}

/// Why a model file cannot be served.
public enum ModelFileError: Error, CustomStringConvertible, Sendable {
    /// The file cannot be read.
    case unreadable(String)
    /// Not a valid safetensors file (truncated, offsets that lie, duplicate names, a header
    /// over the size bound, ...).
    case format(SafetensorsError)
    /// Integer, bool or 8-bit float tensors that `model.exclude` does not leave out.
    case notTrainable([(name: String, dtype: String)])
    /// A `model.exclude` entry that matches no tensor.
    case excludeMatchesNothing(String)
    /// The file holds no tensors.
    case noTensors
    /// `model.exclude` leaves out every tensor.
    case everythingExcluded(Int)
    /// A NaN or infinite value.
    case nonFinite(name: String, index: Int, dtype: String)

    public var description: String {
        switch self {
        case .unreadable(let r): return r
        case .format(.invalidLayout(.empty)), .noTensors: return "the file holds no tensors"
        case .format(let e): return "not a valid safetensors file: \(e)"
        case .notTrainable(let list):
            let shown = list.prefix(8).map { "'\($0.name)' (\($0.dtype))" }.joined(separator: ", ")
            let more = list.count > 8 ? " and \(list.count - 8) more" : ""
            let example = list.first.map { $0.name.split(separator: ".").count > 1 ? "*." + $0.name.split(separator: ".").last! : $0.name } ?? ""
            return "\(list.count == 1 ? "tensor" : "tensors") \(shown)\(more) cannot be trained (only F32, F16, BF16 and F64 tensors can); "
                + "leave \(list.count == 1 ? "it" : "them") out with model.exclude (for instance model.exclude: [\"\(example)\"])"
        case .excludeMatchesNothing(let p): return "model.exclude entry '\(p)' matches no tensor of the file"
        case .everythingExcluded(let n): return "model.exclude leaves out all \(n) tensors of the file"
        case .nonFinite(let n, let i, let d): return "tensor '\(n)' holds a value that is not finite (element \(i)\(d == "F32" ? "" : ", as float32 from \(d)")); the model must be finite"
        }
    }
}

/// Reads a whole file into memory, with errors that name the path and the cause.
public enum FileBytes {
    public struct ReadError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func read(path: String) throws(ReadError) -> [UInt8] {
        guard let f = fopen(path, "rb") else { throw ReadError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var st = stat()
        guard fstat(fileno(f), &st) == 0 else { throw ReadError(description: "cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ReadError(description: "\(path) is not a regular file") }
        let size = Int(st.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        let got = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, size, f) }
        guard got == size else { throw ReadError(description: "cannot read \(path): \(got) of \(size) bytes") }
        return bytes
    }
}
