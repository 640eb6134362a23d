import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryLearning
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

/// Shard endpoints on ipc files in a fresh directory (known before binding, unlike `:*`).
struct ShardSet {
    let dir: URL
    let map: [ShardConfig.Endpoints]

    init(count: Int) throws {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-shards-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        dir = d
        map = (0..<count).map { i in
            .init(model: "ipc://\(d.path)/s\(i)-model", snapshot: "ipc://\(d.path)/s\(i)-snap", update: "ipc://\(d.path)/s\(i)-upd")
        }
    }

    func config(_ i: Int, rule: FedAsync, boundaries: [Int]? = nil) -> AggregatorConfig {
        var c = AggregatorConfig(modelEndpoint: map[i].model, snapshotEndpoint: map[i].snapshot, updateEndpoint: map[i].update,
                                 rule: rule, publishInterval: .milliseconds(5), heartbeatInterval: .milliseconds(50), receiptTimeout: .milliseconds(500),
                                 insecure: true)
        c.shard = ShardConfig(index: i, map: map, boundaries: boundaries)
        return c
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
}

@Suite("Parameter shards", .serialized)
struct ShardTests {
    let rule = FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 1000)

    @Test("the same updates in the same order give bit-identical models with 1 and with 3 shards")
    func equivalence() async throws {
        let shards = try ShardSet(count: 3)
        defer { shards.remove() }
        var rng = SplitMix64(seed: 0x5A4D)
        let initial = (0..<testLayout.parameterCount).map { _ in Float(rng.nextDouble() * 2 - 1) }

        let whole = try Aggregator(config: anyPortConfig(rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        // A split that cuts tensor w in two places and puts its tail with all of b.
        let parts = try (0..<3).map { i in
            try Aggregator(config: shards.config(i, rule: rule, boundaries: [0, 5, 10, 15]), layout: testLayout,
                           initialParameters: initial, logger: quietLogger())
        }
        let wholeEndpoints = try whole.start()
        let partEndpoints = try parts.map { try $0.start() }
        defer {
            whole.stop()
            parts.forEach { $0.stop() }
        }
        #expect(parts.map(\.range) == [0..<5, 5..<10, 10..<15])

        let clients = ["c0", "c1", "c2"]
        let wholePeers = try clients.map { try RawPeer(wholeEndpoints, clientID: $0) }
        let partPeers = try partEndpoints.map { e in try clients.map { try RawPeer(e, clientID: $0) } }

        var version: UInt64 = 0
        for k in 0..<45 {
            let c = k % 3
            // Bases lag by 0 to 3 versions: staleness (and so the mixing weight) varies.
            let base = version - min(version, UInt64(k % 4))
            let values = (0..<testLayout.parameterCount).map { _ in Float(rng.nextDouble() * 4 - 2) }
            try wholePeers[c].sendUpdate(runID: whole.runID, base: base, seq: UInt64(k + 1), values: values)
            let r = try wholePeers[c].receipt()
            #expect(r.decision == .merged)
            for (i, agg) in parts.enumerated() {
                let slice = Array(values[agg.range])
                let header = Codec.encode(UpdateHeader(runID: agg.runID, baseVersion: base, seq: UInt64(k + 1), sampleCount: 1, clientID: clients[c]))
                try partPeers[i][c].send(frames: [header, Codec.encodeLayout(testLayout), slice.withUnsafeBytes { Array($0) }])
                let pr = try partPeers[i][c].receipt()
                #expect(pr.decision == .merged && pr.staleness == r.staleness && pr.mixingWeight == r.mixingWeight && pr.modelVersion == r.modelVersion)
            }
            version = r.modelVersion
        }
        try await eventually("the last version published") {
            whole.latestModel?.version == version && parts.allSatisfy { $0.latestModel?.version == version }
        }
        let one = try #require(whole.latestModel).parameters
        let three = parts.flatMap { $0.latestModel!.parameters }
        #expect(one.map(\.bitPattern) == three.map(\.bitPattern))
        #expect(one != initial)
    }

    @Test("FedBuff with Adam: the same deltas in the same order give bit-identical models with 1 and with 3 shards, each shard flushing its own buffer")
    func fedBuffEquivalence() async throws {
        let shards = try ShardSet(count: 3)
        defer { shards.remove() }
        var rng = SplitMix64(seed: 0xFEDB)
        let initial = (0..<testLayout.parameterCount).map { _ in Float(rng.nextDouble() * 2 - 1) }
        let buffered = FedBuffConfig(bufferSize: 3, maxWait: nil, optimizer: .init(kind: .adam, learningRate: 0.05))
        var wholeConfig = anyPortConfig(rule)
        wholeConfig.buffer = buffered
        let whole = try Aggregator(config: wholeConfig, layout: testLayout, initialParameters: initial, logger: quietLogger())
        let parts = try (0..<3).map { i in
            var c = shards.config(i, rule: rule, boundaries: [0, 4, 11, 15])
            c.buffer = buffered
            return try Aggregator(config: c, layout: testLayout, initialParameters: initial, logger: quietLogger())
        }
        let wholeEndpoints = try whole.start()
        let partEndpoints = try parts.map { try $0.start() }
        defer {
            whole.stop()
            parts.forEach { $0.stop() }
        }
        // One peer sends every delta, so that they reach each buffer in the same order (sums
        // in another order round differently); it stands for three devices by its seqs.
        let clients = ["c0"]
        let wholePeers = try clients.map { try RawPeer(wholeEndpoints, clientID: $0) }
        let partPeers = try partEndpoints.map { e in try clients.map { try RawPeer(e, clientID: $0) } }
        func frames(_ run: UInt64, base: UInt64, seq: UInt64, client: String, _ d: [Float]) -> [[UInt8]] {
            [Codec.encode(UpdateHeader(runID: run, baseVersion: base, seq: seq, sampleCount: 1, clientID: client, isDelta: true)),
             Codec.encodeLayout(testLayout), d.withUnsafeBytes { Array($0) }]
        }
        var version: UInt64 = 0
        for flush in 0..<8 {
            // Three deltas per flush; one of them from the version before (staleness 1).
            for c in 0..<3 {
                let base = (c == 2 && version > 0) ? version - 1 : version
                let seq = UInt64(flush * 3 + c + 1)
                let d = (0..<testLayout.parameterCount).map { _ in Float(rng.nextDouble() - 0.5) }
                try wholePeers[0].send(frames: frames(whole.runID, base: base, seq: seq, client: "c0", d))
                for (i, agg) in parts.enumerated() {
                    try partPeers[i][0].send(frames: frames(agg.runID, base: base, seq: seq, client: "c0", Array(d[agg.range])))
                }
            }
            // The receipts come with the flush: merged at the same version, the same weight.
            for _ in 0..<3 {
                let r = try wholePeers[0].receipt()
                #expect(r.decision == .merged && r.modelVersion == version + 1)
                for i in 0..<3 {
                    let pr = try partPeers[i][0].receipt()
                    #expect(pr.decision == .merged && pr.modelVersion == r.modelVersion && pr.mixingWeight == r.mixingWeight && pr.staleness == r.staleness)
                }
            }
            version += 1
        }
        try await eventually("the last version published") {
            whole.latestModel?.version == version && parts.allSatisfy { $0.latestModel?.version == version }
        }
        let one = try #require(whole.latestModel).parameters
        let three = parts.flatMap { $0.latestModel!.parameters }
        #expect(one.map(\.bitPattern) == three.map(\.bitPattern))
        #expect(one != initial)
    }

    @Test("a shard refuses a slice of the wrong size, and a shard map that does not split the model")
    func badSlicesAndMaps() async throws {
        let shards = try ShardSet(count: 3)
        defer { shards.remove() }
        let initial = [Float](repeating: 0, count: testLayout.parameterCount)
        let agg = try Aggregator(config: shards.config(1, rule: rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        let e = try agg.start()
        defer { agg.stop() }
        #expect(agg.range == 5..<10)
        let peer = try RawPeer(e, clientID: "c0")
        // The whole model is not this shard's slice.
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 1, count: 15))
        let r = try peer.receipt()
        #expect(r.decision == .rejected && r.reason == .layoutMismatch && r.message.contains("shard"))
        #expect(agg.stats.version == 0)

        for (bounds, fragment) in [([0, 5, 5, 15], "ascend"), ([0, 7, 3, 15], "ascend"), ([1, 5, 10, 15], "starts at"),
                                 ([0, 5, 10, 14], "ends at"), ([0, 15], "needs 4")] {
            let bad = shards.config(0, rule: rule, boundaries: bounds)
            #expect {
                _ = try Aggregator(config: bad, layout: testLayout, initialParameters: initial, logger: quietLogger())
            } throws: { "\($0)".contains(fragment) }
        }
        var outOfMap = shards.config(0, rule: rule)
        outOfMap.shard?.index = 3
        #expect(throws: AggregatorError.self) {
            _ = try Aggregator(config: outOfMap, layout: testLayout, initialParameters: initial, logger: quietLogger())
        }
    }

    @Test("two shards given the same checkpoint directory: the second refuses to start; the directory is free again after a stop")
    func stateDirectoryLock() async throws {
        let shards = try ShardSet(count: 2)
        defer { shards.remove() }
        let initial = [Float](repeating: 0, count: testLayout.parameterCount)
        let dir = shards.dir.appendingPathComponent("state").path
        var c0 = shards.config(0, rule: rule)
        c0.checkpointDirectory = dir
        var c1 = shards.config(1, rule: rule)
        c1.checkpointDirectory = dir
        let first = try Aggregator(config: c0, layout: testLayout, initialParameters: initial, logger: quietLogger())
        try first.start()
        let second = try Aggregator(config: c1, layout: testLayout, initialParameters: initial, logger: quietLogger())
        #expect { try second.start() } throws: { "\($0)".contains("in use by another aggregator") }
        first.stop()
        let again = try Aggregator(config: c0, layout: testLayout, initialParameters: initial, logger: quietLogger())
        try again.start()
        #expect(again.stats.version == 0)
        again.stop()
    }

    @Test("a shard that answers as another shard is ignored until the right one serves its range")
    func misconfiguredShard() async throws {
        let shards = try ShardSet(count: 3)
        defer { shards.remove() }
        let initial = [Float](repeating: 0, count: testLayout.parameterCount)
        let good = try (0..<2).map { i in
            try Aggregator(config: shards.config(i, rule: rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        }
        try good.forEach { try $0.start() }
        defer { good.forEach { $0.stop() } }
        // Bound at shard 2's endpoints, but configured as shard 1.
        var wrongConfig = shards.config(1, rule: rule)
        (wrongConfig.modelEndpoint, wrongConfig.snapshotEndpoint, wrongConfig.updateEndpoint) = (shards.map[2].model, shards.map[2].snapshot, shards.map[2].update)
        let wrong = try Aggregator(config: wrongConfig, layout: testLayout, initialParameters: initial, logger: quietLogger())
        try wrong.start()
        let m = shards.map[0]
        let log = LogLines()
        let client = try ClientRuntime(config: ClientConfig(clientID: "mc", modelEndpoint: m.model, snapshotEndpoint: m.snapshot, updateEndpoint: m.update,
                                                            snapshotTimeout: .milliseconds(300), maxBackoff: .seconds(1), insecure: true),
                                       trainer: StepTrainer(layout: testLayout), logger: log.logger(level: .error))
        let task = Task { try await client.run() }
        defer { task.cancel() }
        // The wrong shard answered, was ignored, was asked again after the timeout and
        // ignored again: without its slice the model cannot be complete.
        func ignored() -> Int { log.lines.filter { $0.message.hasPrefix("shard answered as another shard") && $0.metadata["got"] == "1" }.count }
        try await eventually("the wrong shard's answer to be ignored twice", within: 20) { ignored() >= 2 }
        #expect(client.currentModel == nil)
        #expect(good.allSatisfy { $0.stats.merged == 0 } && wrong.stats.merged == 0)
        wrong.stop()
        let right = try Aggregator(config: shards.config(2, rule: rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        try right.start()
        defer { right.stop() }
        try await eventually("the client trains once shard 2 is right", within: 30) { right.stats.merged >= 3 && good.allSatisfy { $0.stats.merged >= 3 } }
        #expect(client.currentModel?.parameters.count == 15)
    }

    @Test("a client that knows one shard joins all three, trains on the assembled model and pushes each slice to its shard")
    func clientsAcrossShards() async throws {
        let shards = try ShardSet(count: 3)
        defer { shards.remove() }
        let initial = [Float](repeating: 0, count: testLayout.parameterCount)
        var parts = try (0..<3).map { i in
            try Aggregator(config: shards.config(i, rule: rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        }
        try parts.forEach { try $0.start() }
        defer { parts.forEach { $0.stop() } }

        // Every client is configured with shard 0 only (or shard 2: any shard will do).
        let runtimes = try (0..<3).map { k in
            let m = shards.map[k == 2 ? 2 : 0]
            let cfg = ClientConfig(clientID: "sc\(k)", modelEndpoint: m.model, snapshotEndpoint: m.snapshot, updateEndpoint: m.update,
                                   snapshotTimeout: .milliseconds(300), newModelWait: .milliseconds(100), maxBackoff: .seconds(1), insecure: true)
            return try ClientRuntime(config: cfg, trainer: StepTrainer(layout: testLayout, target: 1, step: 0.5), logger: quietLogger())
        }
        let tasks = runtimes.map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        try await eventually("30 merges on every shard", within: 60) { parts.allSatisfy { $0.stats.merged >= 30 } }
        for c in runtimes {
            #expect(c.stats.shards == 3)
            #expect(c.stats.merged >= 1)
        }
        // Every shard merged slices of the same updates and moved toward the clients' target.
        for p in parts {
            let m = try #require(p.latestModel)
            #expect(m.parameters.count == p.range.count)
            #expect(m.parameters.allSatisfy { $0 > 0.5 && $0 <= 1 })
        }
        // The clients' model is the three slices side by side.
        let assembled = try #require(runtimes[0].currentModel)
        #expect(assembled.parameters.count == testLayout.parameterCount)
        #expect(assembled.parameters.allSatisfy { $0 > 0.3 && $0 <= 1 })

        // Shard 1 restarts without its state (a new run at version 0): the clients notice,
        // fetch its new slice and go on; the other shards never stopped.
        let oldRun = parts[1].runID
        parts[1].stop()
        parts[1] = try Aggregator(config: shards.config(1, rule: rule), layout: testLayout, initialParameters: initial, logger: quietLogger())
        try parts[1].start()
        #expect(parts[1].runID != oldRun)
        let merged0 = parts[0].stats.merged
        try await eventually("the new shard 1 merges slices again", within: 60) { parts[1].stats.merged >= 10 }
        try await eventually("shard 0 carried on") { parts[0].stats.merged >= merged0 + 10 }
    }
}
