import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing

/// The optional metrics frame of CLIENT_UPDATE and the EVALUATION_REPORT message.
@Suite("Update metrics and evaluation reports")
struct MetricsAndReportTests {
    let layout = try! ParameterLayout([TensorSpec(name: "w", shape: [2])])

    func frames(_ header: UpdateHeader, metrics: [UInt8]?) -> [[UInt8]] {
        var f = [Codec.encode(header), Codec.encodeLayout(layout)]
        if let metrics { f.append(metrics) }
        f.append([Float](repeating: 0.5, count: 2).withUnsafeBytes { Array($0) })
        return f
    }

    @Test("an update with the flag carries its metrics frame; without it, it is a v1 update as before")
    func roundTrip() throws {
        let m = ["loss": 0.25, "accuracy": 0.875, "val/top5": 1]
        var h = UpdateHeader(runID: 7, baseVersion: 3, seq: 9, sampleCount: 40, clientID: "c1", carriesMetrics: true)
        let view = try withFrames(frames(h, metrics: Codec.encodeMetrics(m))) { v in try Codec.decodeUpdate(v) }
        #expect(view.header == h)
        #expect(view.metrics == m)
        #expect(view.payloadBytes == 8)

        h.carriesMetrics = false
        let plain = frames(h, metrics: nil)
        // Byte 42..43 (the flags) are zero: the header is exactly the v1 one.
        #expect(plain[0][42] == 0 && plain[0][43] == 0)
        let v1 = try withFrames(plain) { v in try Codec.decodeUpdate(v) }
        #expect(v1.metrics.isEmpty)
        #expect(v1.payloadBytes == 8)
    }

    @Test("flag bit 1 says delta; bits above 3 (bit 2: the client epoch, bit 3: privatized) are refused as reserved")
    func otherFlags() throws {
        var header = Codec.encode(UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c1", isDelta: true))
        #expect(header[42] == 2)
        let delta = try withFrames([header, Codec.encodeLayout(layout), [0, 0, 0, 0, 0, 0, 0, 0]]) { v in try Codec.decodeUpdate(v) }
        #expect(delta.header.isDelta && !delta.header.carriesMetrics)
        header[42] = 16
        let e = withFrames([header, Codec.encodeLayout(layout), [0, 0, 0, 0, 0, 0, 0, 0]]) { v in
            Result { () throws(WireError) in try Codec.decodeUpdate(v) }
        }
        #expect(throws: WireError.reservedBitsSet) { try e.get() }
    }

    @Test("a bad metrics frame is a specific error", arguments: [
        ("{\"loss\": true}", "not a JSON object of names to numbers"),
        ("{\"loss\": \"0.5\"}", "not a JSON object of names to numbers"),
        ("[1, 2]", "not a JSON object of names to numbers"),
        ("{\"a b\": 1}", "metric name 'a b'"),
        ("{\"\": 1}", "metric name ''"),
        ("{\"loss\": 1e999}", "not"),
        ("not json", "not a JSON object"),
    ])
    func badMetrics(json: String, expected: String) throws {
        let h = UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c1", carriesMetrics: true)
        let r = withFrames(frames(h, metrics: Array(json.utf8))) { v in Result { () throws(WireError) in try Codec.decodeUpdate(v) } }
        guard case .failure(let e) = r else { Issue.record("decoded \(json)"); return }
        #expect(e.reason == .malformed)
        #expect(e.description.contains(expected), "\(e.description)")
    }

    @Test("too many metrics, or a frame over the bound, is refused")
    func bounds() throws {
        let many = Dictionary(uniqueKeysWithValues: (0...UpdateMetrics.maxEntries).map { ("m\($0)", Double($0)) })
        #expect(UpdateMetrics.validationError(many) != nil)
        let huge = Array("{\"a\":\(String(repeating: "1", count: UpdateMetrics.maxFrameBytes))}".utf8)
        let error = huge.withUnsafeBytes { b -> WireError? in
            do throws(WireError) {
                _ = try Codec.decodeMetrics(b)
                return nil
            } catch {
                return error
            }
        }
        #expect(error?.description.contains("at most \(UpdateMetrics.maxFrameBytes)") == true)
        // The flag without a frame for it: the update is one frame short.
        let h = UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c1", carriesMetrics: true)
        let r = withFrames([Codec.encode(h), Codec.encodeLayout(layout), [0, 0, 0, 0]]) { v in
            Result { () throws(WireError) in try Codec.decodeUpdate(v) }
        }
        #expect(throws: WireError.self) { try r.get() }
    }

    @Test("an evaluation report round-trips, and its sender can be peeked like an update's")
    func report() throws {
        let r = EvaluationReport(runID: 0xABCD, version: 42, seq: 5, exampleCount: 360, clientID: "eval-1",
                                 dataset: "digits test \"split\" é", metrics: ["accuracy": 0.9, "loss": 0.31])
        let f = Codec.encode(r)
        #expect(f.count == 2)
        #expect(f[0].count == Codec.updateHeaderFixedSize + 6)
        let back = try withFrames(f) { v in try Codec.decodeEvaluationReport(v) }
        #expect(back == r)
        #expect(f[0].withUnsafeBytes { Codec.isEvaluationReport($0) })
        let peek = f[0].withUnsafeBytes { Codec.peekUpdateSender($0) }
        #expect(peek?.clientID == "eval-1" && peek?.seq == 5 && peek?.baseVersion == 42)
        let update = Codec.encode(UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c1"))
        #expect(!update.withUnsafeBytes { Codec.isEvaluationReport($0) })
    }

    @Test("an evaluation report carries a client epoch like an update: flag bit 2, u64 after the client id")
    func reportWithEpoch() throws {
        let r = EvaluationReport(runID: 0xABCD, version: 42, seq: 5, exampleCount: 360, clientID: "eval-1",
                                 dataset: "d", metrics: ["accuracy": 0.9], epoch: 0xFEED)
        let f = Codec.encode(r)
        #expect(f[0].count == Codec.updateHeaderFixedSize + 6 + 8)
        #expect(f[0][42] == 4 && f[0][43] == 0)
        #expect(Array(f[0].suffix(8)) == [0xED, 0xFE, 0, 0, 0, 0, 0, 0])
        #expect(try withFrames(f) { v in try Codec.decodeEvaluationReport(v) } == r)
        let peek = f[0].withUnsafeBytes { Codec.peekUpdateSender($0) }
        #expect(peek?.clientID == "eval-1" && peek?.seq == 5)
        // Any other flag bit is still reserved.
        var other = f
        other[0][42] = 1
        let bad = withFrames(other) { v in Result { () throws(WireError) in try Codec.decodeEvaluationReport(v) } }
        guard case .failure(let e) = bad else { Issue.record("decoded flag bit 0"); return }
        #expect(e.reason == .malformed)
    }

    @Test("a bad evaluation report is a specific error", arguments: [
        "{\"metrics\": {\"accuracy\": 1}}",
        "{\"dataset\": \"\", \"metrics\": {\"accuracy\": 1}}",
        "{\"dataset\": \"d\", \"metrics\": {}}",
        "{\"dataset\": \"d\", \"metrics\": {\"accuracy\": false}}",
        "{\"dataset\": 3, \"metrics\": {\"accuracy\": 1}}",
    ])
    func badReport(body: String) throws {
        let header = Codec.encode(EvaluationReport(runID: 1, version: 1, seq: 1, exampleCount: 1, clientID: "e", dataset: "d",
                                                   metrics: ["a": 1]))[0]
        let r = withFrames([header, Array(body.utf8)]) { v in Result { () throws(WireError) in try Codec.decodeEvaluationReport(v) } }
        guard case .failure(let e) = r else { Issue.record("decoded \(body)"); return }
        #expect(e.reason == .malformed, "\(e)")
    }

    @Test("the snapshot config says which features the aggregator takes; an old one's says none")
    func features() throws {
        var c = SnapshotConfig(rule: FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 128), training: TrainingConfig(extra: ["dropout": .number(0.25), "arch": .string("mlp"), "bn": .bool(true)]),
                               chunkParameters: 10, maxFrameBytes: 100, receiptTimeoutSeconds: 1)
        c.features = ProtocolFeature.all
        c.localDP = LocalDPConfig(clipNorm: 0.5, noiseMultiplier: 2)
        let text = String(decoding: c.encoded(), as: UTF8.self)
        #expect(text.contains(#""local_dp":{"clip_norm":0.5,"noise_multiplier":2}"#), "\(text)")
        let back = try c.encoded().withUnsafeBytes { b throws(WireError) in try SnapshotConfig.decode(b) }
        #expect(back.supports(ProtocolFeature.updateMetrics) && back.supports(ProtocolFeature.evaluationReports))
        let asked = try back.localPrivacy()
        #expect(back.supports(ProtocolFeature.localDP) && asked == LocalDPConfig(clipNorm: 0.5, noiseMultiplier: 2))
        c.localDP = LocalDPConfig(clipNorm: 0, noiseMultiplier: 2)
        #expect(throws: WireError.self) { try c.localPrivacy() }
        #expect(back.training.extra == ["dropout": .number(0.25), "arch": .string("mlp"), "bn": .bool(true)])
        // What a v1 aggregator without these keys sends.
        let old = #"{"algorithm":"fedasync","alpha":0.5,"chunk_parameters":10,"max_frame_bytes":100,"max_staleness":128,"receipt_timeout_s":1,"staleness_a":0,"staleness_b":0,"staleness_function":"constant","training":{"batch_size":16,"learning_rate":0.1,"local_epochs":1,"proximal_mu":0}}"#
        let o = try Array(old.utf8).withUnsafeBytes { b throws(WireError) in try SnapshotConfig.decode(b) }
        #expect(!o.supports(ProtocolFeature.updateMetrics))
        #expect(o.training.extra.isEmpty)
        let none = try o.localPrivacy()
        #expect(none == nil)
    }
}
