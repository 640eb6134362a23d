/// Little-endian writer for header frames.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
}

/// Little-endian reader over one frame. Every read is bounds-checked and throws
/// `WireError.truncated` instead of trapping.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    let frame: String
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer, frame: String) {
        self.buffer = buffer
        self.frame = frame
    }

    var remaining: Int { buffer.count - offset }

    mutating func need(_ n: Int) throws(WireError) {
        guard n >= 0, remaining >= n else { throw .truncated(frame: frame, needed: offset + n, got: buffer.count) }
    }

    mutating func u8() throws(WireError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return buffer[offset]
    }

    mutating func u16() throws(WireError) -> UInt16 {
        try need(2)
        defer { offset += 2 }
        return UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    mutating func u32() throws(WireError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        return UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    mutating func u64() throws(WireError) -> UInt64 {
        try need(8)
        defer { offset += 8 }
        return UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    mutating func i64() throws(WireError) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func f64() throws(WireError) -> Double { Double(bitPattern: try u64()) }

    mutating func bytes(_ n: Int) throws(WireError) -> UnsafeRawBufferPointer {
        try need(n)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)])
    }

    /// Throws unless the whole frame was consumed.
    func end() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(frame: frame, count: remaining) }
    }
}
