import ApiaryCore

/// An immutable copy of the global model at one version: what the PUB socket and the
/// snapshot endpoint send (without copying again: chunks refer to this buffer), and what
/// observers such as an evaluator read.
public final class PublishedModel: @unchecked Sendable {
    // @unchecked Sendable: `storage` is written once in init and never again; libzmq's I/O
    // threads and observers only read it, and it is freed in deinit when nobody holds it.
    public let version: UInt64
    public let runID: UInt64
    /// The whole model's layout.
    public let layout: ParameterLayout
    /// The part of the flat vector held here: a shard's range, or the whole model.
    public let range: Range<Int>
    package let storage: UnsafeMutableBufferPointer<Float>

    package init(version: UInt64, runID: UInt64, layout: ParameterLayout, range: Range<Int>? = nil, copying source: UnsafeBufferPointer<Float>) {
        self.version = version
        self.runID = runID
        self.layout = layout
        self.range = range ?? 0..<layout.parameterCount
        precondition(source.count == self.range.count)
        storage = .allocate(capacity: source.count)
        _ = storage.initialize(fromContentsOf: source)
    }

    deinit { storage.deallocate() }

    /// Reads the parameters in place.
    public func withParameters<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(storage))
    }

    /// A copy of the parameters (of `range`).
    public var parameters: [Float] { Array(storage) }
}
