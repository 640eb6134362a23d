import ApiaryCore

// Update codecs (PROTOCOL.md 3.4.1): how the payload frames of a CLIENT_UPDATE encode its
// values. The receiving side never decodes a whole update into a new vector: dense codecs are
// read block by block (`DenseBlocks`, through a small scratch buffer), top-k entry by entry.

extension PayloadCodec {
    /// The name the snapshot config and the aggregator's config use.
    public var name: String {
        switch self {
        case .denseFloat32: "float32"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        case .int8: "int8"
        case .topK: "topk"
        }
    }

    public init?(name: String) {
        guard let c = PayloadCodec.allCases.first(where: { $0.name == name }) else { return nil }
        self = c
    }

    /// Top-k: entries (index, value), zero elsewhere; only for deltas.
    public var isSparse: Bool { self == .topK }

    /// Bytes per value in a payload frame (int8 without its block scale; a top-k entry).
    package var valueBytes: Int {
        switch self {
        case .denseFloat32: 4
        case .float16, .bfloat16: 2
        case .int8: 1
        case .topK: 6
        }
    }
}

/// The update codec an aggregator asks its clients for (snapshot config `codec`,
/// `codec_block`, `topk_fraction`; aggregator config `compression.*`).
public struct UpdateCompression: Sendable, Hashable {
    public var codec: PayloadCodec
    /// int8: values per block (one scale each).
    public var block: Int
    /// top-k: the fraction of values sent.
    public var topKFraction: Double

    public init(codec: PayloadCodec = .denseFloat32, block: Int = UpdateCodec.defaultBlock, topKFraction: Double = UpdateCodec.defaultTopKFraction) {
        self.codec = codec
        self.block = block
        self.topKFraction = topKFraction
    }

    /// Why these settings are invalid for `algorithm` (nil when valid).
    public func validationError(algorithm: Algorithm) -> String? {
        if block < 1 || block > 1 << 22 { return "compression.int8_block must be in 1...\(1 << 22), not \(block)" }
        if !(topKFraction > 0 && topKFraction <= 1) { return "compression.topk_fraction must be in (0, 1], not \(topKFraction)" }
        if codec.isSparse && !algorithm.sendsDeltas {
            return "compression.codec topk sends sparse deltas: it needs algorithm fedbuff, not \(algorithm)"
        }
        return nil
    }
}

/// What the codec check of an update's payload found.
public struct PayloadShape: Sendable, Hashable {
    /// Dense codecs: the number of values decoded. Top-k: the entry count k.
    public var count: Int
    /// Top-k: the largest index plus one (0 without entries); dense: `count`.
    public var extent: Int

    public init(count: Int, extent: Int) {
        self.count = count
        self.extent = extent
    }
}

public enum UpdateCodec {
    /// Default int8 block (values per scale) and top-k fraction.
    public static let defaultBlock = 4096
    public static let defaultTopKFraction = 0.01

    /// Checks the payload frames against the rules of `codec` (frame sizes, int8 scales and
    /// the value -128, top-k indices strictly increasing); the size against the model is the
    /// caller's check, with `PayloadShape`.
    public static func check(_ frames: some Collection<UnsafeRawBufferPointer>, codec: PayloadCodec) throws(WireError) -> PayloadShape {
        var count = 0
        switch codec {
        case .denseFloat32, .float16, .bfloat16:
            for (i, f) in frames.enumerated() {
                guard f.count % codec.valueBytes == 0 else {
                    if codec == .denseFloat32 { throw .misalignedPayloadFrame(index: i, bytes: f.count) }
                    throw .badEncoding("\(codec.name) payload frame \(i) has \(f.count) bytes, not a multiple of 2")
                }
                count += f.count / codec.valueBytes
            }
            return PayloadShape(count: count, extent: count)
        case .int8:
            for (i, f) in frames.enumerated() where f.count > 0 {
                guard f.count > 4 else { throw .badEncoding("int8 payload frame \(i) has \(f.count) bytes: a block is a 4-byte scale and at least one value") }
                let scale = Float(bitPattern: UInt32(littleEndian: f.loadUnaligned(as: UInt32.self)))
                guard scale.isFinite, scale >= 0 else { throw .badEncoding("int8 block \(i) has scale \(scale) (must be finite and >= 0)") }
                let q = UnsafeRawBufferPointer(rebasing: f[4...])
                if q.contains(0x80) { throw .badEncoding("int8 block \(i) holds -128 (values are -127 ... 127)") }
                count += q.count
            }
            return PayloadShape(count: count, extent: count)
        case .topK:
            var next = 0  // the smallest index the next entry may have
            for (i, f) in frames.enumerated() {
                guard f.count % 6 == 0 else { throw .badEncoding("top-k payload frame \(i) has \(f.count) bytes, not a multiple of 6") }
                for e in 0..<(f.count / 6) {
                    let index = Int(UInt32(littleEndian: f.loadUnaligned(fromByteOffset: e &* 6, as: UInt32.self)))
                    guard index >= next else {
                        throw .badEncoding(index == next - 1 ? "top-k index \(index) appears twice" : "top-k index \(index) follows \(next - 1): indices must increase")
                    }
                    next = index + 1
                }
                count += f.count / 6
            }
            return PayloadShape(count: count, extent: next)
        }
    }

    /// Calls `body(index, value)` for each top-k entry, in index order (frames checked).
    @inline(__always)
    public static func forEachEntry(_ frames: some Collection<UnsafeRawBufferPointer>, _ body: (Int, Float) -> Void) {
        for f in frames {
            for e in 0..<(f.count / 6) {
                let index = Int(UInt32(littleEndian: f.loadUnaligned(fromByteOffset: e &* 6, as: UInt32.self)))
                let bits = UInt16(littleEndian: f.loadUnaligned(fromByteOffset: e &* 6 &+ 4, as: UInt16.self))
                body(index, Float(bitPattern: UInt32(bits) << 16))
            }
        }
    }

    // MARK: Encoding (clients)

    /// float32 -> bfloat16 bits, round to nearest even; a finite value that would round to
    /// infinity is truncated instead.
    @inline(__always)
    public static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        if rounded & 0x7FFF == 0x7F80, x.isFinite { return UInt16(truncatingIfNeeded: bits >> 16) }
        return rounded
    }

    /// Encodes `values` with `codec` into payload frames. Dense codecs split at `chunk` values
    /// (int8: one block of `block` values per frame), top-k keeps
    /// `max(1, ceil(fraction * n))` entries (at most n) in frames of at most `chunk` entries.
    public static func encode(_ values: UnsafeBufferPointer<Float>, codec: PayloadCodec, chunk: Int, block: Int = defaultBlock,
                              fraction: Double = defaultTopKFraction) -> [[UInt8]] {
        let n = values.count
        let chunk = max(1, chunk)
        var frames: [[UInt8]] = []
        switch codec {
        case .denseFloat32:
            var start = 0
            while start < n {
                let end = min(n, start + chunk)
                frames.append(Array(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[start..<end]))))
                start = end
            }
        case .float16, .bfloat16:
            var start = 0
            while start < n {
                let end = min(n, start + chunk)
                var f = [UInt8](repeating: 0, count: 2 * (end - start))
                f.withUnsafeMutableBytes { out in
                    for i in start..<end {
                        let bits: UInt16
                        if codec == .float16 {
                            bits = Float16(min(max(values[i], -65504), 65504)).bitPattern
                        } else {
                            bits = bfloat16Bits(values[i])
                        }
                        out.storeBytes(of: bits.littleEndian, toByteOffset: 2 * (i - start), as: UInt16.self)
                    }
                }
                frames.append(f)
                start = end
            }
        case .int8:
            let block = max(1, block)
            var start = 0
            while start < n {
                let end = min(n, start + block)
                var peak: Float = 0
                for i in start..<end { peak = max(peak, abs(values[i])) }
                let scale = peak / 127
                var f = [UInt8](repeating: 0, count: 4 + end - start)
                f.withUnsafeMutableBytes { out in
                    out.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
                    guard scale > 0 else { return }
                    for i in start..<end {
                        let q = min(max((values[i] / scale).rounded(), -127), 127)
                        out.storeBytes(of: Int8(q), toByteOffset: 4 + i - start, as: Int8.self)
                    }
                }
                frames.append(f)
                start = end
            }
        case .topK:
            let selected = topK(values, k: topKCount(n: n, fraction: fraction))
            var start = 0
            repeat {
                let end = min(selected.count, start + chunk)
                var f = [UInt8](repeating: 0, count: 6 * (end - start))
                f.withUnsafeMutableBytes { out in
                    for e in start..<end {
                        let i = selected[e]
                        out.storeBytes(of: UInt32(i).littleEndian, toByteOffset: 6 * (e - start), as: UInt32.self)
                        out.storeBytes(of: bfloat16Bits(values[i]).littleEndian, toByteOffset: 6 * (e - start) + 4, as: UInt16.self)
                    }
                }
                frames.append(f)
                start = end
            } while start < selected.count
        }
        if frames.isEmpty { frames.append([]) }
        return frames
    }

    /// k for top-k of n values.
    public static func topKCount(n: Int, fraction: Double) -> Int {
        guard n > 0 else { return 0 }
        return min(n, max(1, Int((fraction * Double(n)).rounded(.up))))
    }

    /// The indices of the k values of largest magnitude (ties: the lower index), ascending.
    static func topK(_ values: UnsafeBufferPointer<Float>, k: Int) -> [Int] {
        let n = values.count
        guard k > 0 else { return [] }
        guard k < n else { return Array(0..<n) }
        // The k-th largest magnitude by quickselect on a copy, then one pass in index order:
        // every value above it, and values equal to it (lowest indices first) up to k.
        var mags = values.map { abs($0) }
        let threshold = select(&mags, rank: n - k)
        var above = 0
        for v in values where abs(v) > threshold { above += 1 }
        var ties = k - above
        var out: [Int] = []
        out.reserveCapacity(k)
        for i in 0..<n {
            let m = abs(values[i])
            if m > threshold {
                out.append(i)
            } else if m == threshold, ties > 0 {
                out.append(i)
                ties -= 1
            }
        }
        return out
    }

    /// The value that would be at `rank` (0-based, ascending) if `a` were sorted; reorders `a`.
    static func select(_ a: inout [Float], rank: Int) -> Float {
        var lo = 0, hi = a.count - 1
        while lo < hi {
            // A random pivot only decides how fast the answer comes, not the answer.
            let pivot = a[Int.random(in: lo...hi)]
            var i = lo, j = hi
            while i <= j {
                while a[i] < pivot { i += 1 }
                while a[j] > pivot { j -= 1 }
                if i <= j {
                    a.swapAt(i, j)
                    i += 1
                    j -= 1
                }
            }
            if rank <= j { hi = j } else if rank >= i { lo = i } else { return a[rank] }
        }
        return a[rank]
    }

    /// The values `frames` (checked, `count` values or top-k of that many) decode to: what
    /// the receiver will see. For tests; the aggregator never calls it.
    public static func decode(_ frames: [[UInt8]], codec: PayloadCodec, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        add(frames, codec: codec, times: 1, to: &out)
        return out
    }

    /// `x += scale * decode(frames)`, decoding a piece at a time; what error feedback does
    /// in place (`x - decode(encode(x))`, scale -1) without a second model-sized vector.
    public static func add(_ frames: [[UInt8]], codec: PayloadCodec, times scale: Float, to x: inout [Float]) {
        let count = x.count
        x.withUnsafeMutableBufferPointer { out in
            frames.withUnsafeRawBuffers { buffers in
                if codec.isSparse {
                    UpdateCodec.forEachEntry(buffers) { i, v in if i < count { out[i] += scale * v } }
                } else {
                    let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 4096)
                    defer { scratch.deallocate() }
                    var offset = 0
                    for b in DenseBlocks(buffers, codec: codec, scratch: scratch) {
                        let n = b.count / 4
                        for j in 0..<n where offset + j < count { out[offset + j] += scale * b.loadUnaligned(fromByteOffset: 4 * j, as: Float.self) }
                        offset += n
                    }
                }
            }
        }
    }
}

extension Array where Element == [UInt8] {
    /// Calls `body` with raw views of every element, valid for the call.
    func withUnsafeRawBuffers<T>(_ body: ([UnsafeRawBufferPointer]) throws -> T) rethrows -> T {
        func go(_ i: Int, _ acc: inout [UnsafeRawBufferPointer]) throws -> T {
            if i == count { return try body(acc) }
            return try self[i].withUnsafeBytes { b in
                acc.append(b)
                return try go(i + 1, &acc)
            }
        }
        var acc: [UnsafeRawBufferPointer] = []
        acc.reserveCapacity(count)
        return try go(0, &acc)
    }
}

/// The dense values of a checked payload (codecs 0-3) as consecutive float32 buffers, in
/// order: float32 frames as they are (read in place), other codecs decoded piece by piece
/// into `scratch`. Each buffer is valid until the next one is produced; iterate once per
/// pass, without keeping buffers.
public struct DenseBlocks<Frames: Collection<UnsafeRawBufferPointer>>: Sequence {
    let frames: Frames
    let codec: PayloadCodec
    let scratch: UnsafeMutableBufferPointer<Float>

    public init(_ frames: Frames, codec: PayloadCodec, scratch: UnsafeMutableBufferPointer<Float>) {
        precondition(!codec.isSparse && scratch.count > 0)
        self.frames = frames
        self.codec = codec
        self.scratch = scratch
    }

    public struct Iterator: IteratorProtocol {
        var frames: Frames.Iterator
        let codec: PayloadCodec
        let scratch: UnsafeMutableBufferPointer<Float>
        var current: UnsafeRawBufferPointer? = nil
        /// Values of `current` already produced.
        var done = 0

        public mutating func next() -> UnsafeRawBufferPointer? {
            if codec == .denseFloat32 { return frames.next() }
            while true {
                if let f = current {
                    let body = codec == .int8 ? f.count - 4 : f.count / 2
                    if done < body { return decodePiece(f, of: body) }
                    current = nil
                }
                guard let f = frames.next() else { return nil }
                current = f
                done = 0
            }
        }

        mutating func decodePiece(_ f: UnsafeRawBufferPointer, of body: Int) -> UnsafeRawBufferPointer {
            let n = Swift.min(scratch.count, body - done)
            let out = scratch.baseAddress!
            switch codec {
            case .float16:
                for j in 0..<n {
                    let bits = UInt16(littleEndian: f.loadUnaligned(fromByteOffset: (done &+ j) &* 2, as: UInt16.self))
                    out[j] = Float(Float16(bitPattern: bits))
                }
            case .bfloat16:
                for j in 0..<n {
                    let bits = UInt16(littleEndian: f.loadUnaligned(fromByteOffset: (done &+ j) &* 2, as: UInt16.self))
                    out[j] = Float(bitPattern: UInt32(bits) << 16)
                }
            case .int8:
                let scale = Float(bitPattern: UInt32(littleEndian: f.loadUnaligned(as: UInt32.self)))
                for j in 0..<n { out[j] = Float(f.load(fromByteOffset: 4 &+ done &+ j, as: Int8.self)) * scale }
            case .denseFloat32, .topK:
                preconditionFailure("not a decoded dense codec")
            }
            done += n
            return UnsafeRawBufferPointer(start: out, count: n * 4)
        }
    }

    public func makeIterator() -> Iterator { Iterator(frames: frames.makeIterator(), codec: codec, scratch: scratch) }
}
