/// The element type of a tensor on the wire and in memory. Apiary v1 carries float32 only.
public enum DType: UInt8, Sendable, Hashable, Codable, CustomStringConvertible {
    case float32 = 1

    /// Bytes per element.
    public var byteWidth: Int { 4 }

    public var description: String { "float32" }
}

/// One named tensor of a model: a name, a shape, a dtype.
public struct TensorSpec: Sendable, Hashable, Codable, CustomStringConvertible {
    public var name: String
    public var shape: [Int]
    public var dtype: DType

    public init(name: String, shape: [Int], dtype: DType = .float32) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
    }

    /// Number of elements (1 for a scalar of rank 0).
    public var count: Int { shape.reduce(1, *) }

    public var description: String { "\(name)\(shape):\(dtype)" }
}

/// The named tensor layout of a flat parameter vector: tensors are stored one after another,
/// in this order, each in row-major (C) order.
public struct ParameterLayout: Sendable, Hashable, Codable, CustomStringConvertible {
    public let tensors: [TensorSpec]
    /// Offset of each tensor in the flat vector, in elements.
    public let offsets: [Int]
    /// Total number of parameters.
    public let parameterCount: Int

    /// Creates a layout. Throws `LayoutError` for an empty layout, an empty or duplicate name,
    /// or a negative dimension.
    public init(_ tensors: [TensorSpec]) throws(LayoutError) {
        guard !tensors.isEmpty else { throw .empty }
        var seen = Set<String>()
        var offsets: [Int] = []
        var total = 0
        for t in tensors {
            guard !t.name.isEmpty, t.name.utf8.count <= 255 else { throw .invalidName(t.name) }
            guard seen.insert(t.name).inserted else { throw .duplicateName(t.name) }
            guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.count <= 8 else { throw .invalidShape(t.name, t.shape) }
            let (c, overflow) = t.shape.reduce((1, false)) { acc, d in
                let r = acc.0.multipliedReportingOverflow(by: d)
                return (r.partialValue, acc.1 || r.overflow)
            }
            guard !overflow, c <= (1 << 34) else { throw .invalidShape(t.name, t.shape) }
            offsets.append(total)
            total += c
        }
        self.tensors = tensors
        self.offsets = offsets
        self.parameterCount = total
    }

    /// A stable 64-bit fingerprint (FNV-1a) of names, dtypes and shapes; equal layouts have
    /// equal fingerprints on every platform and in every language that follows docs/PROTOCOL.md.
    public var fingerprint: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ b: UInt8) { h ^= UInt64(b); h = h &* 0x100_0000_01b3 }
        for t in tensors {
            for b in t.name.utf8 { mix(b) }
            mix(0)
            mix(t.dtype.rawValue)
            mix(UInt8(t.shape.count))
            for d in t.shape { for i in 0..<8 { mix(UInt8(truncatingIfNeeded: UInt64(d) >> (8 * UInt64(i)))) } }
        }
        return h
    }

    /// The range of tensor `i` in the flat vector.
    public func range(ofTensor i: Int) -> Range<Int> { offsets[i]..<(offsets[i] + tensors[i].count) }

    public var description: String { tensors.map(\.description).joined(separator: ", ") }

    /// A one-line summary for messages: tensor and parameter counts, the fingerprint, and the
    /// first `maxTensors` tensors.
    public func summary(maxTensors: Int = 6) -> String {
        let hex = String(fingerprint, radix: 16)
        let shown = tensors.prefix(maxTensors).map { "\($0.name)\($0.shape)" }.joined(separator: ", ")
        let more = tensors.count > maxTensors ? ", ... \(tensors.count - maxTensors) more" : ""
        return "\(tensors.count) \(tensors.count == 1 ? "tensor" : "tensors"), \(parameterCount) parameters, fingerprint "
            + String(repeating: "0", count: 16 - hex.count) + hex + " [\(shown)\(more)]"
    }

    /// The layout of the parameters in `range` of the flat vector (what one parameter shard
    /// stores): the tensors inside the range keep their names and shapes; a tensor cut by a
    /// range boundary becomes the 1-D piece `name[a:b]` (flat element indexes in the tensor).
    public func slice(_ range: Range<Int>) -> ParameterLayout {
        if range == 0..<parameterCount { return self }
        var pieces: [TensorSpec] = []
        for (i, t) in tensors.enumerated() {
            let r = self.range(ofTensor: i).clamped(to: range)
            guard !r.isEmpty else { continue }
            if r.count == t.count {
                pieces.append(t)
            } else {
                let a = r.lowerBound - offsets[i]
                pieces.append(TensorSpec(name: "\(t.name)[\(a):\(a + r.count)]", shape: [r.count], dtype: t.dtype))
            }
        }
        // Names stay unique (pieces of one tensor have distinct bounds); a name made too long
        // by its bounds falls back to one flat tensor named by the range.
        if let l = try? ParameterLayout(pieces) { return l }
        return try! ParameterLayout([TensorSpec(name: "parameters[\(range.lowerBound):\(range.upperBound)]", shape: [range.count])])
    }
}

public enum LayoutError: Error, Equatable, CustomStringConvertible {
    case empty
    case invalidName(String)
    case duplicateName(String)
    case invalidShape(String, [Int])

    public var description: String {
        switch self {
        case .empty: "the layout has no tensors"
        case .invalidName(let n): "invalid tensor name '\(n)' (1 to 255 UTF-8 bytes)"
        case .duplicateName(let n): "tensor name '\(n)' appears twice"
        case .invalidShape(let n, let s): "tensor '\(n)' has an invalid shape \(s)"
        }
    }
}

/// A versioned global model: the flat parameter vector, its layout and its version.
public struct ModelSnapshot: Sendable {
    public var layout: ParameterLayout
    public var parameters: [Float]
    /// Number of merges applied since the start of the run.
    public var version: UInt64
    /// Identifies the training run this version belongs to (a model lineage).
    public var runID: UInt64

    public init(layout: ParameterLayout, parameters: [Float], version: UInt64, runID: UInt64) {
        precondition(parameters.count == layout.parameterCount, "parameter count does not match the layout")
        self.layout = layout
        self.parameters = parameters
        self.version = version
        self.runID = runID
    }
}
