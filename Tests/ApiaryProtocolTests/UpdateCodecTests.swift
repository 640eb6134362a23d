import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing

/// The update codecs of PROTOCOL.md 3.4.1: bytes as the document gives them, the checks a
/// receiver makes, round trips, error feedback, and what each codec costs in bytes.
struct UpdateCodecTests {
    static func encode(_ v: [Float], _ codec: PayloadCodec, chunk: Int = 1 << 20, block: Int = 4096, fraction: Double = 0.01) -> [[UInt8]] {
        v.withUnsafeBufferPointer { UpdateCodec.encode($0, codec: codec, chunk: chunk, block: block, fraction: fraction) }
    }

    static func check(_ frames: [[UInt8]], _ codec: PayloadCodec) throws(WireError) -> PayloadShape {
        let raw = frames.map { UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer.allocate(byteCount: max($0.count, 1), alignment: 1)) }
        defer { raw.forEach { $0.deallocate() } }
        for (r, f) in zip(raw, frames) { UnsafeMutableRawBufferPointer(mutating: r).copyBytes(from: f) }
        return try UpdateCodec.check(zip(raw, frames).map { UnsafeRawBufferPointer(rebasing: $0[0..<$1.count]) }, codec: codec)
    }

    @Test func halvesAsTheDocumentSays() {
        // float16: 1 = 0x3C00, -2 = 0xC000; beyond 65504 clamped, not infinity.
        #expect(Self.encode([1, -2, 1e6], .float16) == [[0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B]])
        // bfloat16: the upper half, rounded to nearest even: 1 + 2^-8 is a tie (stays 1),
        // 1 + 3 * 2^-8 is a tie that rounds up to the even 1 + 2^-6.
        #expect(UpdateCodec.bfloat16Bits(1) == 0x3F80)
        #expect(UpdateCodec.bfloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)
        #expect(UpdateCodec.bfloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)
        #expect(UpdateCodec.bfloat16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        // The largest float32 would round to infinity: truncated instead.
        #expect(UpdateCodec.bfloat16Bits(.greatestFiniteMagnitude) == 0x7F7F)
        #expect(Self.encode([1, -2], .bfloat16) == [[0x80, 0x3F, 0x00, 0xC0]])
    }

    @Test func int8BlocksCarryTheirScale() throws {
        // Blocks of 2: [0.5, -1] -> scale 1/127, q = round(63.5) = 64 (half away from zero), -127;
        // [0.25] -> scale 0.25/127, q = 127; an all-zero block has scale 0.
        let frames = Self.encode([0.5, -1, 0.25, 0, 0], .int8, block: 2)
        #expect(frames.count == 3)
        let s0 = Float(1) / 127
        #expect(Array(frames[0][0..<4]) == withUnsafeBytes(of: s0.bitPattern.littleEndian) { Array($0) })
        #expect(Array(frames[0][4...]) == [64, UInt8(bitPattern: -127)])
        #expect(Array(frames[1][4...]) == [127, 0])
        #expect(Array(frames[2]) == [0, 0, 0, 0, 0])
        #expect(try Self.check(frames, .int8) == PayloadShape(count: 5, extent: 5))
        let back = UpdateCodec.decode(frames, codec: .int8, count: 5)
        #expect(back[1] == -1 && back[2] == 0.25 && back[3] == 0 && abs(back[0] - 0.5) <= s0 / 2)
    }

    @Test func topKKeepsTheLargestInIndexOrderTiesToTheLowerIndex() throws {
        // k = ceil(0.4 * 5) = 2: |-3| first, then 2 and -2 tie: index 2 wins.
        let frames = Self.encode([0.1, -3, 2, 0.5, -2], .topK, fraction: 0.4)
        let expected = LE().u32(1).u16(0xC040).u32(2).u16(0x4000).bytes
        #expect(frames == [expected])
        #expect(try Self.check(frames, .topK) == PayloadShape(count: 2, extent: 3))
        #expect(UpdateCodec.decode(frames, codec: .topK, count: 5) == [0, -3, 2, 0, 0])
        // k is at least 1 and at most n; frames hold at most `chunk` entries.
        #expect(UpdateCodec.topKCount(n: 10, fraction: 1e-9) == 1 && UpdateCodec.topKCount(n: 10, fraction: 1) == 10)
        let split = Self.encode((0..<10).map { Float($0) }, .topK, chunk: 3, fraction: 1)
        #expect(split.map(\.count) == [18, 18, 18, 6])
        #expect(UpdateCodec.decode(split, codec: .topK, count: 10) == (0..<10).map { Float($0) })
    }

    @Test func badEncodingsAreNamed() {
        func reason(_ frames: [[UInt8]], _ c: PayloadCodec) -> String? {
            do { _ = try Self.check(frames, c); return nil } catch { return error.description }
        }
        let nan = LE().u32(Float.nan.bitPattern).u8(1).bytes
        #expect(reason([nan], .int8)?.contains("scale nan") == true)
        #expect(reason([LE().u32(Float(-1).bitPattern).u8(1).bytes], .int8)?.contains("scale -1") == true)
        #expect(reason([LE().u32(0).u8(0x80).bytes], .int8)?.contains("-128") == true)
        #expect(reason([[0, 0, 0, 0]], .int8)?.contains("at least one value") == true)
        #expect(reason([[]], .int8) == nil, "an empty frame carries nothing")
        #expect(reason([[1, 2, 3]], .float16)?.contains("not a multiple of 2") == true)
        #expect(reason([LE().u32(3).u16(0).u32(3).u16(0).bytes], .topK)?.contains("appears twice") == true)
        #expect(reason([LE().u32(3).u16(0).bytes, LE().u32(1).u16(0).bytes], .topK)?.contains("must increase") == true)
        #expect(reason([[0, 0, 0, 0, 0]], .topK)?.contains("multiple of 6") == true)
    }

    @Test func denseBlocksDecodeAPieceAtATime() {
        var rng = SplitMix64(seed: 7)
        let v = (0..<1000).map { _ in Float(Int(rng.next() % 2001) - 1000) / 256 }
        for codec in [PayloadCodec.denseFloat32, .float16, .bfloat16, .int8] {
            let frames = Self.encode(v, codec, chunk: 333, block: 100)
            let whole = UpdateCodec.decode(frames, codec: codec, count: v.count)
            // Through a scratch of 7 values: the same values, in order.
            let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 7)
            defer { scratch.deallocate() }
            var seen: [Float] = []
            frames.withRawBuffers { raw in
                for b in DenseBlocks(raw, codec: codec, scratch: scratch) {
                    #expect(codec == .denseFloat32 || b.count <= 28)
                    seen += (0..<(b.count / 4)).map { b.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
                }
            }
            #expect(seen == whole, "\(codec)")
            let worst = zip(v, whole).map { abs($0 - $1) }.max()!
            let bound: Float = switch codec {
            case .denseFloat32: 0
            case .float16: 1.0 / 256   // values up to 4: 10 mantissa bits
            case .bfloat16: 1.0 / 32   // 7 mantissa bits
            default: 4.0 / 127 / 2 + 1e-6  // half a step of the block's scale
            }
            #expect(worst <= bound, "\(codec): worst error \(worst)")
        }
    }

    @Test func errorFeedbackSendsWhatTheCodecDropped() {
        // Over rounds, what was sent plus the residual is what was meant: sum of the deltas.
        var rng = SplitMix64(seed: 11)
        for codec in [PayloadCodec.topK, .int8, .bfloat16] {
            let n = 500
            var residual = [Float](repeating: 0, count: n)
            var meant = [Double](repeating: 0, count: n), sent = [Double](repeating: 0, count: n)
            for _ in 0..<20 {
                let d = (0..<n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 1000 }
                let x = zip(d, residual).map(+)
                let frames = Self.encode(x, codec, fraction: 0.05)
                let decoded = UpdateCodec.decode(frames, codec: codec, count: n)
                residual = zip(x, decoded).map(-)
                for i in 0..<n { meant[i] += Double(d[i]); sent[i] += Double(decoded[i]) }
            }
            let gap = (0..<n).map { abs(meant[$0] - sent[$0] - Double(residual[$0])) }.max()!
            #expect(gap < 1e-3, "\(codec): sent + residual differs from the deltas by \(gap)")
            // Top-k sends each value eventually: the residual stays bounded, it does not grow with rounds.
            #expect(residual.map { abs($0) }.max()! < 25, "\(codec)")
        }
    }

    @Test func bytesPerUpdateAgainstFloat32() {
        let n = 1 << 20
        var rng = SplitMix64(seed: 3)
        let v = (0..<n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 1000 }
        let f32 = Double(n * 4)
        func bytes(_ c: PayloadCodec) -> Double { Double(Self.encode(v, c, chunk: 262_144).reduce(0) { $0 + $1.count }) }
        #expect(bytes(.float16) / f32 == 0.5 && bytes(.bfloat16) / f32 == 0.5)
        #expect(bytes(.int8) / f32 <= 0.26, "int8: \(bytes(.int8) / f32)")
        #expect(f32 / bytes(.topK) >= 50, "top-k 1 %: \(f32 / bytes(.topK)) times fewer bytes")
    }

    @Test func updatesDecodeWithTheirCodecAndTopKNeedsADelta() throws {
        let layout = try ParameterLayout([TensorSpec(name: "w", shape: [4])])
        func frames(_ codec: PayloadCodec, delta: Bool, _ payload: [[UInt8]]) -> [[UInt8]] {
            [Codec.encode(UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 0, codec: codec, clientID: "c", isDelta: delta)),
             Codec.encodeLayout(layout)] + payload
        }
        try frames(.int8, delta: false, Self.encode([1, 2, 3, 4], .int8)).withRawBuffers { raw in
            let v = try Codec.decodeUpdate(raw)
            #expect(v.header.codec == .int8 && v.shape.count == 4)
        }
        frames(.topK, delta: false, Self.encode([1, 2, 3, 4], .topK)).withRawBuffers { raw in
            #expect(throws: WireError.self) { try Codec.decodeUpdate(raw) }
            do { _ = try Codec.decodeUpdate(raw) } catch let e as WireError { #expect(e.reason == .badEncoding) } catch {}
        }
        // An unknown codec byte is unsupported_codec.
        var bad = frames(.denseFloat32, delta: false, [[0, 0, 0, 0]])
        bad[0][40] = 9
        bad.withRawBuffers { raw in
            do { _ = try Codec.decodeUpdate(raw) } catch let e as WireError { #expect(e.reason == .unsupportedCodec) } catch {}
        }
    }

    @Test func theSnapshotConfigNamesTheCodec() throws {
        var c = SnapshotConfig(algorithm: .fedbuff, rule: FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 8), training: TrainingConfig(), chunkParameters: 8,
                               maxFrameBytes: 1 << 20, receiptTimeoutSeconds: 1)
        #expect(try c.compression() == UpdateCompression(), "absent: float32")
        c.codec = "topk"
        c.topkFraction = 0.05
        let back = try c.encoded().withUnsafeBytes { try SnapshotConfig.decode($0) }
        #expect(try back.compression() == UpdateCompression(codec: .topK, topKFraction: 0.05))
        c.codec = "zstd"
        #expect(throws: WireError.self) { try c.compression() }
        c.codec = "topk"
        c.algorithm = .fedasync
        #expect(throws: WireError.self, "top-k needs deltas") { try c.compression() }
    }
}

extension Array where Element == [UInt8] {
    /// Raw views of the frames, each its own allocation, for the call.
    func withRawBuffers<R>(_ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
        let whole = map { UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max($0.count, 1), alignment: 16) }
        defer { whole.forEach { $0.deallocate() } }
        let copies = zip(whole, self).map { b, f -> UnsafeMutableRawBufferPointer in
            b.copyBytes(from: f)
            return UnsafeMutableRawBufferPointer(rebasing: b[0..<f.count])
        }
        return try body(copies.map { UnsafeRawBufferPointer($0) })
    }
}
