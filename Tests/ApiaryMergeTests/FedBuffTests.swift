import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Testing

/// FedBuff in the engine: deltas buffered, one server step per K, receipts at the flush.
struct FedBuffTests {
    static func engine(k: Int, staleness: StalenessFunction = .constant, maxStaleness: UInt64 = 8, exampleWeighting: Bool = false,
                       optimizer: ServerOptimizer.Config = .init()) -> MergeEngine {
        let e = MergeEngineTests.engine(maxStaleness: maxStaleness)
        e.rule = FedAsync(alpha: 0.5, staleness: staleness, maxStaleness: maxStaleness)
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: k, maxWait: .seconds(3600), exampleWeighting: exampleWeighting, exampleCap: 50,
                                                   optimizer: optimizer), parameterCount: 6)
        return e
    }

    static func delta(_ e: MergeEngine, _ client: String, seq: UInt64, base: UInt64 = 0, _ d: [Float], samples: UInt64 = 10) -> MergeEngine.Outcome {
        let header = Codec.encode(UpdateHeader(runID: MergeEngineTests.runID, baseVersion: base, seq: seq, sampleCount: samples,
                                               clientID: client, isDelta: true))
        return [header, Codec.encodeLayout(MergeEngineTests.layout), d.withUnsafeBytes { Array($0) }].withUnsafeRawBuffers { e.ingest($0) }
    }

    @Test func kDeltasMakeOneServerStepWithTheirAverage() {
        let e = Self.engine(k: 2)
        let a = Self.delta(e, "a", seq: 1, [2, 2, 2, 2, 2, 2])
        #expect(a.receipt == nil && a.reason == .none, "buffered: no receipt yet")
        #expect(e.flushBufferIfReady(now: .now).isEmpty && e.version == 0)
        #expect(Self.delta(e, "a", seq: 1, [2, 2, 2, 2, 2, 2]).receipt == nil, "a resend of a buffered delta waits for the flush")
        _ = Self.delta(e, "b", seq: 1, [4, 4, 4, 4, 4, 4])
        let done = e.flushBufferIfReady(now: .now)
        #expect(done.count == 2 && done.allSatisfy { $0.receipt?.decision == .merged && $0.receipt?.modelVersion == 1 })
        #expect(done.allSatisfy { $0.receipt?.mixingWeight == 0.5 })
        #expect(Array(e.parameters) == [3, 3, 3, 3, 3, 3] && e.version == 1)   // x + 1 * (2 + 4) / 2
        // After the flush a resend is a duplicate of the merged update, answered at once.
        let again = Self.delta(e, "a", seq: 1, [2, 2, 2, 2, 2, 2])
        #expect(again.reason == .duplicate && again.receipt?.modelVersion == 1)
    }

    @Test func staleDeltasAreDownWeightedAndExamplesCountWhenAsked() {
        // polynomial a = 1: S(s) = 1 / (s + 1). One flush first, so that a base-0 delta has staleness 1.
        let e = Self.engine(k: 1, staleness: .polynomial(a: 1), exampleWeighting: true)
        _ = Self.delta(e, "a", seq: 1, [0, 0, 0, 0, 0, 0])
        #expect(e.flushBufferIfReady(now: .now).count == 1)
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 2, maxWait: nil, exampleWeighting: true, exampleCap: 50), parameterCount: 6)
        _ = Self.delta(e, "fresh", seq: 1, base: 1, [3, 3, 3, 3, 3, 3], samples: 20)      // w = 1 * 20
        _ = Self.delta(e, "stale", seq: 1, base: 0, [6, 6, 6, 6, 6, 6], samples: 900)     // w = 1/2 * 50 (capped)
        let done = e.flushBufferIfReady(now: .now)
        #expect(done.count == 2)
        // D = (20 * 3 + 25 * 6) / (20 + 50) = 3
        for p in e.parameters { #expect(abs(p - 3) < 1e-6) }
        #expect(done.first { $0.receipt?.clientID == "stale" }?.receipt?.staleness == 1)
    }

    @Test func theOptimizerStateSurvivesACheckpointAndTheNextStepIsTheUninterruptedOne() throws {
        let momentum = ServerOptimizer.Config(kind: .momentum, learningRate: 0.5, beta1: 0.9)
        let e = Self.engine(k: 1, optimizer: momentum)
        _ = Self.delta(e, "a", seq: 1, [1, 1, 1, 1, 1, 1])
        #expect(e.flushBufferIfReady(now: .now).count == 1)
        let saved = try Checkpoint.decode(try Checkpoint.encode(e.checkpointState()))
        #expect(saved.optimizer?.kind == "momentum" && saved.optimizer?.steps == 1)
        // Restart: an engine from the checkpoint, its buffer resuming the moments.
        let r = MergeEngine(resuming: saved, rule: e.rule, dedupWindow: 64)
        r.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 1, maxWait: nil, optimizer: momentum), parameterCount: 6, resuming: saved.optimizer)
        for x in [e, r] {
            _ = Self.delta(x, "a", seq: 2, base: 1, [1, 1, 1, 1, 1, 1])
            #expect(x.flushBufferIfReady(now: .now).count == 1)
        }
        // m2 = 0.9 * 1 + 1 = 1.9: x = 0.5 + 0.95 = 1.45 in both; without the moments it would be 1.0.
        #expect(Array(r.parameters) == Array(e.parameters))
        for p in r.parameters { #expect(abs(p - 1.45) < 1e-6) }
    }

    @Test func aFullModelIsTheWrongKindForFedBuff() {
        let e = Self.engine(k: 1)
        let o = MergeEngineTests.ingest(e, seq: 1, values: [1, 1, 1, 1, 1, 1])
        #expect(o.reason == .wrongUpdateKind && o.receipt?.decision == .rejected)
        let f = MergeEngineTests.engine()
        let header = Codec.encode(UpdateHeader(runID: MergeEngineTests.runID, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "c", isDelta: true))
        let d = [header, Codec.encodeLayout(MergeEngineTests.layout), [Float](repeating: 1, count: 6).withUnsafeBytes { Array($0) }]
            .withUnsafeRawBuffers { f.ingest($0) }
        #expect(d.reason == .wrongUpdateKind, "FedAsync takes the trained model, not a delta")
    }

    @Test func theNormBoundAppliesToTheDelta() {
        let e = Self.engine(k: 1)
        e.maxUpdateNorm = 1
        e.normPolicy = .clip
        _ = Self.delta(e, "a", seq: 1, [3, 0, 0, 0, 4, 0])
        _ = e.flushBufferIfReady(now: .now)
        let p = Array(e.parameters)
        #expect(abs(p[0] - 0.6) < 1e-6 && abs(p[4] - 0.8) < 1e-6)
    }

    @Test func aNonFullBufferIsFlushedAfterMaxWait() {
        let e = MergeEngineTests.engine()
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 10, maxWait: .seconds(5)), parameterCount: 6)
        _ = Self.delta(e, "a", seq: 1, [1, 1, 1, 1, 1, 1])
        let start = e.buffer!.started!
        #expect(e.flushBufferIfReady(now: start + .seconds(4)).isEmpty)
        #expect(e.flushBufferIfReady(now: start + .seconds(5)).count == 1 && e.version == 1)
    }
}

/// The server optimizers against steps computed by hand.
struct ServerOptimizerTests {
    static func run(_ c: ServerOptimizer.Config, x: [Float], steps ds: [[Float]]) -> (x: [Float], opt: ServerOptimizer) {
        var opt = ServerOptimizer(c, parameterCount: x.count)
        var x = x
        for d in ds { x.withUnsafeMutableBufferPointer { xp in d.withUnsafeBufferPointer { opt.step(model: xp, pseudoGradient: $0) } } }
        return (x, opt)
    }

    @Test func sgd() {
        #expect(Self.run(.init(kind: .sgd, learningRate: 0.5), x: [1, 2], steps: [[2, -4]]).x == [2, 0])
    }

    @Test func momentum() {
        // m1 = d1 = 1; x = 0 + 0.1 * 1 = 0.1; m2 = 0.9 * 1 + 1 = 1.9; x = 0.1 + 0.19 = 0.29
        let r = Self.run(.init(kind: .momentum, learningRate: 0.1, beta1: 0.9), x: [0], steps: [[1], [1]])
        #expect(abs(r.x[0] - 0.29) < 1e-6 && abs(r.opt.m[0] - 1.9) < 1e-6)
    }

    @Test func adagrad() {
        // v = 4; x = 0 + 1 * 2 / (2 + 0.001)
        let r = Self.run(.init(kind: .adagrad, learningRate: 1, epsilon: 0.001), x: [0], steps: [[2]])
        #expect(abs(r.x[0] - Float(2 / 2.001)) < 1e-6 && r.opt.v[0] == 4)
    }

    @Test func adamAndYogi() {
        // m = 0.1 * 2 = 0.2; adam v = 0.01 * 4 = 0.04; x = 0.2 / (0.2 + 0.001) * 0.1
        let adam = Self.run(.init(kind: .adam, learningRate: 0.1, beta1: 0.9, beta2: 0.99, epsilon: 0.001), x: [0], steps: [[2]])
        #expect(abs(adam.x[0] - Float(0.1 * 0.2 / 0.201)) < 1e-6)
        // yogi from v = 0 < d^2: v = 0 - 0.01 * 4 * (-1) = 0.04, the same first step; then v grows additively.
        let yogi = Self.run(.init(kind: .yogi, learningRate: 0.1, beta1: 0.9, beta2: 0.99, epsilon: 0.001), x: [0], steps: [[2], [2]])
        // step 2: m = 0.9 * 0.2 + 0.2 = 0.38; v = 0.04 + 0.04 = 0.08
        #expect(abs(yogi.opt.v[0] - 0.08) < 1e-6 && abs(yogi.opt.m[0] - 0.38) < 1e-6)
        let x2 = Float(0.1 * 0.2 / 0.201) + Float(0.1 * 0.38 / (0.08.squareRoot() + 0.001))
        #expect(abs(yogi.x[0] - x2) < 1e-5)
    }

    @Test func aStepNeverMakesTheModelNonFinite() {
        let r = Self.run(.init(kind: .sgd, learningRate: 1), x: [.greatestFiniteMagnitude, 1], steps: [[.greatestFiniteMagnitude, 1]])
        #expect(r.x == [.greatestFiniteMagnitude, 2])
    }

    @Test func invalidSettingsAreNamed() {
        #expect(ServerOptimizer.Config(learningRate: 0).validationError()?.contains("learning_rate") == true)
        #expect(ServerOptimizer.Config(beta1: 1).validationError()?.contains("beta1") == true)
        #expect(FedBuffConfig(bufferSize: 0).validationError()?.contains("buffer_size") == true)
    }
}
