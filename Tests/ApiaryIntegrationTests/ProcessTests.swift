import ApiaryCore
import ApiaryLearning
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

/// Watches model broadcasts like any subscriber would, and evaluates them.
final class ModelWatcher {
    let context: Context
    let sub: Socket
    var assembled: [UInt64: [Float]] = [:]
    var latest: (runID: UInt64, version: UInt64, parameters: [Float])?

    init(endpoint: String, curve: (keys: CurveKeyPair, server: String)? = nil) throws {
        context = try Context()
        sub = try context.socket(.sub)
        if let curve {
            try sub.set(.curveServerKey, curve.server)
            try sub.set(.curvePublicKey, curve.keys.publicKey)
            try sub.set(.curveSecretKey, curve.keys.secretKey)
        }
        try sub.set(.subscribe, Topic.model)
        try sub.connect(endpoint)
    }

    /// Reads broadcasts for up to `seconds`, keeping the newest complete model.
    func pump(seconds: Double) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        let poller = Poller()
        poller.add(sub)
        while Date() < deadline {
            // Never block the cooperative pool: look, then sleep asynchronously.
            guard try poller.poll(timeoutMilliseconds: 0) > 0 else { try await Task.sleep(for: .milliseconds(10)); continue }
            while let m = try sub.receiveMultipart(dontWait: true) {
                let chunk = try? m.withFrameBytes { f throws(WireError) in
                    let (h, p) = try Codec.decodeModelChunk(f)
                    return (h, Array(p.bindMemory(to: Float.self)))
                }
                // The digits model is one chunk.
                if let (h, values) = chunk, h.chunkCount == 1 {
                    latest = (h.runID, h.version, values)
                }
            }
        }
    }
}

@Suite("Separate processes: apiary aggregator and apiary client", .serialized)
struct ProcessTests {
    func env(_ ports: [Int]) -> [String: String] {
        ["ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
         "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "LOG_LEVEL": "info", "PROGRESS_INTERVAL_S": "1", "SECURITY_INSECURE": "true"]
    }

    @Test("an aggregator and three client processes train together; all stop cleanly on SIGTERM")
    func threeClients() async throws {
        let ports = try freePorts(3)
        let e = env(ports)
        let agg = try Child(["aggregator"], environment: e, name: "aggregator")
        let clients = try (0..<3).map { k in
            try Child(["client", "--id", "proc-\(k)", "--partition", "\(k * 5)", "--delay", "0.05"], environment: e, name: "client-\(k)")
        }
        let watcher = try ModelWatcher(endpoint: e["ENDPOINTS_MODEL"]!)
        let test = try SharedWorkload.load().testSet
        var accuracy = 0.0
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            try await watcher.pump(seconds: 0.5)
            if let m = watcher.latest, m.version >= 30 {
                accuracy = Evaluation.accuracy(parameters: m.parameters, on: test)
                if accuracy >= 0.5 { break }
            }
        }
        let version = watcher.latest?.version ?? 0
        #expect(version >= 30, "aggregator log:\n\(agg.log)")
        // Three label-skewed partitions do not cover every digit well, but the model learns.
        #expect(accuracy >= 0.5)
        for c in clients { #expect(await c.terminate() == 0, "client log:\n\(c.log)") }
        #expect(await agg.terminate() == 0)
        #expect(agg.log.contains("aggregator stopped"))
    }

    @Test("client processes carry on when the aggregator process is killed and restarted")
    func aggregatorRestart() async throws {
        let ports = try freePorts(3)
        let e = env(ports)
        var agg = try Child(["aggregator"], environment: e, name: "aggregator-1")
        let clients = try (0..<2).map { k in
            try Child(["client", "--id", "restart-\(k)", "--partition", "\(k)", "--delay", "0.05"], environment: e, name: "rclient-\(k)")
        }
        let watcher = try ModelWatcher(endpoint: e["ENDPOINTS_MODEL"]!)
        var deadline = Date().addingTimeInterval(30)
        while Date() < deadline && (watcher.latest?.version ?? 0) < 10 { try await watcher.pump(seconds: 0.2) }
        let firstRun = try #require(watcher.latest?.runID)
        await agg.kill9()
        agg = try Child(["aggregator"], environment: e, name: "aggregator-2")
        deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            try await watcher.pump(seconds: 0.2)
            if let m = watcher.latest, m.runID != firstRun, m.version >= 10 { break }
        }
        let after = try #require(watcher.latest)
        #expect(after.runID != firstRun, "restarted aggregator log:\n\(agg.log)")
        #expect(after.version >= 10)
        for c in clients { #expect(await c.terminate() == 0) }
        #expect(await agg.terminate() == 0)
    }

    /// Runs `apiary ARGS` to completion and returns its output.
    func apiary(_ args: [String]) async throws -> String {
        let r = try await Child.run(args)
        #expect(r.status == 0, "apiary \(args.joined(separator: " ")): \(r.output)")
        return r.output
    }

    @Test("with keys made by `apiary keys`, two authorized client processes train and an unknown one is refused")
    func curveFleet() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-keys-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["aggregator", "client-1", "client-2", "intruder", "observer"] {
            _ = try await apiary(["keys", "generate", "--name", name, "--out", dir])
        }
        let mode = try FileManager.default.attributesOfItem(atPath: "\(dir)/client-1.secret")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        for name in ["client-1", "client-2", "observer"] {
            _ = try await apiary(["keys", "authorize", "\(dir)/\(name).public", "--id", name, "--to", "\(dir)/authorized_keys"])
        }
        let p = try consecutivePorts()
        var base = env([p + 1, p, p + 2])
        base["SECURITY_INSECURE"] = "false"
        var aggEnv = base
        aggEnv["SECURITY_SECRET_KEY_FILE"] = "\(dir)/aggregator.secret"
        aggEnv["SECURITY_AUTHORIZED_KEYS"] = "\(dir)/authorized_keys"
        let agg = try Child(["aggregator"], environment: aggEnv, name: "curve-aggregator")
        func clientEnv(_ name: String) -> [String: String] {
            var e = base
            e["SECURITY_SECRET_KEY_FILE"] = "\(dir)/\(name).secret"
            e["SECURITY_SERVER_PUBLIC_KEY_FILE"] = "\(dir)/aggregator.public"
            return e
        }
        var clients = try ["client-1", "intruder"].enumerated().map { k, name in
            try Child(["client", "--id", name, "--partition", "\(k * 12)", "--delay", "0.05"], environment: clientEnv(name), name: name)
        }
        // client-2 from the command line alone: the snapshot endpoint (model and update on
        // the next two ports) and its key files, no config and no environment.
        clients.append(try Child(["client", "--id", "client-2", "--partition", "6", "--delay", "0.05", "--aggregator", "tcp://127.0.0.1:\(p)",
                                  "--key", "\(dir)/client-2.secret", "--server-key", "\(dir)/aggregator.public"],
                                 environment: ["LOG_LEVEL": "info"], name: "client-2"))
        let observerKeys = try CurveKeyFile.readPair(path: "\(dir)/observer.secret")
        let watcher = try ModelWatcher(endpoint: base["ENDPOINTS_MODEL"]!,
                                       curve: (observerKeys, try CurveKeyFile.readPublicKey(path: "\(dir)/aggregator.public")))
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && (watcher.latest?.version ?? 0) < 20 { try await watcher.pump(seconds: 0.3) }
        #expect((watcher.latest?.version ?? 0) >= 20, "aggregator log:\n\(agg.log)")
        let intruderKey = try CurveKeyFile.readPublicKey(path: "\(dir)/intruder.public")
        for c in clients { #expect(await c.terminate() == 0) }
        #expect(await agg.terminate() == 0)
        #expect(agg.log.contains("unknown CURVE key") && agg.log.contains(intruderKey), "aggregator log:\n\(agg.log)")
        #expect(!clients[1].log.contains("merged=1"))
        // Nothing silent: the intruder says why it cannot get in; client-2 joined.
        #expect(clients[1].log.contains("cannot get in") && clients[1].log.contains("unauthorized_key"), "intruder log:\n\(clients[1].log)")
        #expect(clients[2].log.contains("joined") && !clients[2].log.contains("cannot get in"), "client-2 log:\n\(clients[2].log)")
        // Secret keys never reach a log.
        let secret = try CurveKeyFile.readPair(path: "\(dir)/aggregator.secret").secretKey
        #expect(!agg.log.contains(secret))
    }
}
