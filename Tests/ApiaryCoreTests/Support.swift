import Testing

/// A small, seeded, platform-independent PRNG (SplitMix64) so that every "random" test is
/// reproducible.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `|a - b| <= tolerance * max(1, |a|, |b|)`.
func approximatelyEqual(_ a: Double, _ b: Double, tolerance: Double = 1e-12) -> Bool {
    abs(a - b) <= tolerance * max(1, abs(a), abs(b))
}

/// Little-endian float32 bytes of `values`.
func float32Bytes(_ values: [Float]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 4)
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    return out
}

/// Copies `bytes` into a fresh allocation at byte offset `offset` (0 = 16-byte aligned,
/// 1 = deliberately misaligned for float32) and passes the raw view of exactly those bytes.
func withRawBytes<R>(_ bytes: [UInt8], offset: Int = 0, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count + offset + 1, alignment: 16)
    defer { storage.deallocate() }
    storage.initializeMemory(as: UInt8.self, repeating: 0xEE)
    let region = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + bytes.count)])
    region.copyBytes(from: bytes)
    return try body(UnsafeRawBufferPointer(region))
}

/// Like `withRawBytes`, for several buffers at once (each in its own allocation).
func withRawFrames<R>(_ frames: [[UInt8]], offsets: [Int]? = nil, _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
    var allocations: [UnsafeMutableRawBufferPointer] = []
    var views: [UnsafeRawBufferPointer] = []
    defer { for a in allocations { a.deallocate() } }
    for (i, f) in frames.enumerated() {
        let offset = offsets?[i] ?? 0
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: f.count + offset + 1, alignment: 16)
        allocations.append(storage)
        let region = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + f.count)])
        region.copyBytes(from: f)
        views.append(UnsafeRawBufferPointer(region))
    }
    return try body(views)
}
