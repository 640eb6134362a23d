import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Foundation
import Testing
import ApiaryTesting

@Suite("Update codecs between the Swift client runtime and a real aggregator", .serialized)
struct CodecTests {
    /// An aggregator asking for `codec` (with FedBuff for deltas), two clients training toward
    /// 1 on every parameter: their encoded updates are merged and the model gets there.
    func run(_ codec: PayloadCodec, fedbuff: Bool) async throws -> (bytesPerUpdate: Double, model: [Float]) {
        var config = anyPortConfig()
        if fedbuff { config.buffer = FedBuffConfig(bufferSize: 2, maxWait: .milliseconds(200)) }
        config.compression = UpdateCompression(codec: codec, block: 5, topKFraction: 0.2)
        let agg = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                 logger: quietLogger())
        let e = try agg.start()
        defer { agg.stop() }
        let clients = try (0..<2).map { k in
            try ClientRuntime(config: clientConfig("codec-\(k)", e), trainer: StepTrainer(layout: testLayout, step: 0.5), logger: quietLogger())
        }
        let tasks = clients.map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        // Every parameter reaches 0.9 of the target (top-k sends a fifth of them per update: the
        // residual brings the others along).
        try await eventually("\(codec): the model near the target") {
            agg.latestModel.map { m in m.parameters.allSatisfy { $0 > 0.9 && $0 < 1.1 } } ?? false
        }
        #expect(agg.stats.rejectedTotal == 0, "\(codec): \(agg.stats.rejected)")
        #expect(clients.allSatisfy { $0.stats.merged >= 1 && $0.stats.rejected == 0 })
        let s = agg.stats
        return (Double(s.bytesIn) / Double(max(s.received, 1)), agg.latestModel?.parameters ?? [])
    }

    @Test("float16, bfloat16 and int8 full models (FedAsync) and int8 and top-k deltas with error feedback (FedBuff) are merged")
    func everyCodec() async throws {
        let f32 = try await run(.denseFloat32, fedbuff: false).bytesPerUpdate
        for codec in [PayloadCodec.float16, .bfloat16, .int8] {
            let b = try await run(codec, fedbuff: false).bytesPerUpdate
            #expect(b < f32, "\(codec): \(b) bytes per update, float32 \(f32)")
        }
        for codec in [PayloadCodec.int8, .topK] {
            let b = try await run(codec, fedbuff: true).bytesPerUpdate
            #expect(b < f32, "\(codec): \(b) bytes per update, float32 \(f32)")
        }
    }

    @Test("an unknown codec name in the snapshot config is an error that names it")
    func unknownCodec() throws {
        var c = SnapshotConfig(algorithm: .fedasync, rule: FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 8), training: TrainingConfig(),
                               chunkParameters: 8, maxFrameBytes: 1 << 20, receiptTimeoutSeconds: 1)
        c.codec = "zstd"
        #expect(throws: WireError.self) { try c.compression() }
        do { _ = try c.compression() } catch let e as WireError { #expect(e.description.contains("unknown codec 'zstd'")) } catch {}
    }
}
