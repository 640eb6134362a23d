import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Testing

/// Encoded updates on the merge path: decoded a piece at a time, merged like float32, bad
/// encodings rejected with their reason and nothing changed.
struct CodecMergeTests {
    static func update(_ e: MergeEngine, client: String = "c1", seq: UInt64, base: UInt64 = 0, codec: PayloadCodec, delta: Bool = false,
                       _ values: [Float], fraction: Double = 0.5, payload: [[UInt8]]? = nil) -> MergeEngine.Outcome {
        let header = Codec.encode(UpdateHeader(runID: MergeEngineTests.runID, baseVersion: base, seq: seq, sampleCount: 10, codec: codec,
                                               clientID: client, isDelta: delta))
        let frames = payload ?? values.withUnsafeBufferPointer { UpdateCodec.encode($0, codec: codec, chunk: 4, block: 4, fraction: fraction) }
        return ([header, Codec.encodeLayout(MergeEngineTests.layout)] + frames).withUnsafeRawBuffers { e.ingest($0) }
    }

    @Test func denseCodecsMergeWhatTheyDecodeTo() {
        let values: [Float] = [2, -2, 0.5, 1, 4, 3]
        for codec in [PayloadCodec.float16, .bfloat16, .int8] {
            let e = MergeEngineTests.engine(alpha: 0.5)
            let o = Self.update(e, seq: 1, codec: codec, values)
            #expect(o.reason == .none && o.receipt?.decision == .merged, "\(codec): \(o.detail)")
            let decoded = values.withUnsafeBufferPointer { UpdateCodec.decode(UpdateCodec.encode($0, codec: codec, chunk: 4, block: 4), codec: codec, count: 6) }
            #expect(Array(e.parameters) == decoded.map { 0.5 * $0 }, "\(codec)")
        }
    }

    @Test func topKDeltasGoIntoTheBufferAtTheirIndices() {
        let e = FedBuffTests.engine(k: 2)
        // k = 3 of 6: the three largest magnitudes.
        #expect(Self.update(e, client: "a", seq: 1, codec: .topK, delta: true, [0, 8, 0, -4, 1, 2]).reason == .none)
        #expect(Self.update(e, client: "b", seq: 1, codec: .int8, delta: true, [2, 2, 2, 2, 2, 2]).reason == .none)
        let done = e.flushBufferIfReady(now: .now)
        #expect(done.count == 2)
        // x += (topk(a) + b) / 2 = ([0, 8, 0, -4, 0, 2] + 2) / 2
        #expect(Array(e.parameters) == [1, 5, 1, -1, 1, 2])
    }

    @Test func badEncodingsAreRejectedWithTheirReasonAndChangeNothing() {
        let e = FedBuffTests.engine(k: 1)
        func entry(_ i: UInt32, _ v: Float) -> [UInt8] {
            withUnsafeBytes(of: i.littleEndian) { Array($0) } + withUnsafeBytes(of: UpdateCodec.bfloat16Bits(v).littleEndian) { Array($0) }
        }
        let outOfRange = Self.update(e, seq: 1, codec: .topK, delta: true, [], payload: [entry(2, 1) + entry(6, 1)])
        #expect(outOfRange.reason == .badEncoding && outOfRange.receipt?.decision == .rejected)
        #expect(outOfRange.detail.contains("index 6 is out of range"), "\(outOfRange.detail)")
        let twice = Self.update(e, seq: 2, codec: .topK, delta: true, [], payload: [entry(2, 1) + entry(2, 1)])
        #expect(twice.reason == .badEncoding && twice.receipt != nil, "\(twice.detail)")
        let nanScale = Self.update(e, seq: 3, codec: .int8, delta: true, [], payload: [withUnsafeBytes(of: Float.nan.bitPattern) { Array($0) } + [1, 1, 1, 1, 1, 1]])
        #expect(nanScale.reason == .badEncoding)
        // A half that is infinity decodes to a non-finite value: non_finite.
        let inf = Self.update(e, seq: 4, codec: .float16, delta: true, [], payload: [[0, 0x7C] + [UInt8](repeating: 0, count: 10)])
        #expect(inf.reason == .nonFinite)
        let short = Self.update(e, seq: 5, codec: .bfloat16, delta: true, [], payload: [[UInt8](repeating: 0, count: 10)])
        #expect(short.reason == .layoutMismatch && short.detail.contains("holds 5 values"), "\(short.detail)")
        #expect(e.flushBufferIfReady(now: .now).isEmpty && Array(e.parameters) == [0, 0, 0, 0, 0, 0] && e.version == 0)
    }

    @Test func aTopKDeltaToFedAsyncIsRefusedBeforeTheModel() {
        let e = MergeEngineTests.engine()
        let o = Self.update(e, seq: 1, codec: .topK, delta: true, [1, 1, 1, 1, 1, 1])
        #expect(o.reason == .wrongUpdateKind && Array(e.parameters) == [0, 0, 0, 0, 0, 0])
        let full = Self.update(e, seq: 2, codec: .topK, delta: false, [1, 1, 1, 1, 1, 1])
        #expect(full.reason == .badEncoding && full.receipt?.decision == .rejected, "\(full.detail)")
    }
}
