import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing

@Suite("Codec round trips")
struct RoundTripTests {
    // MARK: MODEL_CHUNK

    @Test("MODEL_CHUNK header and payload round-trip")
    func modelChunk() throws {
        let frames = Sample.chunkFrames
        #expect(frames[1].count == Codec.modelChunkHeaderSize)
        try withFrames(frames) { views throws(WireError) in
            let (header, payload) = try Codec.decodeModelChunk(views)
            #expect(header == Sample.chunkHeader)
            #expect(floats(payload) == Array(Sample.parameters[4..<8]))
            #expect(payload.baseAddress == views[2].baseAddress) // read in place
        }
    }

    @Test("MODEL_CHUNK accepts chunks that end exactly at the parameter count, and empty chunks",
          arguments: [(UInt64(0), 10), (6, 4), (9, 1), (10, 0), (0, 0)])
    func modelChunkBounds(offset: UInt64, values: Int) throws {
        let h = ModelChunkHeader(runID: 1, version: 2, layoutFingerprint: 3, parameterCount: 10, chunkOffset: offset,
                                 chunkIndex: 0, chunkCount: 1)
        let payload = float32Bytes([Float](repeating: 1, count: values))
        try withFrames([Topic.model, Codec.encode(h), payload]) { views throws(WireError) in
            let decoded = try Codec.decodeModelChunk(views)
            #expect(decoded.header == h)
            #expect(decoded.payload.count == values * 4)
        }
    }

    @Test("MODEL_CHUNK header round-trips extreme values")
    func modelChunkExtremes() throws {
        let h = ModelChunkHeader(runID: .max, version: .max, layoutFingerprint: .max, parameterCount: .max,
                                 chunkOffset: .max - 1, chunkIndex: .max - 1, chunkCount: .max)
        try withFrames([Topic.model, Codec.encode(h), [0, 0, 0, 0]]) { views throws(WireError) in
            #expect(try Codec.decodeModelChunk(views).header == h)
        }
    }

    // MARK: SNAPSHOT_REQUEST

    @Test("SNAPSHOT_REQUEST round-trips, including an anonymous (empty) id and a 64-character id",
          arguments: ["c-9", "", String(repeating: "z", count: 64), "A.b_C-0"])
    func snapshotRequest(id: String) throws {
        let q = SnapshotRequest(requestID: 0xFEDC_BA98_7654_3210, clientID: id)
        let bytes = Codec.encode(q)
        #expect(bytes.count == 17 + id.utf8.count)
        let decoded = try withFrames([bytes]) { views throws(WireError) in try Codec.decodeSnapshotRequest(views[0]) }
        #expect(decoded == q)
    }

    // MARK: SNAPSHOT_REPLY

    @Test("SNAPSHOT_REPLY round-trips header, layout, config and a multi-frame payload")
    func snapshotReply() throws {
        let frames = Sample.replyFrames
        #expect(frames[0].count == Codec.snapshotReplyHeaderSize)
        try withFrames(frames) { views throws(WireError) in
            let view = try Codec.decodeSnapshotReply(views)
            #expect(view.header == Sample.replyHeader())
            #expect(view.layout == Sample.layout)
            #expect(view.config == Sample.config)
            #expect(view.payload.count == 3)
            #expect(view.payload.flatMap { floats($0) } == Sample.parameters)
        }
    }

    @Test("SNAPSHOT_REPLY accepts any split of the payload into multiples of 4 bytes",
          arguments: [[10], [1, 9], [3, 3, 3, 1], [0, 10], [5, 0, 5], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    func snapshotReplySplits(split: [Int]) throws {
        var payload: [[UInt8]] = []
        var start = 0
        for n in split {
            payload.append(float32Bytes(Array(Sample.parameters[start..<(start + n)])))
            start += n
        }
        let frames = [Codec.encode(Sample.replyHeader(frames: UInt32(split.count))), Codec.encodeLayout(Sample.layout),
                      Sample.config.encoded()] + payload
        try withFrames(frames, offset: 1) { views throws(WireError) in
            let view = try Codec.decodeSnapshotReply(views)
            #expect(view.payload.flatMap { floats($0) } == Sample.parameters)
        }
    }

    @Test("the config frame is JSON with the documented snake_case keys, and unknown keys are ignored")
    func configJSON() throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(Sample.config.encoded())) as? [String: Any])
        #expect(Set(object.keys) == ["algorithm", "alpha", "staleness_function", "staleness_a", "staleness_b", "max_staleness",
                                     "training", "chunk_parameters", "max_frame_bytes", "receipt_timeout_s"])
        #expect(object["algorithm"] as? String == "fedasync")
        #expect(object["staleness_function"] as? String == "hinge")
        let training = try #require(object["training"] as? [String: Any])
        #expect(Set(training.keys) == ["learning_rate", "local_epochs", "batch_size", "proximal_mu"])

        let text = """
        {"algorithm":"fedasync","alpha":0.5,"staleness_function":"polynomial","staleness_a":0.5,"staleness_b":0,
         "max_staleness":8,"training":{"learning_rate":0.1,"local_epochs":1,"batch_size":16,"proximal_mu":0,"future_training_key":1},
         "chunk_parameters":262144,"max_frame_bytes":16777216,"receipt_timeout_s":2,"future_key":[1,2,3]}
        """
        let config = try withFrames([Array(text.utf8)]) { views throws(WireError) in try SnapshotConfig.decode(views[0]) }
        #expect(config == SnapshotConfig(rule: FedAsync(alpha: 0.5, staleness: .polynomial(a: 0.5), maxStaleness: 8),
                                         training: TrainingConfig(), chunkParameters: 262_144, maxFrameBytes: 16_777_216,
                                         receiptTimeoutSeconds: 2))
    }

    @Test("the optional publish_interval_s and heartbeat_s keys round-trip, and are nil when absent")
    func configOptionalKeys() throws {
        var config = Sample.config
        #expect(config.publishIntervalSeconds == nil && config.heartbeatSeconds == nil)
        config.publishIntervalSeconds = 0.25
        config.heartbeatSeconds = 0
        let bytes = config.encoded()
        let text = try #require(String(validating: bytes, as: UTF8.self))
        #expect(text.contains("\"publish_interval_s\":0.25"))
        #expect(text.contains("\"heartbeat_s\":0"))
        let decoded = try withFrames([bytes]) { v throws(WireError) in try SnapshotConfig.decode(v[0]) }
        #expect(decoded == config)
        let withoutKeys = try withFrames([Sample.config.encoded()]) { v throws(WireError) in try SnapshotConfig.decode(v[0]) }
        #expect(withoutKeys.publishIntervalSeconds == nil && withoutKeys.heartbeatSeconds == nil)
    }

    @Test("config encodes each staleness function by name")
    func configStaleness() {
        let t = TrainingConfig()
        let c = SnapshotConfig(rule: FedAsync(alpha: 1, staleness: .constant, maxStaleness: 0), training: t,
                               chunkParameters: 1, maxFrameBytes: 1, receiptTimeoutSeconds: 1)
        #expect(c.stalenessFunction == "constant" && c.stalenessA == 0 && c.stalenessB == 0)
        let p = SnapshotConfig(rule: FedAsync(alpha: 1, staleness: .polynomial(a: 0.7), maxStaleness: 0), training: t,
                               chunkParameters: 1, maxFrameBytes: 1, receiptTimeoutSeconds: 1)
        #expect(p.stalenessFunction == "polynomial" && p.stalenessA == 0.7 && p.stalenessB == 0)
        #expect(Sample.config.stalenessFunction == "hinge" && Sample.config.stalenessA == 2 && Sample.config.stalenessB == 3)
    }

    // MARK: Layout

    @Test("layout frames round-trip")
    func layout() throws {
        let layouts = [
            Sample.layout,
            try ParameterLayout([TensorSpec(name: "x", shape: [])]),
            try ParameterLayout([TensorSpec(name: "W", shape: [64, 10]), TensorSpec(name: "b", shape: [10])]),
            try ParameterLayout([TensorSpec(name: String(repeating: "n", count: 255), shape: [1, 2, 3, 4, 5, 6, 7, 8])]),
            try ParameterLayout([TensorSpec(name: "émoji🐝", shape: [0, 3])]),
        ]
        for layout in layouts {
            let decoded = try withFrames([Codec.encodeLayout(layout)]) { v throws(WireError) in try Codec.decodeLayout(v[0]) }
            #expect(decoded == layout)
            #expect(decoded.fingerprint == layout.fingerprint)
        }
    }

    @Test("a layout with the maximum of 4096 tensors round-trips")
    func maxTensors() throws {
        let layout = try ParameterLayout((0..<Codec.maxTensors).map { TensorSpec(name: "t\($0)", shape: [2]) })
        let decoded = try withFrames([Codec.encodeLayout(layout)]) { v throws(WireError) in try Codec.decodeLayout(v[0]) }
        #expect(decoded.parameterCount == 8192)
    }

    // MARK: CLIENT_UPDATE

    @Test("CLIENT_UPDATE round-trips header, client id, layout frame and payload frames")
    func clientUpdate() throws {
        let frames = Sample.updateFrames
        #expect(frames[0].count == Codec.updateHeaderFixedSize + Sample.updateHeader.clientID.utf8.count)
        try withFrames(frames, offset: 3) { views throws(WireError) in
            let view = try Codec.decodeUpdate(views)
            #expect(view.header == Sample.updateHeader)
            #expect(Array(view.layoutFrame) == Codec.encodeLayout(Sample.layout))
            #expect(try Codec.decodeLayout(view.layoutFrame) == Sample.layout)
            #expect(view.payload.count == 2)
            #expect(view.payloadBytes == 40)
            #expect(view.payload.flatMap { floats($0) } == Sample.parameters)
            #expect(try Codec.decodeUpdateHeader(views[0]) == Sample.updateHeader)
            #expect(try Codec.messageType(ofHeader: views[0]) == .clientUpdate)
        }
    }

    @Test("CLIENT_UPDATE header round-trips client ids of 1 and 64 characters and extreme numbers",
          arguments: ["a", String(repeating: "9", count: 64), "Z.z_0-"])
    func clientUpdateIDs(id: String) throws {
        let h = UpdateHeader(runID: .max, baseVersion: 0, seq: .max, sampleCount: 0, clientID: id)
        let decoded = try withFrames([Codec.encode(h)]) { v throws(WireError) in try Codec.decodeUpdateHeader(v[0]) }
        #expect(decoded == h)
    }

    @Test("decodeUpdate leaves payload size and layout checks to the validator")
    func updateDefersChecks() throws {
        // A payload of the wrong total size and an undecodable layout frame still decode.
        try withFrames([Codec.encode(Sample.updateHeader), [1, 2, 3], [0, 0, 0, 0], []]) { views throws(WireError) in
            let view = try Codec.decodeUpdate(views)
            #expect(view.payloadBytes == 4)
            #expect(view.layoutFrame.count == 3)
        }
    }

    // MARK: RECEIPT

    static let receiptCases: [Receipt] = {
        var out: [Receipt] = []
        for decision in [Decision.merged, .rejected, .duplicate] {
            for reason in RejectReason.allCases {
                out.append(Receipt(clientID: "c-\(reason.rawValue)", runID: UInt64(reason.rawValue) << 40, seq: 1000 + UInt64(reason.rawValue),
                                   baseVersion: 3, modelVersion: 9, staleness: reason.rawValue % 2 == 0 ? nil : UInt64(reason.rawValue),
                                   mixingWeight: decision == .merged ? 0.125 : 0, decision: decision, reason: reason,
                                   message: "\(decision) \(reason)"))
            }
        }
        return out
    }()

    @Test("RECEIPT round-trips every decision and reason, with staleness nil and set", arguments: receiptCases)
    func receipt(rc: Receipt) throws {
        let frames = Codec.encode(rc)
        #expect(frames.count == 3)
        #expect(frames[0] == Array("receipt/\(rc.clientID)/".utf8))
        #expect(frames[1].count == Codec.receiptHeaderSize)
        let decoded = try withFrames(frames) { v throws(WireError) in try Codec.decodeReceipt(v) }
        #expect(decoded == rc)
    }

    @Test("RECEIPT round-trips extreme numbers, an empty message and a 1024-byte message")
    func receiptExtremes() throws {
        for message in ["", String(repeating: "m", count: 1024), String(repeating: "é", count: 512), "🐝 ok"] {
            let rc = Receipt(clientID: String(repeating: "x", count: 64), runID: .max, seq: .max, baseVersion: .max,
                             modelVersion: .max, staleness: .max - 1, mixingWeight: -0.0, decision: .duplicate,
                             reason: .unavailable, message: message)
            let decoded = try withFrames(Codec.encode(rc)) { v throws(WireError) in try Codec.decodeReceipt(v) }
            #expect(decoded == rc)
            #expect(decoded.mixingWeight.sign == .minus)
        }
    }

    @Test("staleness 2^64-1 is the 'unknown' sentinel and decodes as nil")
    func stalenessSentinel() throws {
        var rc = Sample.receipt
        rc.staleness = nil
        #expect(Codec.encode(rc)[1][40..<48].allSatisfy { $0 == 0xFF })
        rc.staleness = .max
        let decoded = try withFrames(Codec.encode(rc)) { v throws(WireError) in try Codec.decodeReceipt(v) }
        #expect(decoded.staleness == nil)
    }

    /// A long message, described briefly in test output.
    struct LongMessage: Sendable, CustomTestStringConvertible {
        var text: String
        var expectedBytes: Int
        init(_ text: String, _ expectedBytes: Int = 1024) { self.text = text; self.expectedBytes = expectedBytes }
        var testDescription: String {
            "\(text.utf8.count) bytes ending in \(String(text.suffix(3)).debugDescription)"
        }
    }

    static let longMessages: [LongMessage] = [
        LongMessage(String(repeating: "a", count: 1025)),
        LongMessage(String(repeating: "a", count: 5000)),
        LongMessage(String(repeating: "a", count: 1023) + "é", 1023),   // cut inside a 2-byte sequence
        LongMessage(String(repeating: "a", count: 1022) + "€x", 1022),  // cut inside a 3-byte sequence
        LongMessage(String(repeating: "a", count: 1021) + "🐝🐝", 1021), // cut inside a 4-byte sequence
        LongMessage(String(repeating: "a", count: 1022) + "éb"),        // "é" ends exactly at byte 1024
        LongMessage(String(repeating: "a", count: 1021) + "€b"),
        LongMessage(String(repeating: "a", count: 1020) + "🐝b"),
        LongMessage(String(repeating: "é", count: 600)),
        LongMessage(String(repeating: "🐝", count: 300)),
    ]

    @Test("a message over 1024 bytes is truncated to at most 1024 bytes of valid UTF-8", arguments: longMessages)
    func receiptTruncation(message: LongMessage) throws {
        var rc = Sample.receipt
        rc.message = message.text
        let text = Codec.encode(rc)[2]
        #expect(text.count <= Codec.maxReceiptMessageBytes)
        let decodedText = try #require(String(validating: text, as: UTF8.self))
        #expect(message.text.hasPrefix(decodedText))
        let decoded = try withFrames(Codec.encode(rc)) { v throws(WireError) in try Codec.decodeReceipt(v) }
        #expect(decoded.message == decodedText)
    }

    @Test("truncation keeps the longest prefix that ends on a character boundary", arguments: longMessages)
    func receiptTruncationLongest(message: LongMessage) {
        var rc = Sample.receipt
        rc.message = message.text
        let text = Codec.encode(rc)[2]
        // A cut right after a complete multi-byte character keeps that character.
        #expect(text.count == message.expectedBytes)
    }
}
