import ApiaryCore

/// Why a frame or message could not be decoded. Every malformed input maps to one of these;
/// decoding never traps.
public enum WireError: Error, Hashable, CustomStringConvertible, Sendable {
    case wrongFrameCount(message: String, expected: String, got: Int)
    case truncated(frame: String, needed: Int, got: Int)
    case trailingBytes(frame: String, count: Int)
    case badMagic
    case unsupportedProtocolVersion(UInt8)
    case unknownMessageType(UInt8)
    case unexpectedMessageType(expected: MessageType, got: MessageType)
    case reservedBitsSet
    case invalidClientID(String)
    case invalidTopic(String)
    case invalidLayout(String)
    case unsupportedDType(UInt8)
    case unsupportedCodec(UInt8)
    case payloadSize(expectedBytes: Int, gotBytes: Int)
    case misalignedPayloadFrame(index: Int, bytes: Int)
    case invalidChunk(String)
    case invalidField(String)
    case invalidConfig(String)
    /// The payload breaks its codec's rules (PROTOCOL.md 3.4.1).
    case badEncoding(String)

    /// The receipt reason this error maps to.
    public var reason: RejectReason {
        switch self {
        case .unsupportedProtocolVersion: .unsupportedProtocolVersion
        case .unknownMessageType, .unexpectedMessageType: .unknownMessageType
        case .invalidLayout, .unsupportedDType: .layoutMismatch
        case .unsupportedCodec: .unsupportedCodec
        case .badEncoding: .badEncoding
        case .invalidClientID: .unknownClient
        default: .malformed
        }
    }

    public var description: String {
        switch self {
        case .wrongFrameCount(let m, let e, let g): "\(m): expected \(e) frames, got \(g)"
        case .truncated(let f, let n, let g): "\(f) frame truncated: needs \(n) bytes, has \(g)"
        case .trailingBytes(let f, let c): "\(f) frame has \(c) unexpected trailing bytes"
        case .badMagic: "header frame does not start with the magic bytes 'APRY'"
        case .unsupportedProtocolVersion(let v): "unsupported protocol version \(v) (this peer speaks 1)"
        case .unknownMessageType(let t): "unknown message type \(t)"
        case .unexpectedMessageType(let e, let g): "expected a \(e) message, got \(g)"
        case .reservedBitsSet: "reserved header bytes must be zero"
        case .invalidClientID(let id): "invalid client id '\(PeerText.escaped(id, limit: 80))' (1 to 64 characters of A-Z a-z 0-9 . _ -)"
        case .invalidTopic(let t): "invalid topic '\(PeerText.escaped(t, limit: 80))'"
        case .invalidLayout(let r): "invalid layout frame: \(r)"
        case .unsupportedDType(let d): "unsupported dtype code \(d) (v1 carries float32 = 1 only)"
        case .unsupportedCodec(let c): "unsupported payload codec \(c) (this aggregator takes 0 float32, 1 float16, 2 bfloat16, 3 int8, 4 top-k)"
        case .badEncoding(let r): "bad encoding: \(r)"
        case .payloadSize(let e, let g): "payload is \(g) bytes, the layout needs \(e)"
        case .misalignedPayloadFrame(let i, let b): "payload frame \(i) has \(b) bytes, not a multiple of 4"
        case .invalidChunk(let r): "invalid model chunk: \(r)"
        case .invalidField(let r): "invalid field: \(r)"
        case .invalidConfig(let r): "invalid config frame: \(r)"
        }
    }
}
