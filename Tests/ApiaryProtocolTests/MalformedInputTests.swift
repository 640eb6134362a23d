import ApiaryCore
import ApiaryProtocol
import Testing

@Suite("Malformed input throws a specific WireError")
struct MalformedInputTests {
    // MARK: Decoders by name, for table-driven tests

    enum Decoder: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case modelChunk, snapshotRequest, snapshotReply, update, updateHeader, receipt

        var testDescription: String { rawValue }

        /// Runs the decoder on `frames` and returns its error (nil when it decodes).
        func error(_ frames: [[UInt8]]) -> WireError? {
            switch self {
            case .modelChunk: decodeError(frames) { (v) throws(WireError) in try Codec.decodeModelChunk(v) }
            case .snapshotRequest: decodeError(frames) { (v) throws(WireError) in try Codec.decodeSnapshotRequest(v[0]) }
            case .snapshotReply: decodeError(frames) { (v) throws(WireError) in try Codec.decodeSnapshotReply(v) }
            case .update: decodeError(frames) { (v) throws(WireError) in try Codec.decodeUpdate(v) }
            case .updateHeader: decodeError(frames) { (v) throws(WireError) in try Codec.decodeUpdateHeader(v[0]) }
            case .receipt: decodeError(frames) { (v) throws(WireError) in try Codec.decodeReceipt(v) }
            }
        }

        /// A valid message for this decoder.
        var valid: [[UInt8]] {
            switch self {
            case .modelChunk: Sample.chunkFrames
            case .snapshotRequest: [Codec.encode(Sample.request)]
            case .snapshotReply: Sample.replyFrames
            case .update: Sample.updateFrames
            case .updateHeader: [Codec.encode(Sample.updateHeader)]
            case .receipt: Codec.encode(Sample.receipt)
            }
        }

        /// Index of the header frame in `valid`.
        var headerIndex: Int {
            switch self {
            case .modelChunk, .receipt: 1
            default: 0
            }
        }

        var type: MessageType {
            switch self {
            case .modelChunk: .modelChunk
            case .snapshotRequest: .snapshotRequest
            case .snapshotReply: .snapshotReply
            case .update, .updateHeader: .clientUpdate
            case .receipt: .receipt
            }
        }

        /// `valid` with the header frame replaced.
        func withHeader(_ header: [UInt8]) -> [[UInt8]] {
            var f = valid
            f[headerIndex] = header
            return f
        }
    }

    @Test("the valid sample of every decoder decodes", arguments: Decoder.allCases)
    func validSamples(decoder: Decoder) {
        #expect(decoder.error(decoder.valid) == nil)
    }

    // MARK: Frame counts

    @Test("wrong frame counts", arguments: [
        (Decoder.modelChunk, 0), (.modelChunk, 2), (.modelChunk, 4),
        (.snapshotReply, 0), (.snapshotReply, 3),
        (.update, 0), (.update, 1), (.update, 2),
        (.receipt, 0), (.receipt, 2), (.receipt, 4),
    ])
    func frameCounts(decoder: Decoder, count: Int) {
        var frames = decoder.valid
        while frames.count > count { frames.removeLast() }
        while frames.count < count { frames.append([]) }
        #expect(decoder.error(frames)?.kind == .wrongFrameCount, "\(count) frames")
    }

    @Test("SNAPSHOT_REPLY whose payload frame count disagrees with the header")
    func replyPayloadFrameCount() {
        var frames = Sample.replyFrames
        frames.append([]) // 4 payload frames, header says 3
        #expect(Decoder.snapshotReply.error(frames) == .wrongFrameCount(message: "SNAPSHOT_REPLY", expected: "6", got: 7))
        frames = Sample.replyFrames
        frames[0] = Codec.encode(Sample.replyHeader(frames: 0))
        #expect(Decoder.snapshotReply.error(frames)?.kind == .wrongFrameCount)
        frames[0] = Codec.encode(Sample.replyHeader(frames: .max))
        #expect(Decoder.snapshotReply.error(frames)?.kind == .wrongFrameCount)
    }

    @Test("an empty header frame list is a wrong frame count, not a trap")
    func emptyFrames() {
        #expect(decodeError([]) { (v) throws(WireError) in try Codec.decodeModelChunk(v) } ==
                .wrongFrameCount(message: "MODEL_CHUNK", expected: "3", got: 0))
        #expect(decodeError([]) { (v) throws(WireError) in try Codec.decodeSnapshotReply(v) } ==
                .wrongFrameCount(message: "SNAPSHOT_REPLY", expected: "at least 4", got: 0))
        #expect(decodeError([]) { (v) throws(WireError) in try Codec.decodeUpdate(v) } ==
                .wrongFrameCount(message: "CLIENT_UPDATE", expected: "at least 3", got: 0))
        #expect(decodeError([]) { (v) throws(WireError) in try Codec.decodeReceipt(v) } ==
                .wrongFrameCount(message: "RECEIPT", expected: "3", got: 0))
    }

    // MARK: Header prefix

    @Test("a header truncated at every length throws truncated", arguments: Decoder.allCases)
    func truncatedHeaders(decoder: Decoder) {
        let full = decoder.valid[decoder.headerIndex]
        for length in 0..<full.count {
            let error = decoder.error(decoder.withHeader(Array(full.prefix(length))))
            guard case .truncated(_, let needed, let got)? = error else {
                Issue.record("length \(length): \(String(describing: error))")
                continue
            }
            #expect(got == length && needed > length && needed <= full.count, "length \(length)")
        }
    }

    @Test("the first truncation is reported against the 8-byte common header")
    func truncatedCommon() {
        #expect(decodeError(frame: [0x41, 0x50, 0x52]) { (f) throws(WireError) in try Codec.messageType(ofHeader: f) } ==
                .truncated(frame: "header", needed: 8, got: 3))
        #expect(decodeError(frame: Array(Codec.encode(Sample.updateHeader).prefix(20))) { (f) throws(WireError) in
            try Codec.decodeUpdateHeader(f)
        } == .truncated(frame: "CLIENT_UPDATE header", needed: 24, got: 20))
    }

    @Test("trailing bytes after a header", arguments: Decoder.allCases)
    func trailing(decoder: Decoder) {
        let error = decoder.error(decoder.withHeader(decoder.valid[decoder.headerIndex] + [0]))
        #expect(error?.kind == .trailingBytes)
        guard case .trailingBytes(_, let count)? = error else { return }
        #expect(count == 1)
    }

    @Test("bad magic", arguments: Decoder.allCases)
    func badMagic(decoder: Decoder) {
        for i in 0..<4 {
            var header = decoder.valid[decoder.headerIndex]
            header[i] ^= 0x20
            #expect(decoder.error(decoder.withHeader(header)) == .badMagic, "byte \(i)")
        }
    }

    @Test("protocol versions other than 1", arguments: Decoder.allCases)
    func version(decoder: Decoder) {
        for v: UInt8 in [0, 2, 255] {
            var header = decoder.valid[decoder.headerIndex]
            header[4] = v
            #expect(decoder.error(decoder.withHeader(header)) == .unsupportedProtocolVersion(v))
        }
    }

    @Test("unknown message types", arguments: Decoder.allCases)
    func unknownType(decoder: Decoder) {
        for t: UInt8 in [0, 7, 99, 255] {
            var header = decoder.valid[decoder.headerIndex]
            header[5] = t
            #expect(decoder.error(decoder.withHeader(header)) == .unknownMessageType(t))
        }
    }

    @Test("a known but unexpected message type", arguments: Decoder.allCases)
    func unexpectedType(decoder: Decoder) {
        for t: UInt8 in 1...6 where t != decoder.type.rawValue {
            var header = decoder.valid[decoder.headerIndex]
            header[5] = t
            let got = MessageType(rawValue: t)!
            #expect(decoder.error(decoder.withHeader(header)) == .unexpectedMessageType(expected: decoder.type, got: got))
        }
    }

    @Test("reserved bytes of the common prefix set", arguments: Decoder.allCases)
    func reservedCommon(decoder: Decoder) {
        for i in [6, 7] {
            var header = decoder.valid[decoder.headerIndex]
            header[i] = 1
            #expect(decoder.error(decoder.withHeader(header)) == .reservedBitsSet, "byte \(i)")
        }
    }

    @Test("reserved fields of CLIENT_UPDATE (42-43), SNAPSHOT_REPLY (60-63) and RECEIPT (58-59) set")
    func reservedFields() {
        for i in [42, 43] {
            var h = Codec.encode(Sample.updateHeader)
            h[i] = 0x80
            #expect(Decoder.updateHeader.error([h]) == .reservedBitsSet)
            #expect(Decoder.update.error(Decoder.update.withHeader(h)) == .reservedBitsSet)
        }
        for i in 60..<64 {
            var h = Codec.encode(Sample.replyHeader())
            h[i] = 1
            #expect(Decoder.snapshotReply.error(Decoder.snapshotReply.withHeader(h)) == .reservedBitsSet, "byte \(i)")
        }
        for i in [58, 59] {
            var h = Codec.encode(Sample.receipt)[1]
            h[i] = 1
            #expect(Decoder.receipt.error(Decoder.receipt.withHeader(h)) == .reservedBitsSet, "byte \(i)")
        }
    }

    @Test("messageType(ofHeader:) reads the type and checks the prefix")
    func messageType() {
        for d in Decoder.allCases {
            #expect(decodeError(frame: d.valid[d.headerIndex]) { (f) throws(WireError) in try Codec.messageType(ofHeader: f) } == nil)
            let type = withFrames([d.valid[d.headerIndex]]) { v in try? Codec.messageType(ofHeader: v[0]) }
            #expect(type == d.type)
        }
        let bad = LE().common(99)
        #expect(decodeError(frame: bad.bytes) { (f) throws(WireError) in try Codec.messageType(ofHeader: f) } == .unknownMessageType(99))
        #expect(decodeError(frame: Array("HTTP/1.1".utf8)) { (f) throws(WireError) in try Codec.messageType(ofHeader: f) } == .badMagic)
    }

    // MARK: Client ids

    static let badIDs: [[UInt8]] = [
        [], Array(String(repeating: "a", count: 65).utf8), Array("a/b".utf8), Array("a b".utf8), Array("é".utf8),
        [0xFF], [0x61, 0x00], Array("receipt/".utf8), Array(String(repeating: "z", count: 255).utf8),
    ]

    func updateHeader(idBytes: [UInt8], lengthByte: UInt8? = nil) -> [UInt8] {
        let h = LE().common(4).u64(1).u64(2).u64(3).u64(4).u8(0).u8(lengthByte ?? UInt8(idBytes.count)).u16(0).raw(idBytes)
        return h.bytes
    }

    @Test("CLIENT_UPDATE rejects invalid client ids", arguments: badIDs)
    func updateClientIDs(id: [UInt8]) {
        let error = Decoder.updateHeader.error([updateHeader(idBytes: id)])
        #expect(error?.kind == .invalidClientID)
        #expect(error?.reason == .unknownClient)
        #expect(Decoder.update.error(Decoder.update.withHeader(updateHeader(idBytes: id)))?.kind == .invalidClientID)
    }

    @Test("CLIENT_UPDATE: an id length that disagrees with the frame")
    func updateIDLength() {
        #expect(Decoder.updateHeader.error([updateHeader(idBytes: Array("abc".utf8), lengthByte: 4)])?.kind == .truncated)
        #expect(Decoder.updateHeader.error([updateHeader(idBytes: Array("abc".utf8), lengthByte: 2)]) ==
                .trailingBytes(frame: "CLIENT_UPDATE header", count: 1))
    }

    @Test("SNAPSHOT_REQUEST rejects invalid non-empty client ids", arguments: badIDs.filter { !$0.isEmpty })
    func requestClientIDs(id: [UInt8]) {
        let h = LE().common(2).u64(5).u8(UInt8(id.count)).raw(id)
        #expect(Decoder.snapshotRequest.error([h.bytes])?.kind == .invalidClientID)
    }

    @Test("CLIENT_UPDATE with an unsupported payload codec", arguments: [UInt8(5), 9, 255])
    func codec(code: UInt8) {
        var h = Codec.encode(Sample.updateHeader)
        h[40] = code
        let error = Decoder.updateHeader.error([h])
        #expect(error == .unsupportedCodec(code))
        #expect(error?.reason == .unsupportedCodec)
    }

    @Test("CLIENT_UPDATE payload frames that are not a multiple of 4 bytes", arguments: [1, 2, 3, 5, 39])
    func updateMisaligned(bytes: Int) {
        var frames = Sample.updateFrames
        frames.append([UInt8](repeating: 0, count: bytes))
        #expect(Decoder.update.error(frames) == .misalignedPayloadFrame(index: 2, bytes: bytes))
        frames = Sample.updateFrames
        frames[2] = [UInt8](repeating: 0, count: bytes)
        #expect(Decoder.update.error(frames) == .misalignedPayloadFrame(index: 0, bytes: bytes))
    }

    // MARK: Layout frame

    func layoutError(_ frame: [UInt8]) -> WireError? {
        decodeError(frame: frame) { (f) throws(WireError) in try Codec.decodeLayout(f) }
    }

    @Test("layout frames: zero tensors, too many tensors, bad rank, dtype, names, shapes")
    func layouts() {
        let zero = LE().u32(0)
        #expect(layoutError(zero.bytes)?.kind == .invalidLayout)
        let tooMany = LE().u32(4097)
        #expect(layoutError(tooMany.bytes)?.kind == .invalidLayout)
        let huge = LE().u32(.max)
        #expect(layoutError(huge.bytes)?.kind == .invalidLayout)

        let rank9 = LE().u32(1).tensor([0x77], shape: [UInt64](repeating: 1, count: 9))
        #expect(layoutError(rank9.bytes)?.kind == .invalidLayout)
        let rank8 = LE().u32(1).tensor([0x77], shape: [UInt64](repeating: 1, count: 8))
        #expect(layoutError(rank8.bytes) == nil)

        let dtype7 = LE().u32(1).tensor([0x77], dtype: 7, shape: [2])
        #expect(layoutError(dtype7.bytes) == .unsupportedDType(7))
        #expect(layoutError(dtype7.bytes)?.reason == .layoutMismatch)
        let dtype0 = LE().u32(1).tensor([0x77], dtype: 0, shape: [2])
        #expect(layoutError(dtype0.bytes) == .unsupportedDType(0))

        let duplicate = LE().u32(2).tensor([0x77], shape: [2]).tensor([0x77], shape: [3])
        #expect(layoutError(duplicate.bytes)?.kind == .invalidLayout)

        let nonUTF8 = LE().u32(1).tensor([0x77, 0xFF, 0xFE], shape: [2])
        #expect(layoutError(nonUTF8.bytes)?.kind == .invalidLayout)
        let overlong = LE().u32(1).tensor([0xC0, 0xAF], shape: [2]) // overlong "/"
        #expect(layoutError(overlong.bytes)?.kind == .invalidLayout)

        let emptyName = LE().u32(1).tensor([], shape: [2])
        #expect(layoutError(emptyName.bytes)?.kind == .invalidLayout)

        let bigDim = LE().u32(1).tensor([0x77], shape: [(1 << 34) + 1])
        #expect(layoutError(bigDim.bytes)?.kind == .invalidLayout)
        let maxDim = LE().u32(1).tensor([0x77], shape: [.max])
        #expect(layoutError(maxDim.bytes)?.kind == .invalidLayout)
        let productTooBig = LE().u32(1).tensor([0x77], shape: [1 << 20, 1 << 20])
        #expect(layoutError(productTooBig.bytes)?.kind == .invalidLayout)
    }

    @Test("a layout frame truncated at every length throws truncated")
    func layoutTruncated() {
        let full = Codec.encodeLayout(Sample.layout)
        for length in 0..<full.count {
            let error = layoutError(Array(full.prefix(length)))
            #expect(error?.kind == .truncated, "length \(length): \(String(describing: error))")
        }
    }

    @Test("a layout frame with trailing bytes")
    func layoutTrailing() {
        #expect(layoutError(Codec.encodeLayout(Sample.layout) + [0, 0]) == .trailingBytes(frame: "layout", count: 2))
    }

    // MARK: SNAPSHOT_REPLY body

    @Test("SNAPSHOT_REPLY: a bad layout frame is invalidLayout")
    func replyBadLayout() {
        var frames = Sample.replyFrames
        let zero = LE().u32(0)
        frames[1] = zero.bytes
        #expect(Decoder.snapshotReply.error(frames)?.kind == .invalidLayout)
        frames[1] = Codec.encodeLayout(Sample.layout) + [1]
        #expect(Decoder.snapshotReply.error(frames)?.kind == .trailingBytes)
    }

    @Test("SNAPSHOT_REPLY: fingerprint or parameter count disagreeing with the layout")
    func replyFingerprint() {
        var frames = Sample.replyFrames
        var h = Sample.replyHeader()
        h.layoutFingerprint ^= 1
        frames[0] = Codec.encode(h)
        #expect(Decoder.snapshotReply.error(frames) == .invalidLayout("fingerprint does not match the header"))
        h = Sample.replyHeader()
        h.parameterCount = 11
        frames[0] = Codec.encode(h)
        #expect(Decoder.snapshotReply.error(frames) == .invalidLayout("parameter count does not match the header"))
    }

    @Test("SNAPSHOT_REPLY: config frame that is not the expected JSON", arguments: [
        "", "not json", "[]", "{}", "{\"alpha\": 1}", "\u{FFFD}", "{\"algorithm\":\"fedasync\"",
    ])
    func replyConfig(text: String) {
        var frames = Sample.replyFrames
        frames[2] = Array(text.utf8)
        let error = Decoder.snapshotReply.error(frames)
        #expect(error?.kind == .invalidConfig)
        #expect(error?.reason == .malformed)
    }

    @Test("SNAPSHOT_REPLY: config frame of invalid UTF-8 or over 64 KiB")
    func replyConfigBytes() {
        var frames = Sample.replyFrames
        frames[2] = [0xFF, 0xFE, 0x7B, 0x7D]
        #expect(Decoder.snapshotReply.error(frames)?.kind == .invalidConfig)
        frames[2] = Sample.config.encoded() + [UInt8](repeating: 0x20, count: 65536)
        #expect(Decoder.snapshotReply.error(frames)?.kind == .invalidConfig)
    }

    @Test("SNAPSHOT_REPLY: payload frame not a multiple of 4 bytes")
    func replyMisaligned() {
        var frames = Sample.replyFrames
        frames[4] = Array(frames[4].dropLast())
        frames[5] = frames[5] + [0]
        #expect(Decoder.snapshotReply.error(frames) == .misalignedPayloadFrame(index: 1, bytes: 15))
    }

    @Test("SNAPSHOT_REPLY: payload total size wrong")
    func replyPayloadSize() {
        var frames = Sample.replyFrames
        frames[5] = frames[5] + [0, 0, 0, 0]
        #expect(Decoder.snapshotReply.error(frames) == .payloadSize(expectedBytes: 40, gotBytes: 44))
        frames = Sample.replyFrames
        frames[3] = []
        #expect(Decoder.snapshotReply.error(frames) == .payloadSize(expectedBytes: 40, gotBytes: 24))
    }

    // MARK: MODEL_CHUNK body

    func chunk(offset: UInt64, index: UInt32 = 0, count: UInt32 = 1, parameters: UInt64 = 10, values: Int) -> [[UInt8]] {
        let h = ModelChunkHeader(runID: 1, version: 1, layoutFingerprint: 1, parameterCount: parameters,
                                 chunkOffset: offset, chunkIndex: index, chunkCount: count)
        return [Topic.model, Codec.encode(h), [UInt8](repeating: 0, count: values * 4)]
    }

    @Test("MODEL_CHUNK past the end of the vector", arguments: [(UInt64(7), 4), (10, 1), (11, 0), (0, 11), (.max, 1), (.max - 1, 2)])
    func chunkPastEnd(offset: UInt64, values: Int) {
        #expect(Decoder.modelChunk.error(chunk(offset: offset, values: values))?.kind == .invalidChunk)
    }

    @Test("MODEL_CHUNK with chunkIndex >= chunkCount or chunkCount 0",
          arguments: [(UInt32(1), UInt32(1)), (5, 3), (0, 0), (.max, .max)])
    func chunkIndex(index: UInt32, count: UInt32) {
        #expect(Decoder.modelChunk.error(chunk(offset: 0, index: index, count: count, values: 1))?.kind == .invalidChunk)
    }

    @Test("MODEL_CHUNK payload not a multiple of 4 bytes")
    func chunkMisaligned() {
        var frames = chunk(offset: 0, values: 2)
        frames[2].removeLast()
        #expect(Decoder.modelChunk.error(frames) == .misalignedPayloadFrame(index: 0, bytes: 7))
    }

    @Test("MODEL_CHUNK on a topic other than 'model'", arguments: ["", "mode", "models", "receipt/c1/", "MODEL"])
    func chunkTopic(topic: String) {
        var frames = Sample.chunkFrames
        frames[0] = Array(topic.utf8)
        #expect(Decoder.modelChunk.error(frames) == .invalidTopic(topic))
    }

    // MARK: RECEIPT body

    @Test("RECEIPT with a bad topic", arguments: ["", "model", "receipt/", "receipt//", "receipt/c1", "Receipt/c1/", "receipt"])
    func receiptTopic(topic: String) {
        var frames = Codec.encode(Sample.receipt)
        frames[0] = Array(topic.utf8)
        #expect(Decoder.receipt.error(frames)?.kind == .invalidTopic)
    }

    @Test("RECEIPT topic naming an invalid client id",
          arguments: ["receipt/a b/", "receipt/a/b/", "receipt/é/", "receipt/\(String(repeating: "x", count: 65))/"])
    func receiptTopicID(topic: String) {
        var frames = Codec.encode(Sample.receipt)
        frames[0] = Array(topic.utf8)
        #expect(Decoder.receipt.error(frames)?.kind == .invalidClientID)
    }

    @Test("RECEIPT topic that is not UTF-8")
    func receiptTopicBytes() {
        var frames = Codec.encode(Sample.receipt)
        frames[0] = Array("receipt/".utf8) + [0xFF, 0x2F]
        let error = Decoder.receipt.error(frames)
        #expect(error?.kind == .invalidClientID || error?.kind == .invalidTopic)
    }

    @Test("RECEIPT with an unknown decision code", arguments: [UInt8(0), 5, 9, 255])
    func receiptDecision(code: UInt8) {
        var frames = Codec.encode(Sample.receipt)
        frames[1][56] = code
        #expect(Decoder.receipt.error(frames) == .invalidField("decision code \(code)"))
    }

    @Test("RECEIPT with an unknown reason code", arguments: [UInt8(20), 200, 255])
    func receiptReason(code: UInt8) {
        var frames = Codec.encode(Sample.receipt)
        frames[1][57] = code
        #expect(Decoder.receipt.error(frames) == .invalidField("reason code \(code)"))
    }

    @Test("RECEIPT message over 1024 bytes or not UTF-8")
    func receiptMessage() {
        var frames = Codec.encode(Sample.receipt)
        frames[2] = [UInt8](repeating: 0x61, count: 1025)
        #expect(Decoder.receipt.error(frames)?.kind == .invalidField)
        frames[2] = [0x61, 0xFF]
        #expect(Decoder.receipt.error(frames)?.kind == .invalidField)
        frames[2] = [0xE2, 0x82] // truncated 3-byte sequence
        #expect(Decoder.receipt.error(frames)?.kind == .invalidField)
        frames[2] = [UInt8](repeating: 0x61, count: 1024)
        #expect(Decoder.receipt.error(frames) == nil)
    }
}
