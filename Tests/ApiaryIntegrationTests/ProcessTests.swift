import ApiaryCore
import ApiaryLearning
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ

/// The built `apiary` executable (APIARY_BIN, or .build/debug/apiary of this checkout).
func apiaryBinary() throws -> String {
    if let p = ProcessInfo.processInfo.environment["APIARY_BIN"] { return p }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let p = root.appendingPathComponent(".build/debug/apiary").path
    guard FileManager.default.isExecutableFile(atPath: p) else { throw Timeout(what: "the apiary binary at \(p) (run swift build first)") }
    return p
}

/// Free loopback ports, found by binding to port 0.
func freePorts(_ n: Int) throws -> [Int] {
    let ctx = try Context()
    var sockets: [Socket] = []
    var ports: [Int] = []
    for _ in 0..<n {
        let s = try ctx.socket(.pull)
        try s.set(.linger, 0)
        try s.bind("tcp://127.0.0.1:*")
        ports.append(Int(try s.lastEndpoint.split(separator: ":").last!)!)
        sockets.append(s)
    }
    sockets.forEach { $0.close() }
    return ports
}

/// Three consecutive free ports P, P+1, P+2 on 127.0.0.1 (what `apiary client --aggregator
/// tcp://HOST:P` expects of the aggregator: snapshot P, model P+1, update P+2).
func consecutivePorts() throws -> Int {
    let ctx = try Context()
    var rng = SystemRandomNumberGenerator()
    for _ in 0..<200 {
        let base = Int.random(in: 20_000...60_000, using: &rng)
        var held: [Socket] = []
        defer { held.forEach { $0.close() } }
        do {
            for p in base...(base + 2) {
                let s = try ctx.socket(.pull)
                try s.set(.linger, 0)
                held.append(s)
                try s.bind("tcp://127.0.0.1:\(p)")
            }
            return base
        } catch {
            continue
        }
    }
    throw Timeout(what: "three consecutive free ports")
}

/// A child process that is terminated (SIGTERM, then SIGKILL) when the test is done with it.
final class Child {
    let process = Process()
    let output: URL

    init(_ arguments: [String], environment: [String: String], name: String) throws {
        process.executableURL = URL(fileURLWithPath: try apiaryBinary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        output = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; returns the exit status.
    @discardableResult
    func terminate(grace: Double = 5) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        return process.terminationStatus
    }

    func kill9() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    var log: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

    deinit {
        terminate(grace: 1)
        try? FileManager.default.removeItem(at: output)
    }
}

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
    func pump(seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        let poller = Poller()
        poller.add(sub)
        while Date() < deadline {
            guard try poller.poll(timeoutMilliseconds: 50) > 0 else { continue }
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
            try watcher.pump(seconds: 0.5)
            if let m = watcher.latest, m.version >= 30 {
                accuracy = Evaluation.accuracy(parameters: m.parameters, on: test)
                if accuracy >= 0.5 { break }
            }
        }
        let version = watcher.latest?.version ?? 0
        #expect(version >= 30, "aggregator log:\n\(agg.log)")
        // Three label-skewed partitions do not cover every digit well, but the model learns.
        #expect(accuracy >= 0.5)
        for c in clients { #expect(c.terminate() == 0, "client log:\n\(c.log)") }
        #expect(agg.terminate() == 0)
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
        while Date() < deadline && (watcher.latest?.version ?? 0) < 10 { try watcher.pump(seconds: 0.2) }
        let firstRun = try #require(watcher.latest?.runID)
        agg.kill9()
        agg = try Child(["aggregator"], environment: e, name: "aggregator-2")
        deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            try watcher.pump(seconds: 0.2)
            if let m = watcher.latest, m.runID != firstRun, m.version >= 10 { break }
        }
        let after = try #require(watcher.latest)
        #expect(after.runID != firstRun, "restarted aggregator log:\n\(agg.log)")
        #expect(after.version >= 10)
        for c in clients { #expect(c.terminate() == 0) }
        #expect(agg.terminate() == 0)
    }

    /// Runs `apiary ARGS` to completion and returns its output.
    func apiary(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try apiaryBinary())
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "apiary \(args.joined(separator: " ")): \(out)")
        return out
    }

    @Test("with keys made by `apiary keys`, two authorized client processes train and an unknown one is refused")
    func curveFleet() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-keys-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["aggregator", "client-1", "client-2", "intruder", "observer"] {
            _ = try apiary(["keys", "generate", "--name", name, "--out", dir])
        }
        let mode = try FileManager.default.attributesOfItem(atPath: "\(dir)/client-1.secret")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        for name in ["client-1", "client-2", "observer"] {
            _ = try apiary(["keys", "authorize", "\(dir)/\(name).public", "--id", name, "--to", "\(dir)/authorized_keys"])
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
        while Date() < deadline && (watcher.latest?.version ?? 0) < 20 { try watcher.pump(seconds: 0.3) }
        #expect((watcher.latest?.version ?? 0) >= 20, "aggregator log:\n\(agg.log)")
        let intruderKey = try CurveKeyFile.readPublicKey(path: "\(dir)/intruder.public")
        for c in clients { #expect(c.terminate() == 0) }
        #expect(agg.terminate() == 0)
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
