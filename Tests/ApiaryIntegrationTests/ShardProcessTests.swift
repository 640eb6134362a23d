import ApiaryClient
import ApiaryCore
import ApiaryLearning
import Foundation
import Testing
import ApiaryTesting

/// A trainer that never trains: a client runtime with it only follows the model.
struct FollowOnly: Trainer {
    let layout: ParameterLayout
    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        try await Task.sleep(for: .seconds(3600))
        throw CancellationError()
    }
}

@Suite("Separate processes: three parameter shards", .serialized)
struct ShardProcessTests {
    @Test("three shard processes and ten client processes train the digits model to 0.90; a killed shard resumes its slice from its checkpoint")
    func threeShards() async throws {
        let ports = try freePorts(9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-shardproc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ep = { (i: Int, k: Int) in "tcp://127.0.0.1:\(ports[3 * i + k])" }
        let common: [String: String] = [
            "SHARDS_MODEL": (0..<3).map { ep($0, 0) }.joined(separator: ","),
            "SHARDS_SNAPSHOT": (0..<3).map { ep($0, 1) }.joined(separator: ","),
            "SHARDS_UPDATE": (0..<3).map { ep($0, 2) }.joined(separator: ","),
            "SECURITY_INSECURE": "true", "LOG_LEVEL": "info", "PROGRESS_INTERVAL_S": "2",
        ]
        func shardEnv(_ i: Int) -> [String: String] {
            common.merging(["SHARDS_INDEX": "\(i)", "ENDPOINTS_MODEL": ep(i, 0), "ENDPOINTS_SNAPSHOT": ep(i, 1), "ENDPOINTS_UPDATE": ep(i, 2),
                            "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("shard-\(i)").path]) { $1 }
        }
        var shards = try (0..<3).map { try Child(["aggregator"], environment: shardEnv($0), name: "shard-\($0)") }
        // Clients know shard 0 only; the snapshot reply tells them the rest.
        let clientEnv = ["ENDPOINTS_MODEL": ep(0, 0), "ENDPOINTS_SNAPSHOT": ep(0, 1), "ENDPOINTS_UPDATE": ep(0, 2),
                         "SECURITY_INSECURE": "true", "LOG_LEVEL": "info"]
        let clients = try (0..<10).map { k in
            try Child(["client", "--id", "shardproc-\(k)", "--partition", "\(2 * k)", "--delay", "0.02"], environment: clientEnv, name: "sclient-\(k)")
        }
        let observer = try ClientRuntime(
            config: ClientConfig(clientID: "observer", modelEndpoint: ep(1, 0), snapshotEndpoint: ep(1, 1), updateEndpoint: ep(1, 2),
                                 snapshotTimeout: .milliseconds(500), maxBackoff: .seconds(1), insecure: true),
            trainer: FollowOnly(layout: SoftmaxRegression.digitsLayout), logger: quietLogger())
        let follow = Task { try await observer.run() }
        defer { follow.cancel() }
        let test = try SharedWorkload.load().testSet
        func accuracyReached(_ target: Double, within seconds: Double) async throws -> Double {
            var accuracy = 0.0
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                try await Task.sleep(for: .milliseconds(300))
                guard let m = observer.currentModel else { continue }
                accuracy = Evaluation.accuracy(parameters: m.parameters, on: test)
                if accuracy >= target { break }
            }
            return accuracy
        }
        // Halfway, kill shard 1 and restart it: it resumes its slice from its own checkpoint.
        let half = try await accuracyReached(0.6, within: 90)
        #expect(half >= 0.6, "shard 0 log:\n\(shards[0].log)")
        await shards[1].kill9()
        shards[1] = try Child(["aggregator"], environment: shardEnv(1), name: "shard-1b")
        let accuracy = try await accuracyReached(0.90, within: 120)
        #expect(accuracy >= 0.90, "shard 1 log:\n\(shards[1].log)")
        #expect(observer.stats.shards == 3)
        #expect(shards[1].log.contains("resuming from checkpoint"), "restarted shard log:\n\(shards[1].log)")
        for (i, s) in shards.enumerated() {
            #expect(s.log.contains("shard=\"\(i) of 3") || s.log.contains("shard=\(i) of 3"), "shard \(i) log:\n\(s.log)")
        }
        for c in clients { #expect(await c.terminate() == 0, "client log:\n\(c.log)") }
        for s in shards { #expect(await s.terminate() == 0) }
    }
}
