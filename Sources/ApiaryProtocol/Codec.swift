import ApiaryCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Encoders and decoders for every v1 message. Pure: bytes in, values out, no sockets.
/// Decoders take the frames of one multipart message as raw buffers (read in place) and
/// throw a specific `WireError` for anything malformed; they never trap.
public enum Codec {
    /// Size of the common header prefix: magic (4), version (1), type (1), reserved (2).
    public static let commonHeaderSize = 8
    /// Size of the MODEL_CHUNK header frame.
    public static let modelChunkHeaderSize = 56
    /// Size of the SNAPSHOT_REPLY header frame.
    public static let snapshotReplyHeaderSize = 64
    /// Size of the fixed part of the CLIENT_UPDATE header frame (the client id follows).
    public static let updateHeaderFixedSize = 44
    /// Size of the RECEIPT header frame.
    public static let receiptHeaderSize = 60
    /// Longest receipt message text.
    public static let maxReceiptMessageBytes = 1024
    /// Most tensors a layout frame may describe.
    public static let maxTensors = 4096

    // MARK: Common header

    static func common(_ type: MessageType, capacity: Int) -> ByteWriter {
        var w = ByteWriter(capacity: capacity)
        w.raw(headerMagic)
        w.u8(protocolVersion)
        w.u8(type.rawValue)
        w.u16(0)
        return w
    }

    static func readCommon(_ r: inout ByteReader) throws(WireError) -> MessageType {
        try r.need(commonHeaderSize)
        let magic = try r.bytes(4)
        guard magic.elementsEqual(headerMagic) else { throw .badMagic }
        let version = try r.u8()
        guard version == protocolVersion else { throw .unsupportedProtocolVersion(version) }
        let t = try r.u8()
        guard let type = MessageType(rawValue: t) else { throw .unknownMessageType(t) }
        guard try r.u16() == 0 else { throw .reservedBitsSet }
        return type
    }

    /// Reads the message type of a header frame (checks magic and protocol version).
    public static func messageType(ofHeader frame: UnsafeRawBufferPointer) throws(WireError) -> MessageType {
        var r = ByteReader(frame, frame: "header")
        return try readCommon(&r)
    }

    static func expect(_ type: MessageType, _ r: inout ByteReader) throws(WireError) {
        let got = try readCommon(&r)
        guard got == type else { throw .unexpectedMessageType(expected: type, got: got) }
    }

    // MARK: Client id (u8 length + ASCII)

    static func readClientID(_ r: inout ByteReader, length: Int, allowEmpty: Bool) throws(WireError) -> String {
        let b = try r.bytes(length)
        let id = String(decoding: b, as: UTF8.self)
        if allowEmpty && length == 0 { return "" }
        guard ClientID.isValid(id) else { throw .invalidClientID(id) }
        return id
    }

    // MARK: Layout frame

    /// Encodes a layout: u32 tensor count, then per tensor u8 name length, name (UTF-8),
    /// u8 dtype, u8 rank, rank x u64 dimensions.
    public static func encodeLayout(_ layout: ParameterLayout) -> [UInt8] {
        var w = ByteWriter(capacity: 16 + layout.tensors.count * 32)
        w.u32(UInt32(layout.tensors.count))
        for t in layout.tensors {
            let name = Array(t.name.utf8)
            w.u8(UInt8(name.count))
            w.raw(name)
            w.u8(t.dtype.rawValue)
            w.u8(UInt8(t.shape.count))
            for d in t.shape { w.u64(UInt64(d)) }
        }
        return w.bytes
    }

    /// Decodes and checks a layout frame.
    public static func decodeLayout(_ frame: UnsafeRawBufferPointer) throws(WireError) -> ParameterLayout {
        var r = ByteReader(frame, frame: "layout")
        let n = try r.u32()
        guard n >= 1, n <= maxTensors else { throw .invalidLayout("tensor count \(n) is not in 1...\(maxTensors)") }
        var tensors: [TensorSpec] = []
        tensors.reserveCapacity(Int(n))
        for _ in 0..<n {
            let len = Int(try r.u8())
            let nameBytes = try r.bytes(len)
            guard let name = String(validating: nameBytes, as: UTF8.self) else { throw .invalidLayout("tensor name is not UTF-8") }
            let d = try r.u8()
            guard let dtype = DType(rawValue: d) else { throw .unsupportedDType(d) }
            let rank = Int(try r.u8())
            guard rank <= 8 else { throw .invalidLayout("tensor '\(name)' has rank \(rank) (at most 8)") }
            var shape: [Int] = []
            for _ in 0..<rank {
                let dim = try r.u64()
                guard dim <= UInt64(1) << 34 else { throw .invalidLayout("tensor '\(name)' has a dimension of \(dim)") }
                shape.append(Int(dim))
            }
            tensors.append(TensorSpec(name: name, shape: shape, dtype: dtype))
        }
        try r.end()
        do {
            return try ParameterLayout(tensors)
        } catch {
            throw .invalidLayout(error.description)
        }
    }

    // MARK: Payload frames

    /// Checks that payload frames are each a multiple of 4 bytes and add up to
    /// `parameterCount` float32 values.
    public static func checkPayload(_ frames: ArraySlice<UnsafeRawBufferPointer>, parameterCount: Int) throws(WireError) {
        var total = 0
        for (i, f) in frames.enumerated() {
            guard f.count % 4 == 0 else { throw .misalignedPayloadFrame(index: i, bytes: f.count) }
            total += f.count
        }
        guard total == parameterCount * 4 else { throw .payloadSize(expectedBytes: parameterCount * 4, gotBytes: total) }
    }

    // MARK: MODEL_CHUNK  [topic "model"] [header] [payload]

    public static func encode(_ h: ModelChunkHeader) -> [UInt8] {
        var w = common(.modelChunk, capacity: modelChunkHeaderSize)
        w.u64(h.runID)
        w.u64(h.version)
        w.u64(h.layoutFingerprint)
        w.u64(h.parameterCount)
        w.u64(h.chunkOffset)
        w.u32(h.chunkIndex)
        w.u32(h.chunkCount)
        return w.bytes
    }

    /// Decodes a MODEL_CHUNK message (topic, header, payload) and checks the chunk's bounds.
    public static func decodeModelChunk(_ frames: [UnsafeRawBufferPointer]) throws(WireError) -> (header: ModelChunkHeader, payload: UnsafeRawBufferPointer) {
        guard frames.count == 3 else { throw .wrongFrameCount(message: "MODEL_CHUNK", expected: "3", got: frames.count) }
        guard frames[0].elementsEqual(Topic.model) else { throw .invalidTopic(String(decoding: frames[0], as: UTF8.self)) }
        var r = ByteReader(frames[1], frame: "MODEL_CHUNK header")
        try expect(.modelChunk, &r)
        let h = ModelChunkHeader(runID: try r.u64(), version: try r.u64(), layoutFingerprint: try r.u64(),
                                 parameterCount: try r.u64(), chunkOffset: try r.u64(),
                                 chunkIndex: try r.u32(), chunkCount: try r.u32())
        try r.end()
        let payload = frames[2]
        guard payload.count % 4 == 0 else { throw .misalignedPayloadFrame(index: 0, bytes: payload.count) }
        guard h.chunkCount >= 1, h.chunkIndex < h.chunkCount else { throw .invalidChunk("chunk \(h.chunkIndex) of \(h.chunkCount)") }
        let (end, overflow) = h.chunkOffset.addingReportingOverflow(UInt64(payload.count / 4))
        guard !overflow, end <= h.parameterCount else { throw .invalidChunk("chunk ends at \(end), past \(h.parameterCount) parameters") }
        return (h, payload)
    }

    // MARK: SNAPSHOT_REQUEST  [header]

    public static func encode(_ q: SnapshotRequest) -> [UInt8] {
        var w = common(.snapshotRequest, capacity: 24 + q.clientID.utf8.count)
        w.u64(q.requestID)
        let id = Array(q.clientID.utf8.prefix(64))
        w.u8(UInt8(id.count))
        w.raw(id)
        return w.bytes
    }

    public static func decodeSnapshotRequest(_ frame: UnsafeRawBufferPointer) throws(WireError) -> SnapshotRequest {
        var r = ByteReader(frame, frame: "SNAPSHOT_REQUEST header")
        try expect(.snapshotRequest, &r)
        let requestID = try r.u64()
        let len = Int(try r.u8())
        let id = try readClientID(&r, length: len, allowEmpty: true)
        try r.end()
        return SnapshotRequest(requestID: requestID, clientID: id)
    }

    // MARK: SNAPSHOT_REPLY  [header] [layout] [config JSON] [payload]...

    public static func encode(_ h: SnapshotReplyHeader) -> [UInt8] {
        var w = common(.snapshotReply, capacity: snapshotReplyHeaderSize)
        w.u64(h.requestID)
        w.u64(h.runID)
        w.u64(h.version)
        w.u64(h.layoutFingerprint)
        w.u64(h.parameterCount)
        w.i64(h.serverTimeMilliseconds)
        w.u32(h.payloadFrameCount)
        w.u32(0)
        return w.bytes
    }

    /// A decoded SNAPSHOT_REPLY; `payload` points into the received frames.
    public struct SnapshotReplyView {
        public var header: SnapshotReplyHeader
        public var layout: ParameterLayout
        public var config: SnapshotConfig
        /// The range of the flat vector the payload holds: the replying shard's, or all of it.
        public var range: Range<Int>
        public var payload: ArraySlice<UnsafeRawBufferPointer>
    }

    public static func decodeSnapshotReply(_ frames: [UnsafeRawBufferPointer]) throws(WireError) -> SnapshotReplyView {
        guard frames.count >= 4 else { throw .wrongFrameCount(message: "SNAPSHOT_REPLY", expected: "at least 4", got: frames.count) }
        var r = ByteReader(frames[0], frame: "SNAPSHOT_REPLY header")
        try expect(.snapshotReply, &r)
        let h = SnapshotReplyHeader(requestID: try r.u64(), runID: try r.u64(), version: try r.u64(),
                                    layoutFingerprint: try r.u64(), parameterCount: try r.u64(),
                                    serverTimeMilliseconds: try r.i64(), payloadFrameCount: try r.u32())
        guard try r.u32() == 0 else { throw .reservedBitsSet }
        try r.end()
        guard Int(h.payloadFrameCount) == frames.count - 3 else {
            throw .wrongFrameCount(message: "SNAPSHOT_REPLY", expected: "\(3 + Int(h.payloadFrameCount))", got: frames.count)
        }
        let layout = try decodeLayout(frames[1])
        guard layout.fingerprint == h.layoutFingerprint else { throw .invalidLayout("fingerprint does not match the header") }
        guard UInt64(layout.parameterCount) == h.parameterCount else { throw .invalidLayout("parameter count does not match the header") }
        let config = try SnapshotConfig.decode(frames[2])
        let range = try config.servedRange(parameterCount: layout.parameterCount)
        let payload = frames[3...]
        try checkPayload(payload, parameterCount: range.count)
        return SnapshotReplyView(header: h, layout: layout, config: config, range: range, payload: payload)
    }

    // MARK: CLIENT_UPDATE  [header] [layout] [payload]...

    public static func encode(_ h: UpdateHeader) -> [UInt8] {
        let id = Array(h.clientID.utf8)
        var w = common(.clientUpdate, capacity: updateHeaderFixedSize + id.count + 8)
        w.u64(h.runID)
        w.u64(h.baseVersion)
        w.u64(h.seq)
        w.u64(h.sampleCount)
        w.u8(h.codec.rawValue)
        w.u8(UInt8(truncatingIfNeeded: id.count))
        w.u16((h.carriesMetrics ? 1 : 0) | (h.isDelta ? 2 : 0) | (h.epoch != 0 ? 4 : 0) | (h.isPrivatized ? 8 : 0))
        w.raw(id)
        if h.epoch != 0 { w.u64(h.epoch) }
        return w.bytes
    }

    /// The metrics frame: a JSON object of name to number, keys sorted.
    public static func encodeMetrics(_ metrics: [String: Double]) -> [UInt8] {
        var out = Array("{".utf8)
        for (i, (k, v)) in metrics.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.append(0x2C) }
            out += Array("\"\(k)\":".utf8)  // names are plain ASCII: no escaping needed
            out += Array(jsonNumber(v).utf8)
        }
        out.append(0x7D)
        return out
    }

    static func jsonNumber(_ v: Double) -> String {
        guard v.isFinite else { return "null" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    /// Decodes and checks a metrics frame.
    public static func decodeMetrics(_ frame: UnsafeRawBufferPointer, what: String = "metrics") throws(WireError) -> [String: Double] {
        guard frame.count <= UpdateMetrics.maxFrameBytes else {
            throw .invalidField("\(what) frame of \(frame.count) bytes (at most \(UpdateMetrics.maxFrameBytes))")
        }
        let metrics: [String: Double]
        do {
            // A JSON bool or string where a number belongs fails to decode as Double.
            metrics = try JSONDecoder().decode([String: Double].self, from: Data(frame))
        } catch {
            throw .invalidField("\(what) frame is not a JSON object of names to numbers")
        }
        if let e = UpdateMetrics.validationError(metrics) { throw .invalidField("\(what): \(e)") }
        return metrics
    }

    /// A decoded CLIENT_UPDATE; `layoutFrame` and `payload` point into the received frames.
    public struct UpdateView {
        public var header: UpdateHeader
        /// The metrics frame's contents when the header flags one (else empty).
        public var metrics: [String: Double] = [:]
        /// The raw layout frame: compare it byte-for-byte with `encodeLayout(model layout)`
        /// first; decode it (`decodeLayout`) only to explain a mismatch.
        public var layoutFrame: UnsafeRawBufferPointer
        public var payload: ArraySlice<UnsafeRawBufferPointer>
        /// Total payload bytes.
        public var payloadBytes: Int
        /// What the payload holds under its codec (values, or top-k entries and extent).
        public var shape: PayloadShape
    }

    /// Decodes a CLIENT_UPDATE's header and frames. The payload is checked for frame
    /// alignment only; its size and the layout are checked against the model by the
    /// validator, which knows the model.
    public static func decodeUpdate(_ frames: [UnsafeRawBufferPointer]) throws(WireError) -> UpdateView {
        guard frames.count >= 3 else { throw .wrongFrameCount(message: "CLIENT_UPDATE", expected: "at least 3", got: frames.count) }
        let header = try decodeUpdateHeader(frames[0])
        var metrics: [String: Double] = [:]
        var first = 2
        if header.carriesMetrics {
            guard frames.count >= 4 else { throw .wrongFrameCount(message: "CLIENT_UPDATE with metrics", expected: "at least 4", got: frames.count) }
            metrics = try decodeMetrics(frames[2])
            first = 3
        }
        let payload = frames[first...]
        let shape = try UpdateCodec.check(payload, codec: header.codec)
        if header.codec.isSparse, !header.isDelta {
            throw .badEncoding("top-k carries a delta (header flag bit 1), not a full model")
        }
        let total = payload.reduce(0) { $0 + $1.count }
        return UpdateView(header: header, metrics: metrics, layoutFrame: frames[1], payload: payload, payloadBytes: total, shape: shape)
    }

    /// The sender of a CLIENT_UPDATE whose header is otherwise invalid (wrong version,
    /// codec, reserved bytes, trailing bytes), so that the rejection can still be receipted.
    /// Needs the magic and a well-formed client id at its v1 position; nil otherwise. Reads
    /// EVALUATION_REPORT headers too (same layout).
    public static func peekUpdateSender(_ frame: UnsafeRawBufferPointer) -> (clientID: String, seq: UInt64, baseVersion: UInt64)? {
        guard frame.count >= updateHeaderFixedSize + 1, frame.prefix(4).elementsEqual(headerMagic),
              frame[5] == MessageType.clientUpdate.rawValue || frame[5] == MessageType.evaluationReport.rawValue else { return nil }
        let length = Int(frame[41])
        guard length >= 1, updateHeaderFixedSize + length <= frame.count else { return nil }
        let id = String(decoding: UnsafeRawBufferPointer(rebasing: frame[updateHeaderFixedSize..<(updateHeaderFixedSize + length)]), as: UTF8.self)
        guard ClientID.isValid(id) else { return nil }
        let base = UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let seq = UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        return (id, seq, base)
    }

    public static func decodeUpdateHeader(_ frame: UnsafeRawBufferPointer) throws(WireError) -> UpdateHeader {
        var r = ByteReader(frame, frame: "CLIENT_UPDATE header")
        try expect(.clientUpdate, &r)
        let runID = try r.u64()
        let base = try r.u64()
        let seq = try r.u64()
        let samples = try r.u64()
        let c = try r.u8()
        let idLength = Int(try r.u8())
        let flags = try r.u16()
        guard flags & ~15 == 0 else { throw .reservedBitsSet }
        let id = try readClientID(&r, length: idLength, allowEmpty: false)
        let epoch = try readEpoch(&r, flagged: flags & 4 != 0)
        try r.end()
        guard let codec = PayloadCodec(rawValue: c) else { throw .unsupportedCodec(c) }
        return UpdateHeader(runID: runID, baseVersion: base, seq: seq, sampleCount: samples, codec: codec, clientID: id,
                            carriesMetrics: flags & 1 != 0, isDelta: flags & 2 != 0, epoch: epoch,
                            isPrivatized: flags & 8 != 0)
    }

    /// The `u64` client epoch after the client id when flag bit 2 is set (0 otherwise); an
    /// epoch of 0 with the flag is malformed (0 means "none").
    static func readEpoch(_ r: inout ByteReader, flagged: Bool) throws(WireError) -> UInt64 {
        guard flagged else { return 0 }
        let epoch = try r.u64()
        guard epoch != 0 else { throw .invalidField("client epoch is 0 with header flag bit 2 set (0 means none: clear the flag)") }
        return epoch
    }

    // MARK: EVALUATION_REPORT  [header] [report JSON]

    /// Whether a header frame from the update socket is an EVALUATION_REPORT's (magic and
    /// type byte; the rest is checked by `decodeEvaluationReport`).
    public static func isEvaluationReport(_ frame: UnsafeRawBufferPointer) -> Bool {
        frame.count >= commonHeaderSize && frame.prefix(4).elementsEqual(headerMagic) && frame[5] == MessageType.evaluationReport.rawValue
    }

    /// The two frames of an evaluation report: the header (laid out like CLIENT_UPDATE's,
    /// version in place of the base version, examples in place of samples, codec byte zero,
    /// flags zero but bit 2, the client epoch) and a JSON object `{"dataset": "...", "metrics": {...}}`.
    public static func encode(_ e: EvaluationReport) -> [[UInt8]] {
        let id = Array(e.clientID.utf8)
        var w = common(.evaluationReport, capacity: updateHeaderFixedSize + id.count + 8)
        w.u64(e.runID)
        w.u64(e.version)
        w.u64(e.seq)
        w.u64(e.exampleCount)
        w.u8(0)
        w.u8(UInt8(truncatingIfNeeded: id.count))
        w.u16(e.epoch != 0 ? 4 : 0)
        w.raw(id)
        if e.epoch != 0 { w.u64(e.epoch) }
        var body = Array("{\"dataset\":".utf8)
        body += jsonString(e.dataset)
        body += Array(",\"metrics\":".utf8)
        body += encodeMetrics(e.metrics)
        body.append(0x7D)
        return [w.bytes, body]
    }

    static func jsonString(_ s: String) -> [UInt8] {
        Array((try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8))
    }

    public static func decodeEvaluationReport(_ frames: [UnsafeRawBufferPointer]) throws(WireError) -> EvaluationReport {
        guard frames.count == 2 else { throw .wrongFrameCount(message: "EVALUATION_REPORT", expected: "2", got: frames.count) }
        var r = ByteReader(frames[0], frame: "EVALUATION_REPORT header")
        try expect(.evaluationReport, &r)
        let runID = try r.u64(), version = try r.u64(), seq = try r.u64(), examples = try r.u64()
        guard try r.u8() == 0 else { throw .reservedBitsSet }
        let idLength = Int(try r.u8())
        let flags = try r.u16()
        guard flags & ~4 == 0 else { throw .reservedBitsSet }
        let id = try readClientID(&r, length: idLength, allowEmpty: false)
        let epoch = try readEpoch(&r, flagged: flags != 0)
        try r.end()
        guard frames[1].count <= UpdateMetrics.maxFrameBytes + 256 else {
            throw .invalidField("report frame of \(frames[1].count) bytes (at most \(UpdateMetrics.maxFrameBytes + 256))")
        }
        struct Body: Decodable { var dataset: String; var metrics: [String: Double] }
        let body: Body
        do {
            body = try JSONDecoder().decode(Body.self, from: Data(frames[1]))
        } catch {
            throw .invalidField("report frame is not a JSON object with a string 'dataset' and an object 'metrics' of names to numbers")
        }
        let dataset = body.dataset, metrics = body.metrics
        guard (1...UpdateMetrics.maxDatasetBytes).contains(dataset.utf8.count) else {
            throw .invalidField("report 'dataset' is not 1 to \(UpdateMetrics.maxDatasetBytes) bytes")
        }
        if let e = UpdateMetrics.validationError(metrics) { throw .invalidField("report metrics: \(e)") }
        guard !metrics.isEmpty else { throw .invalidField("report has no metrics") }
        return EvaluationReport(runID: runID, version: version, seq: seq, exampleCount: examples, clientID: id,
                                dataset: dataset, metrics: metrics, epoch: epoch)
    }

    // MARK: RECEIPT  [topic "receipt/<id>/"] [header] [message]

    /// The three frames of a receipt: topic, header, message text.
    public static func encode(_ rc: Receipt) -> [[UInt8]] {
        var w = common(.receipt, capacity: receiptHeaderSize)
        w.u64(rc.runID)
        w.u64(rc.seq)
        w.u64(rc.baseVersion)
        w.u64(rc.modelVersion)
        w.u64(rc.staleness ?? UInt64.max)
        w.f64(rc.mixingWeight)
        w.u8(rc.decision.rawValue)
        w.u8(rc.reason.rawValue)
        w.u16(0)
        var text = Array(rc.message.utf8)
        if text.count > maxReceiptMessageBytes {
            // Cut at a character boundary: back up while the first dropped byte continues a
            // multi-byte sequence.
            var cut = maxReceiptMessageBytes
            while cut > 0 && text[cut] & 0xC0 == 0x80 { cut -= 1 }
            text = Array(text.prefix(cut))
        }
        return [Topic.receipt(clientID: rc.clientID), w.bytes, text]
    }

    public static func decodeReceipt(_ frames: [UnsafeRawBufferPointer]) throws(WireError) -> Receipt {
        guard frames.count == 3 else { throw .wrongFrameCount(message: "RECEIPT", expected: "3", got: frames.count) }
        let topic = String(decoding: frames[0], as: UTF8.self)
        guard topic.hasPrefix("receipt/"), topic.hasSuffix("/"), topic.utf8.count > 9 else { throw .invalidTopic(topic) }
        let id = String(topic.dropFirst(8).dropLast())
        guard ClientID.isValid(id) else { throw .invalidClientID(id) }
        var r = ByteReader(frames[1], frame: "RECEIPT header")
        try expect(.receipt, &r)
        let runID = try r.u64(), seq = try r.u64(), base = try r.u64(), version = try r.u64()
        let staleness = try r.u64()
        let weight = try r.f64()
        let d = try r.u8()
        let reasonCode = try r.u8()
        guard try r.u16() == 0 else { throw .reservedBitsSet }
        try r.end()
        guard let decision = Decision(rawValue: d) else { throw .invalidField("decision code \(d)") }
        guard let reason = RejectReason(rawValue: reasonCode) else { throw .invalidField("reason code \(reasonCode)") }
        guard frames[2].count <= maxReceiptMessageBytes, let text = String(validating: frames[2], as: UTF8.self) else {
            throw .invalidField("receipt message is not UTF-8 of at most \(maxReceiptMessageBytes) bytes")
        }
        return Receipt(clientID: id, runID: runID, seq: seq, baseVersion: base, modelVersion: version,
                       staleness: staleness == UInt64.max ? nil : staleness, mixingWeight: weight,
                       decision: decision, reason: reason, message: text)
    }
}
