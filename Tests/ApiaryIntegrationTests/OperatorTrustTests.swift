import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import Testing
import ZeroMQ
import ApiaryTesting

/// Issue 15: what an operator relies on after a bad disk, a crash, a config mistake or a
/// hostile peer.
@Suite("Operator trust: corrupt checkpoints, ledger catch-up, start-up errors, config mistakes, log injection", .serialized)
struct OperatorTrustTests {
    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-trust-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    func aggregator(_ dir: URL, keep: Int = 3, logger: Logger = quietLogger()) throws -> (Aggregator, Aggregator.Endpoints) {
        var c = anyPortConfig()
        c.checkpointDirectory = dir.appendingPathComponent("checkpoints").path
        c.ledgerPath = dir.appendingPathComponent("ledger.sqlite").path
        c.checkpointKeep = keep
        let agg = try Aggregator(config: c, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: logger)
        return (agg, try agg.start())
    }

    /// Sends `count` updates of `client` (seq 1...count) and waits for each merged receipt.
    func merge(_ agg: Aggregator, _ e: Aggregator.Endpoints, client: String, count: Int) throws {
        let peer = try RawPeer(e, clientID: client)
        for seq in 1...UInt64(count) {
            try peer.sendUpdate(runID: agg.runID, base: agg.stats.version, seq: seq, values: [Float](repeating: Float(seq), count: 15))
            let r = try peer.receipt()
            #expect(r.decision == .merged, "\(r)")
        }
    }

    func checkpointNames(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("checkpoints").path)
            .filter { $0.hasSuffix(".safetensors") }.sorted()
    }

    // MARK: Item 1: corrupt checkpoints never count toward keep

    @Test("corrupt checkpoints move to corrupt/ and never evict the new run's: receipted merges survive the next restart",
          arguments: [(keep: 1, corruptAll: false), (keep: 3, corruptAll: true)])
    func corruptCheckpointsDoNotCount(keep: Int, corruptAll: Bool) throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (first, e1) = try aggregator(dir, keep: keep)
        try merge(first, e1, client: "c1", count: 4)
        first.stop()
        // The bad disk: the newest checkpoint (or all of them) cut to 100 bytes.
        let names = try checkpointNames(dir)
        for name in corruptAll ? names : [names.last!] {
            let url = dir.appendingPathComponent("checkpoints").appendingPathComponent(name)
            try Data(try Data(contentsOf: url).prefix(100)).write(to: url)
        }
        let lines = LogLines()
        let (second, e2) = try aggregator(dir, keep: keep, logger: lines.logger())
        let secondRun = second.runID
        // With keep 1 the newest file is the only one: the second start is a new run, as documented.
        if corruptAll || names.count == 1 { #expect(second.stats.version == 0) } else { #expect(secondRun == first.runID) }
        try merge(second, e2, client: "c2", count: 3)
        let receiptedVersion = second.stats.version
        second.stop()
        #expect(lines.lines.contains { $0.message.hasPrefix("skipping corrupt checkpoint") && $0.metadata["moved_to"]?.contains("/corrupt/") == true })
        let corrupt = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("checkpoints/corrupt").path)
        #expect(corrupt.count == (corruptAll ? names.count : 1))
        // Only valid files are left, and the third start resumes the second run with its merges.
        #expect(Checkpoint.invalidFiles(in: dir.appendingPathComponent("checkpoints")).isEmpty)
        let (third, _) = try aggregator(dir, keep: keep)
        defer { third.stop() }
        #expect(third.runID == secondRun)
        #expect(third.stats.version == receiptedVersion)
    }

    @Test("a .tmp- partial checkpoint left by a crash is removed at the next start")
    func temporaryFilesRemoved() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpts = dir.appendingPathComponent("checkpoints")
        try FileManager.default.createDirectory(at: ckpts, withIntermediateDirectories: true)
        let partial = ckpts.appendingPathComponent(".tmp-checkpoint-00000000000000000007.safetensors.123.abc")
        try Data(repeating: 7, count: 4096).write(to: partial)
        let keepMe = ckpts.appendingPathComponent("notes.txt")
        try Data("mine".utf8).write(to: keepMe)
        let (agg, _) = try aggregator(dir)
        agg.stop()
        #expect(!FileManager.default.fileExists(atPath: partial.path))
        #expect(FileManager.default.fileExists(atPath: keepMe.path))
    }

    // MARK: Item 6: the ledger catches up from the checkpoint

    @Test("merged rows a crash lost are added back from the checkpoint's dedup table at start, once")
    func ledgerCatchUp() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ledgerPath = dir.appendingPathComponent("ledger.sqlite").path
        let (first, e) = try aggregator(dir)
        try merge(first, e, client: "k1", count: 5)
        first.stop()
        // What a SIGKILL does to rows still queued: the newest merged rows are not in the file.
        try Ledger.executeOnSeparateConnection(path: ledgerPath, sql: "DELETE FROM updates WHERE client_id = 'k1' AND seq >= 3")
        #expect(try LedgerReader(path: ledgerPath).recent(limit: 100).filter { $0.decision == .merged }.count == 2)
        for _ in 0..<2 {
            let (again, _) = try aggregator(dir)
            again.stop()
            let merged = try LedgerReader(path: ledgerPath).recent(limit: 100).filter { $0.decision == .merged }
            #expect(merged.count == 5)
            #expect(Set(merged.map(\.seq)) == [1, 2, 3, 4, 5])
            #expect(merged.filter { $0.detail == LedgerRow.recoveredDetail }.map(\.seq).sorted() == [3, 4, 5])
        }
    }

    // MARK: Item 7: log injection

    @Test("a client id with a newline and an escape sequence writes no forged line and no control bytes into the log")
    func logInjection() async throws {
        let ports = try freePorts(3)
        let env = ["ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
                   "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "LOG_LEVEL": "info", "SECURITY_INSECURE": "true"]
        let agg = try Child(["aggregator"], environment: env, name: "injection")
        try await eventually("the aggregator to start", within: 20) { agg.log.contains("aggregator started") }
        let context = try Context()
        let push = try context.socket(.push)
        defer { push.close() }
        try push.set(.linger, 0)
        try push.connect(env["ENDPOINTS_UPDATE"]!)
        let forged = "x\n2026-12-02T00:00:00+0000 critical apiary: FORGED LINE\u{1b}[31m"
        let header = Codec.encode(UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 1, clientID: forged))
        try push.send(multipart: [header, Codec.encodeLayout(testLayout), [UInt8](repeating: 0, count: 60)].map { Message($0) })
        try await eventually("the rejection to be logged", within: 20) { agg.log.contains("update rejected") }
        #expect(await agg.terminate() == 0)
        let log = agg.log
        #expect(!log.contains("\u{1b}"), "raw ESC in the log")
        #expect(!log.split(separator: "\n").contains { $0.hasPrefix("2026-12-02T00:00:00+0000") }, "forged line:\n\(log)")
        #expect(log.contains("FORGED LINE\\u{1B}[31m"), "the id is shown escaped:\n\(log)")
    }
}
