import ApiaryCore
import ApiaryMerge
import ApiaryProtocol
import Testing

/// No client can be locked out of the dedup window (issue 15 item 2): a far-ahead seq in an
/// epoch is refused without being recorded, and a new client epoch starts a fresh window.
struct ClientEpochTests {
    static let values: [Float] = [2, 2, 2, 2, 2, 2]

    static func update(_ e: MergeEngine, client: String = "c1", epoch: UInt64, seq: UInt64, base: UInt64? = nil,
                       delta: Bool = false) -> MergeEngine.Outcome {
        let header = Codec.encode(UpdateHeader(runID: MergeEngineTests.runID, baseVersion: base ?? e.version, seq: seq, sampleCount: 10,
                                               clientID: client, isDelta: delta, epoch: epoch))
        return [header, Codec.encodeLayout(MergeEngineTests.layout), values.withUnsafeBytes { Array($0) }].withUnsafeRawBuffers { e.ingest($0) }
    }

    static func report(_ e: MergeEngine, epoch: UInt64, seq: UInt64) -> MergeEngine.Outcome {
        let r = EvaluationReport(runID: MergeEngineTests.runID, version: e.version, seq: seq, exampleCount: 1, clientID: "c1",
                                 dataset: "d", metrics: ["accuracy": 1], epoch: epoch)
        return Codec.encode(r).withUnsafeRawBuffers { e.ingestReport($0) }
    }

    @Test("a far-ahead seq is refused as seq_out_of_range, not recorded, and later normal seqs still merge",
          arguments: [UInt64.max, UInt64(10 + 8 + 1)])
    func farAheadSeqCannotLockOut(far: UInt64) {
        let e = MergeEngineTests.engine(maxStaleness: 100)  // dedup window 8
        #expect(Self.update(e, epoch: 77, seq: 10).reason == .none)
        let bad = Self.update(e, epoch: 77, seq: far)
        #expect(bad.reason == .seqOutOfRange && bad.receipt?.decision == .rejected && bad.receipt?.reason == .seqOutOfRange)
        #expect(bad.receipt?.message.contains("highest seq 10") == true, "\(bad.receipt?.message ?? "")")
        #expect(e.version == 1 && e.stats.rejected[.seqOutOfRange] == 1)
        // Its resend is refused again (nothing was recorded), and the client carries on.
        #expect(Self.update(e, epoch: 77, seq: far).reason == .seqOutOfRange)
        for seq: UInt64 in 11...20 {
            let o = Self.update(e, epoch: 77, seq: seq)
            #expect(o.reason == .none && o.receipt?.decision == .merged, "seq \(seq): \(o.detail)")
        }
        #expect(e.version == 11)
    }

    @Test("without an epoch the old rule stays: a far-ahead seq locks that client's epoch 0 out (fixed by sending an epoch)")
    func epochZeroKeepsTheOldRule() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        #expect(Self.update(e, epoch: 0, seq: 10).reason == .none)
        #expect(Self.update(e, epoch: 0, seq: .max).reason == .none)
        #expect(Self.update(e, epoch: 0, seq: 11).detail == "seq 11 is older than the dedup window")
        // The same client id with an epoch merges again.
        #expect(Self.update(e, epoch: 5, seq: 11).reason == .none)
    }

    @Test("a new epoch after a lock-out merges; a late resend of the old epoch is still a duplicate")
    func newEpochAfterLockOut() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        // The old process ran with its seqs at the clock, far ahead (the first seq of an epoch
        // is free, so even this one is taken).
        let old: UInt64 = 1_765_000_000_000_000
        #expect(Self.update(e, epoch: 1, seq: old).reason == .none)
        let merged = e.version
        // The clock stepped back (or the image was restored): lower seqs, but a new epoch.
        for seq: UInt64 in 1...3 {
            #expect(Self.update(e, epoch: 2, seq: old - 1_000_000 + seq).reason == .none)
        }
        #expect(e.version == merged + 3)
        // The old process's update comes again (a late resend): a duplicate of its first outcome.
        let late = Self.update(e, epoch: 1, seq: old)
        #expect(late.reason == .duplicate && late.receipt?.decision == .duplicate && late.receipt?.modelVersion == merged)
        // And the same seq number in the new epoch is its own update.
        #expect(Self.update(e, epoch: 2, seq: old).reason == .seqOutOfRange)  // far ahead of epoch 2's highest
        #expect(e.version == merged + 3)
    }

    @Test("the epoch table survives a checkpoint: a lock-out attempt stays harmless after a restart")
    func checkpointKeepsEpochs() throws {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        #expect(Self.update(e, epoch: 9, seq: 5).reason == .none)
        #expect(Self.update(e, epoch: 9, seq: .max).reason == .seqOutOfRange)
        let saved = try Checkpoint.decode(try Checkpoint.encode(e.checkpointState()))
        let r = MergeEngine(resuming: saved, rule: e.rule, dedupWindow: 8)
        #expect(Self.update(r, epoch: 9, seq: 5).reason == .duplicate)
        #expect(Self.update(r, epoch: 9, seq: .max).reason == .seqOutOfRange)
        #expect(Self.update(r, epoch: 9, seq: 6).reason == .none)
    }

    @Test("evaluation reports share their client epoch's window")
    func reports() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        #expect(Self.update(e, epoch: 3, seq: 100).reason == .none)
        #expect(Self.report(e, epoch: 3, seq: 101).receipt?.decision == .recorded)
        #expect(Self.report(e, epoch: 3, seq: 100).receipt?.decision == .duplicate)
        #expect(Self.report(e, epoch: 3, seq: .max).receipt?.reason == .seqOutOfRange)
        #expect(Self.report(e, epoch: 4, seq: 100).receipt?.decision == .recorded)  // another process: its own seq 100
    }

    @Test("fedbuff and fedavg keep the epoch of a deferred update: the same seq in two epochs is two updates")
    func deferredModes() {
        let e = MergeEngineTests.engine(maxStaleness: 100)
        e.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 2, maxWait: .seconds(3600)), parameterCount: 6)
        #expect(Self.update(e, epoch: 1, seq: 7, delta: true).receipt == nil)
        #expect(Self.update(e, epoch: 1, seq: 7, delta: true).receipt == nil, "a resend of a buffered delta waits")
        #expect(Self.update(e, epoch: 2, seq: 7, delta: true).receipt == nil, "another epoch's seq 7 is buffered too")
        let done = e.flushBufferIfReady(now: .now)
        #expect(done.count == 2)
        #expect(Self.update(e, epoch: 1, seq: 7, delta: true).reason == .duplicate)
        #expect(Self.update(e, epoch: 2, seq: 7, delta: true).reason == .duplicate)

        let f = MergeEngineTests.engine(maxStaleness: 100)
        f.round = FedAvgRound(config: FedAvgConfig(expectedClients: 2), parameterCount: 6)
        #expect(Self.update(f, epoch: 1, seq: 7).receipt == nil)
        #expect(Self.update(f, epoch: 2, seq: 7).reason == .duplicate, "one contribution per client and round")
        #expect(Self.update(f, client: "c2", epoch: 1, seq: 7).receipt == nil)
        #expect(f.closeRoundIfReady(now: .now).count == 2)
        #expect(Self.update(f, epoch: 1, seq: 7, base: 0).reason == .duplicate)
    }
}
