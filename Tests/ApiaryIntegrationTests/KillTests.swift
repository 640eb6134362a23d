import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

/// Watches every receipt and broadcast of a fleet, as an auditor would.
final class FleetAuditor {
    let context: Context
    let sub: Socket
    let poller = Poller()
    /// (client, seq) -> model version of its merged receipts (more than one entry = merged twice).
    var merged: [String: [UInt64]] = [:]
    var maxReceiptedVersion: UInt64 = 0
    var latestModel: (version: UInt64, parameters: [Float])?
    var runID: UInt64?
    /// Every receipt seen, in order.
    var receipts: [Receipt] = []

    init(endpoint: String) throws {
        context = try Context()
        sub = try context.socket(.sub)
        try sub.set(.subscribe, Topic.model)
        try sub.set(.subscribe, Topic.receiptPrefix)
        try sub.set(.receiveHighWaterMark, 0)  // an auditor must not miss receipts
        try sub.connect(endpoint)
        poller.add(sub)
    }

    /// Reads everything that arrives for `seconds`; returns the broadcast versions seen.
    @discardableResult
    func pump(seconds: Double) async throws -> [UInt64] {
        var versions: [UInt64] = []
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            // Never block the cooperative pool: look, then sleep asynchronously.
            guard try poller.poll(timeoutMilliseconds: 0) > 0 else { try await Task.sleep(for: .milliseconds(10)); continue }
            while let m = try sub.receiveMultipart(dontWait: true) {
                let isModel = m.frames[0].withUnsafeBytes { $0.elementsEqual(Topic.model) }
                if isModel {
                    if let (h, values) = try? m.withFrameBytes({ f throws(WireError) in
                        let (h, p) = try Codec.decodeModelChunk(f)
                        return (h, Array(p.bindMemory(to: Float.self)))
                    }), h.chunkCount == 1 {
                        latestModel = (h.version, values)
                        runID = h.runID
                        versions.append(h.version)
                    }
                } else if let r = try? m.withFrameBytes({ f throws(WireError) in try Codec.decodeReceipt(f) }) {
                    receipts.append(r)
                    guard r.decision == .merged else { continue }
                    merged["\(r.clientID)#\(r.seq)", default: []].append(r.modelVersion)
                    maxReceiptedVersion = max(maxReceiptedVersion, r.modelVersion)
                }
            }
        } while Date() < deadline
        return versions
    }
}

@Suite("Crash safety: the aggregator is killed with SIGKILL during training", .serialized)
struct KillTests {
    /// APIARY_KILLS sets the number of kills (make kill-test runs 20).
    static let kills = Int(ProcessInfo.processInfo.environment["APIARY_KILLS"] ?? "") ?? 3

    @Test("no acknowledged merge is lost or repeated across SIGKILLs, and training reaches its target")
    func killAndRestart() async throws {
        let ports = try freePorts(3)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-kill-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = [
            "ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
            "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "LOG_LEVEL": "notice", "PROGRESS_INTERVAL_S": "0",
            "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("checkpoints").path, "CHECKPOINT_INTERVAL_S": "0.05",
            "LEDGER_PATH": dir.appendingPathComponent("ledger.sqlite").path,
            "LIMITS_RECEIPT_TIMEOUT_S": "1", "LIMITS_DEDUP_WINDOW": "100000", "PUBLISH_HEARTBEAT_S": "0.3", "SECURITY_INSECURE": "true",
        ]
        var rng = SplitMix64(seed: 2026)
        var aggregator = try Child(["aggregator"], environment: env, name: "kill-aggregator-0")
        let clients = try (0..<8).map { k in
            try Child(["client", "--id", "k\(k)", "--partition", "\(k * 2)", "--delay", "0.02"], environment: env, name: "kill-client-\(k)")
        }
        let auditor = try FleetAuditor(endpoint: env["ENDPOINTS_MODEL"]!)

        for kill in 0..<Self.kills {
            // Train for a random while, then kill the aggregator mid-flight.
            try await auditor.pump(seconds: 0.5 + Double(rng.next() % 1500) / 1000)
            await aggregator.kill9()
            try await auditor.pump(seconds: 0.05)  // whatever the dead process had sent
            let acknowledged = auditor.maxReceiptedVersion
            aggregator = try Child(["aggregator"], environment: env, name: "kill-aggregator-\(kill + 1)")
            var first: UInt64?
            let deadline = Date().addingTimeInterval(20)
            while first == nil && Date() < deadline { first = try await auditor.pump(seconds: 0.1).first }
            let resumed = try #require(first, "no broadcast after restart \(kill + 1):\n\(aggregator.log)")
            // Versions never go back past the last durable receipt.
            #expect(resumed >= acknowledged, "restart \(kill + 1) resumed at \(resumed), below acknowledged \(acknowledged)")
        }

        // Train on to the target.
        let test = try SharedWorkload.load().testSet
        var accuracy = 0.0
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && accuracy < 0.85 {
            try await auditor.pump(seconds: 0.3)
            if let m = auditor.latestModel { accuracy = Evaluation.accuracy(parameters: m.parameters, on: test) }
        }
        #expect(accuracy >= 0.85)
        for c in clients { await c.terminate() }
        #expect(await aggregator.terminate() == 0, "aggregator log:\n\(aggregator.log)")
        try await auditor.pump(seconds: 0.1)

        // No update was merged twice, and every merged receipt is in the final state.
        let twice = auditor.merged.filter { $0.value.count > 1 }
        #expect(twice.isEmpty, "merged more than once: \(twice.prefix(5))")
        let final = try #require(Checkpoint.latestValid(in: dir.appendingPathComponent("checkpoints")))
        var missing: [String] = []
        for key in auditor.merged.keys {
            let parts = key.split(separator: "#")
            let outcome = final.state.dedupTable.outcome(client: String(parts[0]), seq: UInt64(parts[1])!)
            if outcome?.decision != .merged { missing.append(key) }
        }
        #expect(missing.isEmpty, "receipted as merged but not in the final state: \(missing.prefix(5))")
        #expect(auditor.merged.count > 50)
        // Every receipted merge has its ledger row, including those whose rows were still
        // queued when a SIGKILL came (caught up from the checkpoint at the next start).
        let rows = try LedgerReader(path: dir.appendingPathComponent("ledger.sqlite").path).recent(limit: 10_000_000)
        let inLedger = Set(rows.filter { $0.decision == .merged }.map { "\($0.clientID)#\($0.seq)#\($0.modelVersion)" })
        let notInLedger = auditor.merged.flatMap { key, versions in versions.map { "\(key)#\($0)" } }.filter { !inLedger.contains($0) }
        #expect(notInLedger.isEmpty, "receipted merges without a ledger row: \(notInLedger.count), \(notInLedger.prefix(5))")
    }

    @Test("FedBuff: deltas in a buffer when the aggregator is killed are not acknowledged and are merged once when resent; a flushed buffer is never applied twice")
    func fedBuffKill() async throws {
        let ports = try freePorts(3)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-killbuf-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = [
            "ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
            "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "LOG_LEVEL": "notice", "PROGRESS_INTERVAL_S": "0",
            "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("checkpoints").path, "CHECKPOINT_INTERVAL_S": "0.05",
            "ALGORITHM": "fedbuff", "FEDBUFF_BUFFER_SIZE": "4", "FEDBUFF_MAX_WAIT_S": "0", "FEDASYNC_STALENESS_FUNCTION": "constant",
            "PUBLISH_HEARTBEAT_S": "0.2", "SECURITY_INSECURE": "true",
        ]
        let auditor = try FleetAuditor(endpoint: env["ENDPOINTS_MODEL"]!)
        var aggregator = try Child(["aggregator"], environment: env, name: "killbuf-0")
        func waitForModel() async throws -> UInt64 {
            auditor.runID = nil
            let deadline = Date().addingTimeInterval(40)
            while auditor.runID == nil && Date() < deadline { try await auditor.pump(seconds: 0.1) }
            return try #require(auditor.runID, "no broadcast; aggregator log:\n\(aggregator.log)")
        }
        let run = try await waitForModel()
        #expect(auditor.latestModel?.version == 0)
        let layout = DigitsModel.layout
        let peers = try (0..<4).map { try RawPeer(model: env["ENDPOINTS_MODEL"]!, update: env["ENDPOINTS_UPDATE"]!, clientID: "b\($0)") }
        let delta = [Float](repeating: 0.01, count: layout.parameterCount)
        func send(_ k: Int) throws {
            try peers[k].send(frames: [Codec.encode(UpdateHeader(runID: run, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "b\(k)", isDelta: true)),
                                       Codec.encodeLayout(layout), delta.withUnsafeBytes { Array($0) }])
        }
        // Three deltas in a buffer of four: nothing is acknowledged. Then SIGKILL.
        for k in 0..<3 { try send(k) }
        try await auditor.pump(seconds: 1)
        #expect(auditor.receipts.isEmpty, "a buffered delta has no receipt before its flush")
        await aggregator.kill9()
        aggregator = try Child(["aggregator"], environment: env, name: "killbuf-1")
        #expect(try await waitForModel() == run, "the same run, from its checkpoint")
        #expect(auditor.latestModel?.version == 0, "the lost buffer was never applied")

        // The clients resend (same seqs) and a fourth delta fills the buffer: one flush. Like a
        // client they resend until receipted: what a PUSH writes into the connection of a
        // process that was just killed is lost.
        func sendUntilReceipted() async throws {
            let deadline = Date().addingTimeInterval(40)
            while auditor.receipts.count < 4 && Date() < deadline {
                for k in 0..<4 where !auditor.receipts.contains(where: { $0.clientID == "b\(k)" }) { try send(k) }
                try await auditor.pump(seconds: 1)
            }
        }
        try await sendUntilReceipted()
        #expect(auditor.receipts.count == 4 && auditor.receipts.allSatisfy { $0.decision == .merged && $0.modelVersion == 1 },
                "\(auditor.receipts)\n\(aggregator.log)")
        try await auditor.pump(seconds: 0.5)
        let model = try #require(auditor.latestModel)
        #expect(model.version == 1 && model.parameters.allSatisfy { abs($0 - 0.01) < 1e-7 }, "x = 0 + 1 * mean of the four deltas")

        // Killed after the flush was receipted: the restart has it, and resends are duplicates.
        await aggregator.kill9()
        aggregator = try Child(["aggregator"], environment: env, name: "killbuf-2")
        #expect(try await waitForModel() == run)
        auditor.receipts = []
        try await sendUntilReceipted()
        #expect(auditor.receipts.count == 4 && auditor.receipts.allSatisfy { $0.decision == .duplicate && $0.modelVersion == 1 })
        try await auditor.pump(seconds: 0.5)
        #expect(auditor.latestModel?.version == 1 && auditor.latestModel?.parameters.allSatisfy { abs($0 - 0.01) < 1e-7 } == true,
                "a flushed buffer is applied once")
        #expect(await aggregator.terminate() == 0)
    }
}
