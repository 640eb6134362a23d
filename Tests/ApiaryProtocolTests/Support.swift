import ApiaryCore
import ApiaryProtocol
import Testing

/// Seeded SplitMix64, so every random test is reproducible.
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
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// Little-endian byte builder for hand-written (golden or malformed) frames; independent of
/// the codec's own writer.
struct LE {
    var bytes: [UInt8] = []
    func raw(_ b: [UInt8]) -> LE { LE(bytes: bytes + b) }
    func u8(_ v: UInt8) -> LE { raw([v]) }
    func u16(_ v: UInt16) -> LE { raw((0..<2).map { UInt8((v >> (8 * UInt16($0))) & 0xFF) }) }
    func u32(_ v: UInt32) -> LE { raw((0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) }) }
    func u64(_ v: UInt64) -> LE { raw((0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) }) }
    func str(_ s: String) -> LE { raw(Array(s.utf8)) }
    /// Common header prefix: "APRY", version, type, reserved.
    func common(_ type: UInt8, version: UInt8 = 1, reserved: UInt16 = 0) -> LE {
        raw([0x41, 0x50, 0x52, 0x59]).u8(version).u8(type).u16(reserved)
    }
    /// One layout tensor entry: name length, name, dtype, rank, dimensions.
    func tensor(_ name: [UInt8], dtype: UInt8 = 1, shape: [UInt64]) -> LE {
        shape.reduce(u8(UInt8(name.count)).raw(name).u8(dtype).u8(UInt8(shape.count))) { $0.u64($1) }
    }
}

/// Copies each frame into its own allocation (at byte offset 0, or `offset` to misalign) and
/// passes raw views to `body`, as a ZeroMQ receive would.
func withFrames<R, E: Error>(_ frames: [[UInt8]], offset: Int = 0, _ body: ([UnsafeRawBufferPointer]) throws(E) -> R) throws(E) -> R {
    var allocations: [UnsafeMutableRawBufferPointer] = []
    defer { for a in allocations { a.deallocate() } }
    var views: [UnsafeRawBufferPointer] = []
    for f in frames {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: f.count + offset + 1, alignment: 16)
        allocations.append(storage)
        let region = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + f.count)])
        region.copyBytes(from: f)
        views.append(UnsafeRawBufferPointer(region))
    }
    return try body(views)
}

/// Runs a decoder on `frames`; returns the error it throws, or nil when it decodes.
func decodeError<R>(_ frames: [[UInt8]], _ decode: ([UnsafeRawBufferPointer]) throws(WireError) -> R) -> WireError? {
    withFrames(frames) { (views) -> WireError? in
        do throws(WireError) { _ = try decode(views); return nil } catch { return error }
    }
}

/// Same, for single-frame decoders.
func decodeError<R>(frame: [UInt8], _ decode: (UnsafeRawBufferPointer) throws(WireError) -> R) -> WireError? {
    withFrames([frame]) { (views) -> WireError? in
        do throws(WireError) { _ = try decode(views[0]); return nil } catch { return error }
    }
}

/// Little-endian float32 bytes.
func float32Bytes(_ values: [Float]) -> [UInt8] {
    var out: [UInt8] = []
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    return out
}

func floats(_ raw: UnsafeRawBufferPointer) -> [Float] {
    (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
}

extension WireError {
    /// The case, without its payload, for matching errors whose text is free-form.
    enum Kind: Hashable {
        case wrongFrameCount, truncated, trailingBytes, badMagic, unsupportedProtocolVersion, unknownMessageType
        case unexpectedMessageType, reservedBitsSet, invalidClientID, invalidTopic, invalidLayout, unsupportedDType
        case unsupportedCodec, payloadSize, misalignedPayloadFrame, invalidChunk, invalidField, invalidConfig, badEncoding
    }

    var kind: Kind {
        switch self {
        case .wrongFrameCount: .wrongFrameCount
        case .truncated: .truncated
        case .trailingBytes: .trailingBytes
        case .badMagic: .badMagic
        case .unsupportedProtocolVersion: .unsupportedProtocolVersion
        case .unknownMessageType: .unknownMessageType
        case .unexpectedMessageType: .unexpectedMessageType
        case .reservedBitsSet: .reservedBitsSet
        case .invalidClientID: .invalidClientID
        case .badEncoding: .badEncoding
        case .invalidTopic: .invalidTopic
        case .invalidLayout: .invalidLayout
        case .unsupportedDType: .unsupportedDType
        case .unsupportedCodec: .unsupportedCodec
        case .payloadSize: .payloadSize
        case .misalignedPayloadFrame: .misalignedPayloadFrame
        case .invalidChunk: .invalidChunk
        case .invalidField: .invalidField
        case .invalidConfig: .invalidConfig
        }
    }
}

/// Shared sample values.
enum Sample {
    static let layout = try! ParameterLayout([TensorSpec(name: "W", shape: [2, 3]), TensorSpec(name: "b", shape: [3]),
                                              TensorSpec(name: "scale", shape: [])])
    static let parameters: [Float] = [0.5, -1, 2, 3.25, -4, 5, 1e-3, -1e3, 7, 42]

    static let config = SnapshotConfig(
        rule: FedAsync(alpha: 0.6, staleness: .hinge(a: 2, b: 3), maxStaleness: 12),
        training: TrainingConfig(learningRate: 0.05, localEpochs: 2, batchSize: 32, proximalMu: 0.01),
        chunkParameters: 4, maxFrameBytes: 16 << 20, receiptTimeoutSeconds: 2.5)

    static func replyHeader(frames: UInt32 = 3, layout: ParameterLayout = Sample.layout) -> SnapshotReplyHeader {
        SnapshotReplyHeader(requestID: 77, runID: 0xABCD, version: 12, layoutFingerprint: layout.fingerprint,
                            parameterCount: UInt64(layout.parameterCount), serverTimeMilliseconds: 1_700_000_000_123,
                            payloadFrameCount: frames)
    }

    /// A valid SNAPSHOT_REPLY (payload split 4 + 4 + 2).
    static var replyFrames: [[UInt8]] {
        [Codec.encode(replyHeader()), Codec.encodeLayout(layout), config.encoded(),
         float32Bytes(Array(parameters[0..<4])), float32Bytes(Array(parameters[4..<8])), float32Bytes(Array(parameters[8...]))]
    }

    static let updateHeader = UpdateHeader(runID: 0xABCD, baseVersion: 11, seq: 1_700_000_000_000_001, sampleCount: 180, clientID: "client-1.a_B")

    /// A valid CLIENT_UPDATE (payload split 6 + 4).
    static var updateFrames: [[UInt8]] {
        [Codec.encode(updateHeader), Codec.encodeLayout(layout),
         float32Bytes(Array(parameters[0..<6])), float32Bytes(Array(parameters[6...]))]
    }

    static let chunkHeader = ModelChunkHeader(runID: 0xABCD, version: 12, layoutFingerprint: layout.fingerprint,
                                              parameterCount: 10, chunkOffset: 4, chunkIndex: 1, chunkCount: 3)

    static var chunkFrames: [[UInt8]] {
        [Array("model".utf8), Codec.encode(chunkHeader), float32Bytes(Array(parameters[4..<8]))]
    }

    static let receipt = Receipt(clientID: "c1", runID: 7, seq: 3, baseVersion: 5, modelVersion: 9, staleness: 4,
                                 mixingWeight: 0.5, decision: .merged, reason: .none, message: "merged at version 9")

    static let request = SnapshotRequest(requestID: 0x0102_0304_0506_0708, clientID: "c-9")
}
