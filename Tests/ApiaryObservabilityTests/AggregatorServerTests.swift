import ApiaryServer
import Foundation
import Synchronization
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("AggregatorServer: the embedding entry point")
struct AggregatorServerTests {
    @Test("one run() serves the aggregator, /status, /metrics and an evaluator; refused handshakes are counted by cause; shutdown() stops it all")
    func embeddedServer() async throws {
        let server = try CurveKeyPair.generate(), stranger = try CurveKeyPair.generate()
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                      curve: CurveServerConfig(keyPair: server, authorizedKeys: AuthorizedKeys()))
        config.publishInterval = .milliseconds(5)
        let evaluated = Atomic<Int>(0)
        let port = Mutex<Int?>(nil)
        let embedded = try AggregatorServer(
            config: config, layout: testLayout, initialParameters: [Float](repeating: 0, count: testLayout.parameterCount),
            options: ServerOptions(status: StatusServerConfig(host: "127.0.0.1", port: 0),
                                   evaluation: ServerEvaluation(dataset: "a test set", everyVersions: 1, interval: .milliseconds(100)) { model in
                                       evaluated.add(1, ordering: .relaxed)
                                       return EvaluationResult(accuracy: 0.5, loss: Double(model.version))
                                   },
                                   progressInterval: .zero, gracefulShutdownSignals: []),
            logger: quietLogger(), onListening: { p in port.withLock { $0 = p } })
        let running = Task { try await embedded.run() }
        try await eventually("the aggregator and the status server to listen") {
            embedded.aggregator.endpoints != nil && port.withLock { $0 } != nil
        }
        let p = port.withLock { $0! }
        let endpoints = embedded.aggregator.endpoints!

        // An unknown key, and a peer without CURVE: both refused, each counted by its cause
        // (libzmq reports the plain peer as a mechanism mismatch, or without detail when the
        // peer's side closes first).
        let context = try Context()
        let unknown = try context.socket(.dealer)
        try unknown.set(.linger, 0)
        try unknown.set(.curveServerKey, server.publicKey)
        try unknown.set(.curvePublicKey, stranger.publicKey)
        try unknown.set(.curveSecretKey, stranger.secretKey)
        try unknown.connect(endpoints.snapshot)
        let plain = try context.socket(.dealer)
        try plain.set(.linger, 0)
        try plain.connect(endpoints.snapshot)
        defer { unknown.close(); plain.close() }
        func plainCounted(_ m: Exposition) -> Bool {
            (m["apiary_handshake_failures_total{cause=\"mechanism_mismatch\"}"] ?? 0) + (m["apiary_handshake_failures_total{cause=\"no_detail\"}"] ?? 0) >= 1
        }
        var m = Exposition("")
        let deadline = ContinuousClock.now + .seconds(20)
        repeat {
            m = Exposition(String(decoding: try await httpGet(p, "/metrics").body, as: UTF8.self))
            if (m["apiary_handshake_failures_total{cause=\"unauthorized_key\"}"] ?? 0) >= 1 && plainCounted(m) { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        #expect((m["apiary_handshake_failures_total{cause=\"unauthorized_key\"}"] ?? 0) >= 1)
        #expect(plainCounted(m), "\(embedded.aggregator.handshakeFailures)")
        #expect(m.problems.isEmpty, "\(m.problems)")
        #expect(m["apiary_handshake_failures_total{cause=\"cryptographic\"}"] == 0, "every usual cause exists from the start")
        #expect(m.helps["apiary_handshake_failures_total"] == MetricCatalog.description(of: "apiary_handshake_failures_total")?.help)
        #expect((embedded.aggregator.handshakeFailures["unauthorized_key"] ?? 0) >= 1)

        // The evaluator runs on the first model; /status names its dataset.
        try await eventually("an evaluation") { evaluated.load(ordering: .relaxed) >= 1 && embedded.evaluator?.latest != nil }
        let status = try JSONSerialization.jsonObject(with: try await httpGet(p, "/status").body) as? [String: Any]
        let evaluation = status?["evaluation"] as? [String: Any]
        #expect(evaluation?["dataset"] as? String == "a test set")

        await embedded.shutdown()
        try await running.value
        #expect(embedded.aggregator.endpoints != nil)
        await #expect(throws: (any Error).self) { _ = try await httpGet(p, "/healthz") }
    }
}
