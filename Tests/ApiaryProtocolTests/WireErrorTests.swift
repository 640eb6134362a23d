import ApiaryCore
import ApiaryProtocol
import Testing

@Suite("WireError")
struct WireErrorTests {
    @Test("each error maps to the documented receipt reason", arguments: [
        (WireError.unsupportedProtocolVersion(2), RejectReason.unsupportedProtocolVersion),
        (.unknownMessageType(99), .unknownMessageType),
        (.unexpectedMessageType(expected: .clientUpdate, got: .receipt), .unknownMessageType),
        (.invalidLayout("x"), .layoutMismatch),
        (.unsupportedDType(7), .layoutMismatch),
        (.unsupportedCodec(1), .unsupportedCodec),
        (.invalidClientID("a b"), .unknownClient),
        (.wrongFrameCount(message: "CLIENT_UPDATE", expected: "at least 3", got: 1), .malformed),
        (.truncated(frame: "h", needed: 8, got: 3), .malformed),
        (.trailingBytes(frame: "h", count: 1), .malformed),
        (.badMagic, .malformed),
        (.reservedBitsSet, .malformed),
        (.invalidTopic("x"), .malformed),
        (.payloadSize(expectedBytes: 8, gotBytes: 4), .malformed),
        (.misalignedPayloadFrame(index: 0, bytes: 3), .malformed),
        (.invalidChunk("x"), .malformed),
        (.invalidField("x"), .malformed),
        (.invalidConfig("x"), .malformed),
    ])
    func reason(error: WireError, expected: RejectReason) {
        #expect(error.reason == expected)
    }

    @Test("descriptions are human-readable")
    func descriptions() {
        #expect(WireError.badMagic.description == "header frame does not start with the magic bytes 'APRY'")
        #expect(WireError.unsupportedProtocolVersion(2).description == "unsupported protocol version 2 (this peer speaks 1)")
        #expect(WireError.truncated(frame: "RECEIPT header", needed: 60, got: 12).description ==
                "RECEIPT header frame truncated: needs 60 bytes, has 12")
        #expect(WireError.unexpectedMessageType(expected: .clientUpdate, got: .receipt).description ==
                "expected a CLIENT_UPDATE message, got RECEIPT")
        #expect(WireError.misalignedPayloadFrame(index: 2, bytes: 7).description == "payload frame 2 has 7 bytes, not a multiple of 4")
    }

    @Test("errors decoded from real frames map to reasons end to end")
    func endToEnd() {
        var h = Codec.encode(Sample.updateHeader)
        h[4] = 2
        let e = decodeError(frame: h) { (f) throws(WireError) in try Codec.decodeUpdateHeader(f) }
        #expect(e?.reason == .unsupportedProtocolVersion)
        h[4] = 1
        h[5] = 99
        #expect(decodeError(frame: h) { (f) throws(WireError) in try Codec.decodeUpdateHeader(f) }?.reason == .unknownMessageType)
        h[5] = 4
        #expect(decodeError(frame: Array(h.prefix(10))) { (f) throws(WireError) in try Codec.decodeUpdateHeader(f) }?.reason == .malformed)
    }
}
