import ApiaryCore
import ApiaryProtocol
import Testing

/// Hand-written bytes from docs/PROTOCOL.md: these pin the v1 wire format.
@Suite("Golden wire bytes")
struct GoldenBytesTests {
    @Test("CLIENT_UPDATE header bytes")
    func clientUpdateHeader() throws {
        let h = UpdateHeader(runID: 0x0102_0304_0506_0708, baseVersion: 0x10, seq: 0x2A, sampleCount: 0x100,
                             codec: .denseFloat32, clientID: "c1")
        let expected: [UInt8] = [
            0x41, 0x50, 0x52, 0x59, 0x01, 0x04, 0x00, 0x00,         // "APRY", v1, type 4, reserved
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,         // run id
            0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // base version
            0x2A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // seq
            0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // sample count
            0x00,                                                   // codec dense float32
            0x02,                                                   // id length
            0x00, 0x00,                                             // reserved
            0x63, 0x31,                                             // "c1"
        ]
        #expect(Codec.encode(h) == expected)
        let decoded = try withFrames([expected]) { v throws(WireError) in try Codec.decodeUpdateHeader(v[0]) }
        #expect(decoded == h)
    }

    @Test("CLIENT_UPDATE header with a client epoch: flag bit 2, u64 epoch after the client id")
    func clientUpdateHeaderWithEpoch() throws {
        let h = UpdateHeader(runID: 0x0102_0304_0506_0708, baseVersion: 0x10, seq: 0x2A, sampleCount: 0x100,
                             codec: .denseFloat32, clientID: "c1", carriesMetrics: true, epoch: 0x1122_3344_5566_7788)
        let expected: [UInt8] = [
            0x41, 0x50, 0x52, 0x59, 0x01, 0x04, 0x00, 0x00,         // "APRY", v1, type 4, reserved
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,         // run id
            0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // base version
            0x2A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // seq
            0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // sample count
            0x00,                                                   // codec dense float32
            0x02,                                                   // id length
            0x05, 0x00,                                             // flags: bit 0 metrics, bit 2 epoch
            0x63, 0x31,                                             // "c1"
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,         // client epoch
        ]
        #expect(Codec.encode(h) == expected)
        let decoded = try withFrames([expected]) { v throws(WireError) in try Codec.decodeUpdateHeader(v[0]) }
        #expect(decoded == h)
        // The sender of a header that does not decode is still found at offset 44.
        let sender = expected.withUnsafeBytes { Codec.peekUpdateSender($0) }
        #expect(sender?.clientID == "c1" && sender?.seq == 0x2A)
        // Flag bit 2 without the 8 bytes, or with epoch 0, is malformed.
        for bad in [Array(expected.dropLast(8)), Array(expected.dropLast(8)) + [UInt8](repeating: 0, count: 8)] {
            let r = withFrames([bad]) { v in Result { () throws(WireError) in try Codec.decodeUpdateHeader(v[0]) } }
            guard case .failure(let e) = r else { Issue.record("decoded \(bad)"); continue }
            #expect(e.reason == .malformed)
        }
    }

    @Test("CLIENT_UPDATE header privatized locally: flag bit 3; bit 4 is still reserved")
    func clientUpdateHeaderPrivatized() throws {
        let h = UpdateHeader(runID: 1, baseVersion: 2, seq: 3, sampleCount: 0, clientID: "c1", isDelta: true, isPrivatized: true)
        let bytes = Codec.encode(h)
        #expect(Array(bytes[42...43]) == [0x0A, 0x00])  // bit 1 delta, bit 3 privatized
        let decoded = try withFrames([bytes]) { v throws(WireError) in try Codec.decodeUpdateHeader(v[0]) }
        #expect(decoded == h && decoded.isPrivatized)
        var bit4 = bytes
        bit4[42] |= 0x10
        let r = withFrames([bit4]) { v in Result { () throws(WireError) in try Codec.decodeUpdateHeader(v[0]) } }
        guard case .failure(let e) = r else { Issue.record("decoded flag bit 4"); return }
        #expect(e == .reservedBitsSet)
    }

    @Test("RECEIPT frames: topic, 60-byte header, message")
    func receipt() throws {
        let rc = Receipt(clientID: "c1", runID: 7, seq: 3, baseVersion: 5, modelVersion: 9, staleness: 4,
                         mixingWeight: 0.5, decision: .merged, reason: .none, message: "ok")
        let header: [UInt8] = [
            0x41, 0x50, 0x52, 0x59, 0x01, 0x05, 0x00, 0x00,         // "APRY", v1, type 5, reserved
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // run id
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // seq
            0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // base version
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // model version
            0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,         // staleness
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0x3F,         // f64 0.5
            0x01,                                                   // decision merged
            0x00,                                                   // reason none
            0x00, 0x00,                                             // reserved
        ]
        let frames = Codec.encode(rc)
        #expect(frames == [Array("receipt/c1/".utf8), header, [0x6F, 0x6B]])
        let decoded = try withFrames(frames) { v throws(WireError) in try Codec.decodeReceipt(v) }
        #expect(decoded == rc)
    }

    @Test("RECEIPT header for a rejection with unknown staleness")
    func receiptRejected() {
        let rc = Receipt(clientID: "c1", runID: 1, seq: 2, baseVersion: 3, modelVersion: 4, staleness: nil,
                         mixingWeight: 0, decision: .rejected, reason: .tooStale)
        let expected = LE().common(5).u64(1).u64(2).u64(3).u64(4).u64(.max).u64(0).u8(2).u8(6).u16(0)
        #expect(Codec.encode(rc)[1] == expected.bytes)
        #expect(Codec.encode(rc)[2] == [])
    }

    @Test("SNAPSHOT_REQUEST header bytes")
    func snapshotRequest() {
        let expected: [UInt8] = [0x41, 0x50, 0x52, 0x59, 0x01, 0x02, 0x00, 0x00,
                                 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                 0x03, 0x63, 0x2D, 0x39]
        #expect(Codec.encode(Sample.request) == expected)
    }

    @Test("MODEL_CHUNK header bytes")
    func modelChunk() {
        let h = ModelChunkHeader(runID: 1, version: 2, layoutFingerprint: 0xCBF2_9CE4_8422_2325, parameterCount: 650,
                                 chunkOffset: 512, chunkIndex: 1, chunkCount: 2)
        let expected = LE().common(1).u64(1).u64(2).raw([0x25, 0x23, 0x22, 0x84, 0xE4, 0x9C, 0xF2, 0xCB])
            .raw([0x8A, 0x02, 0, 0, 0, 0, 0, 0]).raw([0x00, 0x02, 0, 0, 0, 0, 0, 0]).raw([1, 0, 0, 0]).raw([2, 0, 0, 0])
        #expect(expected.bytes.count == 56)
        #expect(Codec.encode(h) == expected.bytes)
    }

    @Test("SNAPSHOT_REPLY header bytes")
    func snapshotReply() {
        let h = SnapshotReplyHeader(requestID: 9, runID: 8, version: 7, layoutFingerprint: 6, parameterCount: 5,
                                    serverTimeMilliseconds: -2, payloadFrameCount: 3)
        let expected = LE().common(3).u64(9).u64(8).u64(7).u64(6).u64(5)
            .raw([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).u32(3).u32(0)
        #expect(expected.bytes.count == 64)
        #expect(Codec.encode(h) == expected.bytes)
    }

    @Test("layout frame bytes")
    func layout() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [2, 3]), TensorSpec(name: "b", shape: [])])
        let expected: [UInt8] = [
            0x02, 0x00, 0x00, 0x00,                                 // tensor count
            0x01, 0x57, 0x01, 0x02,                                 // "W", float32, rank 2
            0x02, 0, 0, 0, 0, 0, 0, 0,
            0x03, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x62, 0x01, 0x00,                                 // "b", float32, rank 0
        ]
        #expect(Codec.encodeLayout(layout) == expected)
    }

    @Test("the digits model layout frame and fingerprint from docs/PROTOCOL.md §2.2")
    func digitsLayout() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [64, 10]), TensorSpec(name: "b", shape: [10])])
        let expected: [UInt8] = [
            0x02, 0x00, 0x00, 0x00, 0x01, 0x57, 0x01, 0x02, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x62, 0x01, 0x01, 0x0a, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ]
        #expect(Codec.encodeLayout(layout) == expected)
        #expect(layout.fingerprint == 0xadd2_67fb_e249_fe49)
        let decoded = try withFrames([expected]) { v throws(WireError) in try Codec.decodeLayout(v[0]) }
        #expect(decoded == layout)
    }

    @Test("payload values are float32 little-endian")
    func payload() throws {
        // 1.0 = 0x3F800000, -2.5 = 0xC0200000
        let h = ModelChunkHeader(runID: 1, version: 1, layoutFingerprint: 1, parameterCount: 2, chunkOffset: 0,
                                 chunkIndex: 0, chunkCount: 1)
        try withFrames([Topic.model, Codec.encode(h), [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0]]) { v throws(WireError) in
            #expect(floats(try Codec.decodeModelChunk(v).payload) == [1.0, -2.5])
        }
    }

    @Test("constants and topics match the documentation")
    func constants() {
        #expect(headerMagic == Array("APRY".utf8))
        #expect(protocolVersion == 1)
        #expect(Topic.model == Array("model".utf8))
        #expect(Topic.receipt(clientID: "c1") == Array("receipt/c1/".utf8))
        #expect(Topic.receiptPrefix == Array("receipt/".utf8))
        #expect([MessageType.modelChunk, .snapshotRequest, .snapshotReply, .clientUpdate, .receipt].map(\.rawValue) == [1, 2, 3, 4, 5])
        #expect(Decision.merged.rawValue == 1 && Decision.rejected.rawValue == 2 && Decision.duplicate.rawValue == 3)
        #expect(RejectReason.allCases.map(\.rawValue) == Array(0...19))
        #expect(RejectReason.allCases.map(\.name) == [
            "none", "malformed", "unsupported_protocol_version", "unknown_message_type", "layout_mismatch", "non_finite",
            "too_stale", "unknown_base", "duplicate", "oversized", "unknown_client", "norm_too_large", "identity_mismatch",
            "unsupported_codec", "unavailable", "wrong_update_kind", "bad_encoding", "seq_out_of_range", "not_privatized", "anomalous",
        ])
        #expect(Codec.commonHeaderSize == 8 && Codec.modelChunkHeaderSize == 56 && Codec.snapshotReplyHeaderSize == 64)
        #expect(Codec.updateHeaderFixedSize == 44 && Codec.receiptHeaderSize == 60 && Codec.maxReceiptMessageBytes == 1024)
    }

    @Test("client id validation follows 1 to 64 characters of A-Z a-z 0-9 . _ -")
    func clientIDs() {
        #expect(ClientID.isValid("a"))
        #expect(ClientID.isValid("AZaz09._-"))
        #expect(ClientID.isValid(String(repeating: "x", count: 64)))
        for bad in ["", String(repeating: "x", count: 65), "a/b", "a b", "é", "a\u{0}", "a:b", "a+b", "a\n", "🐝"] {
            #expect(!ClientID.isValid(bad), "\(bad.debugDescription)")
        }
    }
}
