import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("CurveZMQ and the ZAP allowlist", .serialized)
struct SecurityTests {
    let server = try! CurveKeyPair.generate()
    let alice = try! CurveKeyPair.generate()
    let bob = try! CurveKeyPair.generate()

    func start(keysFile: String? = nil, allow: [CurveKeyPair: String] = [:], zap: Bool = true,
               logger: Logger = quietLogger()) throws -> (Aggregator, Aggregator.Endpoints) {
        var config = anyPortConfig()
        var keys = AuthorizedKeys()
        for (k, id) in allow { keys.authorize(key: k.publicKey, clientID: id) }
        config.curve = CurveServerConfig(keyPair: server, authorizedKeysPath: keysFile, authorizedKeys: keys, startsZAPHandler: zap)
        let agg = try Aggregator(config: config, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: logger)
        return (agg, try agg.start())
    }

    func client(_ id: String, _ e: Aggregator.Endpoints, keys: CurveKeyPair?, serverKey: String? = nil) throws -> ClientRuntime {
        var c = clientConfig(id, e)
        c.curve = keys.map { CurveClientConfig(keyPair: $0, serverPublicKey: serverKey ?? server.publicKey) }
        return try ClientRuntime(config: c, trainer: StepTrainer(layout: testLayout), logger: quietLogger())
    }

    @Test("the start-up self-test's refused probe is logged as a passed test, not as an intrusion")
    func selfTestLog() throws {
        let log = LogLines()
        var config = anyPortConfig()
        config.curve = CurveServerConfig(keyPair: server, authorizedKeysPath: nil, authorizedKeys: AuthorizedKeys(), startsZAPHandler: true)
        let agg = try Aggregator(config: config, layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: log.logger(level: .info))
        let e = try agg.start()
        agg.stop()
        #expect(log.lines.contains { $0.level == .info && $0.message.hasPrefix("security self-test passed") && $0.metadata["endpoint"] == e.snapshot })
        #expect(!log.lines.contains { $0.message.contains("connection refused") })
    }

    @Test("nothing silent: a client with a wrong server key, or facing no aggregator, says so in its log, naming the endpoint")
    func silenceIsLogged() async throws {
        let (agg, e) = try start(allow: [alice: "alice"])
        defer { agg.stop() }
        let wrongLog = LogLines(), absentLog = LogLines()
        var wrong = clientConfig("alice", e)
        wrong.curve = CurveClientConfig(keyPair: alice, serverPublicKey: try CurveKeyPair.generate().publicKey)
        var absent = clientConfig("alice", e)
        absent.snapshotEndpoint = "ipc://\(NSTemporaryDirectory())apiary-nobody-\(ProcessInfo.processInfo.processIdentifier).sock"
        absent.modelEndpoint = absent.snapshotEndpoint + "-model"
        absent.updateEndpoint = absent.snapshotEndpoint + "-update"
        let clients = [try ClientRuntime(config: wrong, trainer: StepTrainer(layout: testLayout), logger: wrongLog.logger()),
                       try ClientRuntime(config: absent, trainer: StepTrainer(layout: testLayout), logger: absentLog.logger())]
        let tasks = clients.map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        func silence(_ log: LogLines) -> LogLines.Line? { log.lines.first { $0.level == .warning && $0.message.hasPrefix("no snapshot reply") } }
        try await eventually("both clients to log that no snapshot reply came", within: 20) { silence(wrongLog) != nil && silence(absentLog) != nil }
        let w = try #require(silence(wrongLog)), a = try #require(silence(absentLog))
        #expect(w.metadata["endpoint"] == e.snapshot && w.message.contains("server_public_key_file"))
        #expect(a.metadata["endpoint"] == absent.snapshotEndpoint && !a.message.contains("CURVE"))
        // Once, then at most every 30 s: not a line per retry. Three unanswered requests
        // counted means the second one's logging was decided (the count comes first).
        try await eventually("both clients to ask again twice", within: 20) {
            clients.allSatisfy { $0.stats.snapshotsUnanswered >= 3 }
        }
        #expect(wrongLog.lines.filter { $0.message.hasPrefix("no snapshot reply") }.count == 1)
        #expect(absentLog.lines.filter { $0.message.hasPrefix("no snapshot reply") }.count == 1)
        #expect(agg.stats.merged == 0)
    }

    @Test("a refused handshake is named on both sides: unknown key, wrong server key, CURVE on one side only; the self-test's probe is not counted")
    func handshakeFailuresAreNamed() async throws {
        let aggLog = LogLines()
        var config = anyPortConfig()
        var keys = AuthorizedKeys()
        keys.authorize(key: alice.publicKey, clientID: "alice")
        config.curve = CurveServerConfig(keyPair: server, authorizedKeys: keys)
        let agg = try Aggregator(config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
                                 logger: aggLog.logger())
        let e = try agg.start()
        defer { agg.stop() }
        #expect(agg.handshakeFailures.values.reduce(0, +) == 0, "the self-test's refused probe was counted: \(agg.handshakeFailures)")

        // (client config, the cause the client should name, the cause the aggregator should count)
        var unknown = clientConfig("mallory", e)
        unknown.curve = CurveClientConfig(keyPair: bob, serverPublicKey: server.publicKey)
        var wrongServer = clientConfig("alice", e)
        wrongServer.curve = CurveClientConfig(keyPair: alice, serverPublicKey: try CurveKeyPair.generate().publicKey)
        let plain = clientConfig("plain", e)
        // libzmq 4.3.4 reports a plain client's failure to the client without detail (the
        // server sees the mechanism mismatch); later versions report the mismatch on both sides.
        // The server sees the plain client's mismatch, or no detail when the client's side
        // closes first.
        let cases: [(ClientConfig, client: Set<String>, server: Set<String>, hint: String)] = [
            (unknown, ["unauthorized_key"], ["unauthorized_key"], "authorized keys"),
            (wrongServer, ["no_detail"], ["cryptographic"], "server_public_key_file"),
            (plain, ["no_detail", "mechanism_mismatch"], ["mechanism_mismatch", "no_detail"], "--insecure"),
        ]
        let logs = cases.map { _ in LogLines() }
        let clients = try zip(cases, logs).map { c, log in try ClientRuntime(config: c.0, trainer: StepTrainer(layout: testLayout), logger: log.logger()) }
        let tasks = clients.map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        func cannotGetIn(_ log: LogLines) -> LogLines.Line? { log.lines.first { $0.level == .warning && $0.message.hasPrefix("cannot get in") } }
        try await eventually("each client to log why it cannot get in, the aggregator to count each cause", within: 20) {
            logs.allSatisfy { cannotGetIn($0) != nil } && cases.allSatisfy { c in c.server.contains { (agg.handshakeFailures[$0] ?? 0) > 0 } }
        }
        for (c, log) in zip(cases, logs) {
            let line = try #require(cannotGetIn(log))
            #expect(c.client.contains(line.metadata["cause"] ?? ""), "\(c.0.clientID): \(line.message) \(line.metadata)")
            #expect(line.message.contains(c.hint), "\(c.0.clientID): \(line.message)")
            #expect(line.metadata["endpoint"] == e.model)
        }
        #expect(clients.allSatisfy { $0.currentModel == nil && $0.stats.handshakeFailures > 0 })
        // The aggregator names the non-ZAP causes in its log too (the ZAP handler logs the refused key).
        #expect(aggLog.lines.contains { $0.level == .warning && $0.message.contains("server_public_key_file") && $0.metadata["cause"] == "cryptographic" })
        #expect(aggLog.lines.contains { $0.level == .warning && ["mechanism_mismatch", "no_detail"].contains($0.metadata["cause"] ?? "") && $0.message.contains("--insecure") })
        #expect(aggLog.lines.contains { $0.level == .warning && $0.message.hasPrefix("connection refused: unknown CURVE key") && $0.metadata["key"] == bob.publicKey })
        // Logged once per cause, then at most every 30 s, however often the clients retry.
        // A client counts a failure before deciding to log it, so four counted means the
        // third was decided (the client with the wrong server key reconnects on its own; the
        // others ask again through fresh snapshot connections, each refused by the aggregator,
        // which publishes its counts after logging).
        try await eventually("the clients to ask again twice, the wrong server key to fail four times, the aggregator to count three", within: 20) {
            clients.allSatisfy { $0.stats.snapshotsUnanswered >= 2 } && clients[1].stats.handshakeFailures >= 4
                && (agg.handshakeFailures["cryptographic"] ?? 0) >= 3 && (agg.handshakeFailures["unauthorized_key"] ?? 0) >= 3
        }
        for log in logs { #expect(log.lines.filter { $0.message.hasPrefix("cannot get in") }.count == 1) }
        #expect(aggLog.lines.filter { $0.metadata["cause"] == "cryptographic" }.count == 1)
    }

    @Test("the library is secure by default: without CURVE keys an aggregator or a client refuses to start unless insecure is set")
    func secureByDefault() throws {
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*")
        #expect(config.rule.maxStaleness == 128, "the CLI's staleness bound")
        let zeros = [Float](repeating: 0, count: testLayout.parameterCount)
        #expect {
            _ = try Aggregator(config: config, layout: testLayout, initialParameters: zeros, logger: quietLogger())
        } throws: { "\($0)".contains("no CURVE keys") && "\($0)".contains("insecure = true") }
        config.insecure = true
        _ = try Aggregator(config: config, layout: testLayout, initialParameters: zeros, logger: quietLogger())

        var client = ClientConfig(clientID: "edge-1")
        #expect {
            _ = try ClientRuntime(config: client, trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        } throws: { "\($0)".contains("no CURVE keys") && "\($0)".contains("insecure = true") }
        client.insecure = true
        _ = try ClientRuntime(config: client, trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        client.insecure = false
        client.curve = CurveClientConfig(keyPair: alice, serverPublicKey: server.publicKey)
        _ = try ClientRuntime(config: client, trainer: StepTrainer(layout: testLayout), logger: quietLogger())
    }

    @Test("an allowed key trains; unknown key, no key and a wrong server key get nothing in and nothing out")
    func admission() async throws {
        let (agg, e) = try start(allow: [alice: "alice"])
        defer { agg.stop() }
        let good = try client("alice", e, keys: alice)
        let stranger = try client("mallory", e, keys: bob)
        let plain = try client("plain", e, keys: nil)
        let wrongServer = try client("alice", e, keys: alice, serverKey: try CurveKeyPair.generate().publicKey)
        let tasks = [good, stranger, plain, wrongServer].map { c in Task { try await c.run() } }
        defer { tasks.forEach { $0.cancel() } }
        try await eventually("alice's merges") { good.stats.merged >= 3 }
        // The others tried, were refused, and asked again after the snapshot timeout (each time
        // on a fresh connection, refused again): they had their chance.
        try await eventually("every other client to ask again twice", within: 20) {
            [stranger, plain, wrongServer].allSatisfy { $0.stats.snapshotsUnanswered >= 2 && $0.stats.handshakeFailures >= 1 }
        }
        for c in [stranger, plain, wrongServer] {
            #expect(c.currentModel == nil, "\(c.config.clientID) received a model")
            #expect(c.stats.merged == 0 && c.stats.rejected == 0)
        }
        #expect(agg.stats.received == agg.stats.merged)  // nothing from the others arrived
    }

    @Test("a key removed from the authorized-keys file cannot open a new connection")
    func revocation() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("authorized-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "# test fleet\n\(alice.publicKey) alice\n\(bob.publicKey) bob\n".write(toFile: file, atomically: true, encoding: .utf8)
        let log = LogLines()
        let (agg, e) = try start(keysFile: file, logger: log.logger(level: .notice))
        defer { agg.stop() }
        let b1 = try client("bob", e, keys: bob)
        let t1 = Task { try await b1.run() }
        try await eventually("bob's first merges") { b1.stats.merged >= 2 }
        t1.cancel()
        b1.stop()
        _ = try? await t1.value

        // Revoke bob; the file is re-read within about a second, which the aggregator logs.
        try "\(alice.publicKey) alice\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await eventually("the authorized keys to be reloaded", within: 20) {
            log.lines.contains { $0.message == "authorized keys reloaded" && $0.metadata["keys"] == "1" }
        }
        let b2 = try client("bob", e, keys: bob)
        let a2 = try client("alice", e, keys: alice)
        let t2 = Task { try await b2.run() }, t3 = Task { try await a2.run() }
        defer { t2.cancel(); t3.cancel() }
        try await eventually("alice still trains") { a2.stats.merged >= 2 }
        #expect(b2.currentModel == nil)
        #expect(b2.stats.merged == 0)
    }

    @Test("an update whose payload claims another client's id is rejected and receipted to the sender")
    func spoofing() async throws {
        let (agg, e) = try start(allow: [alice: "alice", bob: "bob"])
        defer { agg.stop() }
        // Bob's own keys, and the handshake that proves his receipt subscription is in place.
        let peer = try RawPeer(e, clientID: "bob", curve: CurveClientConfig(keyPair: bob, serverPublicKey: server.publicKey))
        // Bob, authenticated as bob, claims to be alice.
        let header = Codec.encode(UpdateHeader(runID: agg.runID, baseVersion: 0, seq: 1, sampleCount: 1, clientID: "alice"))
        try peer.send(frames: [header, Codec.encodeLayout(testLayout), [Float](repeating: 1, count: 15).withUnsafeBytes { Array($0) }])
        let r = try peer.receipt()
        #expect(r.clientID == "bob")
        #expect(r.reason == .identityMismatch)
        agg.stop()
        #expect(agg.stats.merged == 0)
        #expect(agg.stats.rejected[.identityMismatch] == 1)
    }

    @Test("the aggregator refuses to start when no ZAP handler refuses an unknown key")
    func selfTest() throws {
        #expect(throws: AggregatorError.self) { _ = try start(allow: [alice: "alice"], zap: false) }
    }
}
