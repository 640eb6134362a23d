import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryGateway
import ApiaryLearning
import ApiaryProtocol
import Foundation
import Testing
import ApiaryTesting

@Suite("Gateways: relay mode and the gateway as a whole", .serialized)
struct GatewayTests {
    @Test("rebasing keeps the devices' progress since the last upstream model; taking progress resets it; bad models change nothing")
    func rebaseArithmetic() async throws {
        var config = anyPortConfig(FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 100))
        config.relay = true
        let agg = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        let e = try agg.start()
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "dev")
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 1, count: 15))
        #expect(try peer.receipt().decision == .merged)              // x = 0.5, progress 0.5 from the start model
        try await eventually("the merge counted as unsent progress") { agg.stats.unsentMerges == 1 }  // stats follow the receipt
        #expect(await agg.rebase(onto: [Float](repeating: 2, count: 15)) == 2)
        try await eventually("rebased model published") { agg.latestModel?.version == 2 }
        #expect(agg.latestModel!.parameters == [Float](repeating: 2.5, count: 15))   // 2 + (0.5 - 0)
        let p = try #require(await agg.takeProgress())
        #expect(p.parameters == [Float](repeating: 2.5, count: 15) && p.merges == 1 && p.samples == 1)
        #expect(agg.stats.unsentMerges == 0)
        #expect(await agg.rebase(onto: [Float](repeating: 3, count: 15)) == 3)
        try await eventually("second rebase published") { agg.latestModel?.version == 3 }
        #expect(agg.latestModel!.parameters == [Float](repeating: 3, count: 15))     // the pushed progress is not counted twice
        // A device update trained on version 1 is merged with staleness 2 after the rebases.
        try peer.sendUpdate(runID: agg.runID, base: 1, seq: 2, values: [Float](repeating: 5, count: 15))
        let r = try peer.receipt()
        #expect(r.decision == .merged && r.staleness == 2)
        var bad = [Float](repeating: 3, count: 15)
        bad[4] = .nan
        #expect(await agg.rebase(onto: bad) == nil)
        #expect(await agg.rebase(onto: [1, 2]) == nil)
        #expect(agg.stats.version == 4 && agg.stats.rebases == 2)
        // A push the tier above did not merge: its progress is restored, so the next rebase keeps it.
        try peer.sendUpdate(runID: agg.runID, base: 4, seq: 3, values: [Float](repeating: 9, count: 15))
        #expect(try peer.receipt().decision == .merged)
        try await eventually("merged") { agg.latestModel?.version == 5 }
        let x = agg.latestModel!.parameters[0]
        let pushed = try #require(await agg.takeProgress())
        let delta = try #require(pushed.delta)
        #expect(delta.allSatisfy { abs($0 - (x - 3)) < 1e-6 })   // progress beyond the upstream model 3
        #expect(await agg.restore(progress: delta, in: [0..<15]))
        #expect(await agg.rebase(onto: [Float](repeating: 4, count: 15)) == 6)
        try await eventually("rebased") { agg.latestModel?.version == 6 }
        #expect(agg.latestModel!.parameters.allSatisfy { abs($0 - (4 + x - 3)) < 1e-5 })
        try await eventually("restore counted") { agg.stats.restoredPushes == 1 && agg.stats.unsentMerges == 1 }

        // Not in relay mode: no rebase.
        let plain = try Aggregator(config: anyPortConfig(), layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        #expect(await plain.rebase(onto: [Float](repeating: 2, count: 15)) == nil)
    }

    @Test("a gateway relays the model down, merges its devices and pushes progress up with its upstream base version")
    func inProcessGateway() async throws {
        let top = try Aggregator(config: anyPortConfig(), layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        let te = try top.start()
        defer { top.stop() }
        let down = anyPortConfig()
        let gw = try Gateway(config: GatewayConfig(downstream: down, upstream: clientConfig("gw-1", te), pushEveryMerges: 5, pushInterval: .milliseconds(300)),
                             layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        let ge = try gw.startDownstream()
        let gwTask = Task { try await gw.run() }
        let devices = try (0..<2).map { k in
            try ClientRuntime(config: clientConfig("dev-\(k)", ge), trainer: StepTrainer(layout: testLayout, target: 1, step: 0.5), logger: quietLogger())
        }
        let tasks = devices.map { d in Task { try await d.run() } }
        try await eventually("the top aggregator merged 5 gateway pushes", within: 60) { top.stats.merged >= 5 }
        // Only the gateway talks to the top tier; its pushes carry upstream versions.
        try await eventually("the gateway as the top tier's only client") { top.activity.clients.keys.sorted() == ["gw-1"] }
        #expect(gw.aggregator.stats.rebases >= 2)
        let m = try #require(top.latestModel)
        #expect(m.parameters.allSatisfy { $0 > 0.1 && $0 <= 1 })
        tasks.forEach { $0.cancel() }
        gw.stop()
        _ = try? await gwTask.value
        #expect(gw.aggregator.endpoints != nil)
    }
}

extension GatewayTests {
    @Test("pushes the tier above rejects are not lost: their progress is kept for the next push")
    func rejectedPushesKeepProgress() async throws {
        var strict = anyPortConfig()
        strict.maxUpdateNorm = 1e-6   // every push differs by more: rejected, norm_too_large
        let top = try Aggregator(config: strict, layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        let te = try top.start()
        defer { top.stop() }
        let gw = try Gateway(config: GatewayConfig(downstream: anyPortConfig(), upstream: clientConfig("gw-r", te), pushEveryMerges: 3,
                                                   pushInterval: .milliseconds(200)),
                             layout: testLayout, initialParameters: [Float](repeating: 0, count: 15), logger: quietLogger())
        let ge = try gw.startDownstream()
        let gwTask = Task { try await gw.run() }
        let device = try ClientRuntime(config: clientConfig("dev-r", ge), trainer: StepTrainer(layout: testLayout, target: 1, step: 0.5),
                                       logger: quietLogger())
        let task = Task { try await device.run() }
        try await eventually("two rejected pushes restored", within: 60) { gw.aggregator.stats.restoredPushes >= 2 }
        #expect(top.stats.merged == 0 && top.stats.rejected[.normTooLarge, default: 0] >= 2)
        #expect(gw.uplink.stats.rejected >= 2)
        task.cancel()
        gw.stop()
        _ = try? await gwTask.value
    }
}

@Suite("Separate processes: two gateways with five devices each", .serialized)
struct GatewayProcessTests {
    @Test("2 gateways x 5 device processes train the top model to 0.90; gateways keep merging while the top aggregator is down and catch up after; a killed gateway resumes")
    func twoGateways() async throws {
        let ports = try freePorts(9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-gwproc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ep = { (i: Int, k: Int) in "tcp://127.0.0.1:\(ports[3 * i + k])" }
        let topEnv = ["ENDPOINTS_MODEL": ep(0, 0), "ENDPOINTS_SNAPSHOT": ep(0, 1), "ENDPOINTS_UPDATE": ep(0, 2), "SECURITY_INSECURE": "true",
                      "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("top").path, "LOG_LEVEL": "info", "PROGRESS_INTERVAL_S": "1"]
        func gatewayEnv(_ g: Int) -> [String: String] {
            ["ENDPOINTS_MODEL": ep(g, 0), "ENDPOINTS_SNAPSHOT": ep(g, 1), "ENDPOINTS_UPDATE": ep(g, 2), "SECURITY_INSECURE": "true",
             "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("gw-\(g)").path, "EVALUATION_ENABLED": "false",
             "UPSTREAM_CLIENT_ID": "gateway-\(g)", "UPSTREAM_ENDPOINTS_MODEL": ep(0, 0), "UPSTREAM_ENDPOINTS_SNAPSHOT": ep(0, 1),
             "UPSTREAM_ENDPOINTS_UPDATE": ep(0, 2), "UPSTREAM_SECURITY_INSECURE": "true", "UPSTREAM_CLIENT_NEW_MODEL_WAIT_S": "0.1",
             "UPSTREAM_CLIENT_MAX_BACKOFF_S": "1", "UPSTREAM_CLIENT_RECEIPT_TIMEOUT_S": "1",
             "GATEWAY_PUSH_EVERY_MERGES": "10", "GATEWAY_PUSH_INTERVAL_S": "0.5", "LOG_LEVEL": "info", "PROGRESS_INTERVAL_S": "1"]
        }
        var top = try Child(["aggregator"], environment: topEnv, name: "top")
        var gateways = try (1...2).map { try Child(["gateway"], environment: gatewayEnv($0), name: "gateway-\($0)") }
        let devices = try (0..<10).map { k in
            let g = 1 + k / 5
            return try Child(["client", "--id", "dev-\(k)", "--partition", "\(2 * k)", "--delay", "0.02"],
                             environment: ["ENDPOINTS_MODEL": ep(g, 0), "ENDPOINTS_SNAPSHOT": ep(g, 1), "ENDPOINTS_UPDATE": ep(g, 2),
                                           "SECURITY_INSECURE": "true", "CLIENT_MAX_BACKOFF_S": "1"], name: "dev-\(k)")
        }
        let watcher = try ModelWatcher(endpoint: ep(0, 0))
        let test = try SharedWorkload.load().testSet
        var accuracy = 0.0
        var deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            try await watcher.pump(seconds: 0.5)
            if let m = watcher.latest {
                accuracy = Evaluation.accuracy(parameters: m.parameters, on: test)
                if accuracy >= 0.90 { break }
            }
        }
        #expect(accuracy >= 0.90, "top log:\n\(top.log)\ngateway log:\n\(gateways[0].log)")

        // The uplink drops: the top aggregator dies. Gateway 1 keeps merging its devices.
        let topVersion = watcher.latest?.version ?? 0
        let runID = watcher.latest?.runID ?? 0
        await top.kill9()
        let local = try ModelWatcher(endpoint: ep(1, 0))
        try await local.pump(seconds: 1)
        let before = local.latest?.version ?? 0
        try await local.pump(seconds: 3)
        let after = local.latest?.version ?? 0
        #expect(after >= before + 20, "gateway-1 merged \(after - before) versions while cut off\n\(gateways[0].log)")

        // It comes back from its checkpoint (same run): both gateways push again.
        top = try Child(["aggregator"], environment: topEnv, name: "top-2")
        deadline = Date().addingTimeInterval(60)
        var resumed: UInt64 = 0
        while Date() < deadline {
            try await watcher.pump(seconds: 0.5)
            if let m = watcher.latest, m.runID == runID, m.version >= topVersion + 20 { resumed = m.version; break }
        }
        #expect(resumed >= topVersion + 20, "top after restart:\n\(top.log)\ngateway log:\n\(gateways[0].log)")
        #expect(top.log.contains("resuming from checkpoint"))

        // Gateway 2 crashes and restarts from its checkpoint: its devices carry on through it.
        let g2 = try ModelWatcher(endpoint: ep(2, 0))
        try await g2.pump(seconds: 1)
        let g2Before = try #require(g2.latest)
        await gateways[1].kill9()
        gateways[1] = try Child(["gateway"], environment: gatewayEnv(2), name: "gateway-2b")
        deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            try await g2.pump(seconds: 0.5)
            if let m = g2.latest, m.runID == g2Before.runID, m.version >= g2Before.version + 20 { break }
        }
        #expect(g2.latest?.runID == g2Before.runID && (g2.latest?.version ?? 0) >= g2Before.version + 20,
                "restarted gateway log:\n\(gateways[1].log)")
        #expect(gateways[1].log.contains("resuming from checkpoint"))
        for d in devices { #expect(await d.terminate() == 0, "device log:\n\(d.log)") }
        for g in gateways {
            #expect(await g.terminate() == 0, "gateway log:\n\(g.log)")
            #expect(g.log.contains("gateway started"))
        }
        #expect(await top.terminate() == 0)
    }
}
