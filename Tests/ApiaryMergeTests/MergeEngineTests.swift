import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Testing

/// The merge path without sockets: CLIENT_UPDATE frames in, outcome out.
struct MergeEngineTests {
    static let layout = try! ParameterLayout([TensorSpec(name: "w", shape: [2, 2]), TensorSpec(name: "b", shape: [2])])
    static let runID: UInt64 = 0xA11CE

    static func engine(alpha: Double = 0.5, maxStaleness: UInt64 = 4, initial: [Float]? = nil) -> MergeEngine {
        MergeEngine(layout: layout, parameters: initial ?? [Float](repeating: 0, count: 6), version: 0, runID: runID,
                    rule: FedAsync(alpha: alpha, staleness: .constant, maxStaleness: maxStaleness), dedupWindow: 8)
    }

    /// Ingests one update built from its fields.
    static func ingest(_ e: MergeEngine, client: String = "c1", seq: UInt64, base: UInt64 = 0, run: UInt64 = runID,
                       values: [Float], layout l: ParameterLayout = layout, extraFrames: Int = 0) -> MergeEngine.Outcome {
        let header = Codec.encode(UpdateHeader(runID: run, baseVersion: base, seq: seq, sampleCount: 10, clientID: client))
        let layoutFrame = Codec.encodeLayout(l)
        let payload = values.withUnsafeBytes { Array($0) }
        var frames: [[UInt8]] = [header, layoutFrame, payload]
        for _ in 0..<extraFrames { frames.append([]) }
        return frames.withUnsafeRawBuffers { e.ingest($0) }
    }

    @Test func aValidUpdateIsMergedWithTheFedAsyncRule() {
        let e = Self.engine(alpha: 0.5)
        let o = Self.ingest(e, seq: 1, values: [2, 2, 2, 2, 4, 4])
        #expect(o.reason == .none)
        #expect(o.receipt?.decision == .merged && o.receipt?.modelVersion == 1)
        #expect(e.version == 1 && e.stats.merged == 1)
        #expect(Array(e.parameters) == [1, 1, 1, 1, 2, 2])  // x + 0.5 (x_c - x)
    }

    @Test func aResendIsADuplicateAndChangesNothing() {
        let e = Self.engine()
        _ = Self.ingest(e, seq: 1, values: [2, 2, 2, 2, 2, 2])
        let before = Array(e.parameters)
        let o = Self.ingest(e, seq: 1, values: [9, 9, 9, 9, 9, 9])
        #expect(o.reason == .duplicate && o.receipt?.decision == .duplicate)
        #expect(o.receipt?.modelVersion == 1, "the receipt repeats the first outcome")
        #expect(Array(e.parameters) == before && e.version == 1)
    }

    /// Validation order: run id before layout before size before staleness before finiteness;
    /// a rejected update never touches the model.
    @Test(arguments: [
        ("unknown run", MergeEngineTests.runID + 1, false, 6, UInt64(0), Float(1), RejectReason.unknownBase),
        ("other layout", MergeEngineTests.runID, true, 6, UInt64(0), Float(1), RejectReason.layoutMismatch),
        ("short payload", MergeEngineTests.runID, false, 5, UInt64(0), Float(1), RejectReason.layoutMismatch),
        ("base from the future", MergeEngineTests.runID, false, 6, UInt64(7), Float(1), RejectReason.unknownBase),
        ("NaN", MergeEngineTests.runID, false, 6, UInt64(0), Float.nan, RejectReason.nonFinite),
    ])
    func aBadUpdateIsRejectedWithItsReason(_ what: String, run: UInt64, otherLayout: Bool, count: Int, base: UInt64, fill: Float,
                                         reason: RejectReason) throws {
        let e = Self.engine()
        let other = try ParameterLayout([TensorSpec(name: "w", shape: [6])])
        let o = Self.ingest(e, seq: 1, base: base, run: run, values: [Float](repeating: fill, count: count),
                            layout: otherLayout ? other : Self.layout)
        #expect(o.reason == reason, "\(what): \(o.detail)")
        #expect(o.receipt?.decision == .rejected)
        #expect(Array(e.parameters) == [0, 0, 0, 0, 0, 0] && e.version == 0)
    }

    @Test func aTooStaleUpdateIsRejectedAndAFreshOneMerged() {
        let e = Self.engine(maxStaleness: 1)
        for s in 1...3 { _ = Self.ingest(e, client: "fast", seq: UInt64(s), base: UInt64(s - 1), values: [1, 1, 1, 1, 1, 1]) }
        let o = Self.ingest(e, client: "slow", seq: 1, base: 0, values: [5, 5, 5, 5, 5, 5])
        #expect(o.reason == .tooStale && o.receipt?.staleness == 3)
        let ok = Self.ingest(e, client: "slow", seq: 2, base: 2, values: [5, 5, 5, 5, 5, 5])
        #expect(ok.reason == .none && ok.receipt?.staleness == 1)
    }

    @Test func aNormOverTheBoundIsRejectedOrClipped() {
        let reject = Self.engine(alpha: 1)
        reject.maxUpdateNorm = 1
        let r = Self.ingest(reject, seq: 1, values: [3, 0, 0, 0, 4, 0])  // norm 5
        #expect(r.reason == .normTooLarge && r.updateNorm == 5)
        #expect(reject.version == 0)

        let clip = Self.engine(alpha: 1)
        clip.maxUpdateNorm = 1
        clip.normPolicy = .clip
        let c = Self.ingest(clip, seq: 1, values: [3, 0, 0, 0, 4, 0])
        #expect(c.reason == .none)
        #expect(abs(c.receipt!.mixingWeight - 0.2) < 1e-12, "weight scaled by bound / norm")
        let p = Array(clip.parameters)
        #expect(abs(p[0] - 0.6) < 1e-6 && abs(p[4] - 0.8) < 1e-6, "the update moved the model by exactly the bound")
    }

    @Test func anIdentityMismatchIsReceiptedToTheAuthenticatedID() {
        let e = Self.engine()
        let header = Codec.encode(UpdateHeader(runID: Self.runID, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "mallory"))
        let frames = [header, Codec.encodeLayout(Self.layout), [Float](repeating: 1, count: 6).withUnsafeBytes { Array($0) }]
        let o = frames.withUnsafeRawBuffers { e.ingest($0, authenticatedID: "alice") }
        #expect(o.reason == .identityMismatch && o.receipt?.clientID == "alice")
        #expect(e.version == 0)
    }

    @Test func tooManyFramesIsMalformed() {
        let e = Self.engine()
        let header = Codec.encode(UpdateHeader(runID: Self.runID, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c1"))
        let o = [header].withUnsafeRawBuffers { e.rejectTooManyFrames($0, limit: 4) }
        #expect(o.reason == .malformed && o.receipt?.clientID == "c1")
        #expect(e.stats.received == 1 && e.stats.rejectedTotal == 1)
    }

    /// The fuzz regression `mergeengine-fedasync-mix-overflows-to-inf-weight-near-1.bin`:
    /// a weight whose float32 is 1 but whose double is not, near FLT_MAX, once rounded to +inf.
    @Test func mixingNearTheFloatLimitStaysFinite() {
        let e = Self.engine(alpha: 0.99999999, initial: [Float(bitPattern: 0x73C0_0000), 0, 0, 0, 0, 0])
        let o = Self.ingest(e, seq: 1, values: [.greatestFiniteMagnitude, 0, 0, 0, 0, 0])
        #expect(o.reason == .none)
        #expect(e.parameters.allSatisfy { $0.isFinite })
    }

    @Test func aFedAvgRoundDefersReceiptsAndAveragesBySampleCount() {
        let e = Self.engine()
        e.round = FedAvgRound(config: FedAvgConfig(expectedClients: 2), parameterCount: 6)
        let a = Self.ingest(e, client: "a", seq: 1, values: [2, 2, 2, 2, 2, 2])
        #expect(a.receipt == nil && a.detail == "deferred")
        let again = Self.ingest(e, client: "a", seq: 2, values: [2, 2, 2, 2, 2, 2])
        #expect(again.reason == .duplicate, "one contribution per client per round")
        #expect(e.closeRoundIfReady(now: .now).isEmpty, "waits for the second client")
        _ = Self.ingest(e, client: "b", seq: 1, values: [4, 4, 4, 4, 4, 4])
        let closed = e.closeRoundIfReady(now: .now)
        #expect(closed.count == 2 && closed.allSatisfy { $0.receipt?.decision == .merged && $0.receipt?.modelVersion == 1 })
        #expect(Array(e.parameters) == [3, 3, 3, 3, 3, 3] && e.version == 1)
    }

    @Test func aFedAvgRoundTakesTheServerOptimizersStepAndItsStateIsCheckpointed() throws {
        // FedAvgM: momentum lr 0.5, beta 0.9, one client per round, all its samples equal.
        let momentum = ServerOptimizer.Config(kind: .momentum, learningRate: 0.5, beta1: 0.9)
        let e = Self.engine()
        e.round = FedAvgRound(config: FedAvgConfig(expectedClients: 1, optimizer: momentum), parameterCount: 6)
        // Round 1: d = 2 - 0 = 2; m = 2; x = 0 + 0.5 * 2 = 1.
        _ = Self.ingest(e, client: "a", seq: 1, values: [2, 2, 2, 2, 2, 2])
        #expect(e.closeRoundIfReady(now: .now).count == 1 && Array(e.parameters) == [1, 1, 1, 1, 1, 1])
        // A restart: the momentum comes back from the checkpoint.
        let saved = try Checkpoint.decode(try Checkpoint.encode(e.checkpointState()))
        #expect(saved.optimizer?.kind == "momentum" && saved.optimizer?.m == [2, 2, 2, 2, 2, 2])
        let r = MergeEngine(resuming: saved, rule: e.rule, dedupWindow: 8)
        r.round = FedAvgRound(config: FedAvgConfig(expectedClients: 1, optimizer: momentum), parameterCount: 6, resuming: saved.optimizer)
        // Round 2 (base version 1): d = 2 - 1 = 1; m = 0.9 * 2 + 1 = 2.8; x = 1 + 0.5 * 2.8 = 2.4.
        _ = Self.ingest(r, client: "a", seq: 2, base: 1, values: [2, 2, 2, 2, 2, 2])
        #expect(r.closeRoundIfReady(now: .now).count == 1)
        for p in r.parameters { #expect(abs(p - 2.4) < 1e-6) }
    }

    @Test func aCheckpointResumesTheModelAndTheDedupTable() {
        let e = Self.engine()
        _ = Self.ingest(e, seq: 1, values: [2, 2, 2, 2, 2, 2])
        let resumed = MergeEngine(resuming: e.checkpointState(), rule: e.rule, dedupWindow: 8)
        #expect(Array(resumed.parameters) == Array(e.parameters) && resumed.version == 1)
        #expect(Self.ingest(resumed, seq: 1, values: [9, 9, 9, 9, 9, 9]).reason == .duplicate)
    }
}

extension Array where Element == [UInt8] {
    /// The frames as raw buffers, each its own aligned allocation (as libzmq hands them over).
    func withUnsafeRawBuffers<R>(_ body: ([UnsafeRawBufferPointer]) -> R) -> R {
        let copies = map { f -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(f.count, 1), alignment: 16)
            b.copyBytes(from: f)
            return UnsafeMutableRawBufferPointer(rebasing: b[0..<f.count])
        }
        defer { copies.forEach { $0.deallocate() } }
        return body(copies.map { UnsafeRawBufferPointer($0) })
    }
}
