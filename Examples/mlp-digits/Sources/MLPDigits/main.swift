// An Apiary program of your own: a two-layer MLP (hand-written backpropagation) trained
// asynchronously by a fleet of clients, served by an aggregator embedded with
// `AggregatorServer` (status server, Prometheus metrics, a server-side evaluator), CURVE on
// every socket. It exits 0 once the global model reaches the target accuracy on the
// held-out digits test split, 1 if it does not within the time limit.
//
//   swift run mlp-digits [--clients N] [--target ACC] [--limit SECONDS] [--hidden H] [--port P]
//
// The fleet lives in this process for brevity; each client talks to the aggregator over
// tcp on 127.0.0.1 exactly as a client on another machine would.

import ApiaryClient
import ApiaryLearning
import ApiaryServer
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization
import ZeroMQ

struct Options {
    var clients = 10
    var target = 0.93
    var limit = 180.0
    var hidden = 32
    var port = 0

    init(_ args: [String]) throws {
        var i = 1
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw MLPError("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--clients": clients = Int(try value()) ?? 0
            case "--target": target = Double(try value()) ?? 2
            case "--limit": limit = Double(try value()) ?? 0
            case "--hidden": hidden = Int(try value()) ?? 0
            case "--port": port = Int(try value()) ?? -1
            default: throw MLPError("unknown option \(args[i]) (--clients N --target ACC --limit SECONDS --hidden H --port P)")
            }
            i += 1
        }
        guard (1...20).contains(clients) else { throw MLPError("--clients must be 1 to 20 (the shared workload's partitions)") }
        guard (0...1).contains(target), limit > 0, hidden >= 1, (0...65535).contains(port) else { throw MLPError("bad --target, --limit, --hidden or --port") }
    }
}

func say(_ s: String) {
    FileHandle.standardOutput.write(Data((s + "\n").utf8))
}

func fetch(_ url: String) async throws -> String {
    let (data, _) = try await URLSession.shared.data(from: URL(string: url)!)
    return String(decoding: data, as: UTF8.self)
}

func main() async throws -> Int32 {
    let options = try Options(CommandLine.arguments)
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = .warning
        return h
    }
    let logger = Logger(label: "mlp-digits")

    // The data: the shared workload's non-IID partition of the digits set (one partition per
    // client) and its held-out test split, which only the server-side evaluator sees.
    let workload = try SharedWorkload.load()
    let mlp = MLP(hidden: options.hidden)

    // Keys: one pair for the aggregator, one per client, all authorized by id.
    let serverKeys = try CurveKeyPair.generate()
    let clientKeys = try (0..<options.clients).map { _ in try CurveKeyPair.generate() }
    var allowed = AuthorizedKeys()
    for (k, pair) in clientKeys.enumerated() { allowed.authorize(key: pair.publicKey, clientID: "mlp-\(k)") }

    var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                  rule: FedAsync(alpha: 0.5, staleness: .polynomial(a: 0.5), maxStaleness: 128),
                                  training: TrainingConfig(learningRate: 0.1, localEpochs: 2, batchSize: 16, extra: ["weight_decay": .number(1e-4)]),
                                  curve: CurveServerConfig(keyPair: serverKeys, authorizedKeys: allowed))
    config.checkpointDirectory = nil
    let testSet = workload.testSet
    let port = Mutex<Int?>(nil)
    let server = try AggregatorServer(
        config: config, layout: mlp.layout, initialParameters: mlp.initialParameters(seed: 7),
        options: ServerOptions(
            status: StatusServerConfig(host: "127.0.0.1", port: options.port),
            evaluation: ServerEvaluation(dataset: "digits test split (\(testSet.count) examples)", everyVersions: 5, interval: .milliseconds(500)) { model in
                let m = mlp.evaluate(model.parameters, on: testSet)
                return EvaluationResult(accuracy: m.accuracy, loss: m.loss)
            },
            progressInterval: .zero),
        logger: logger,
        onListening: { p in port.withLock { $0 = p } })

    let startFailure = Mutex<(any Error)?>(nil)
    let running = Task {
        do { try await server.run() } catch { startFailure.withLock { $0 = error } }
    }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        defer { group.cancelAll() }
        // The aggregator binds ephemeral ports; clients connect once they are known.
        while server.aggregator.endpoints == nil || port.withLock({ $0 }) == nil {
            try await Task.sleep(for: .milliseconds(10))
            if let failure = startFailure.withLock({ $0 }) { throw failure }
        }
        let endpoints = server.aggregator.endpoints!
        let statusPort = port.withLock { $0! }
        say("mlp-digits: MLP 64-\(options.hidden)-10 (\(mlp.layout.parameterCount) parameters, 4 tensors), \(options.clients) clients, CURVE on, target \(options.target)")
        say("  dashboard http://127.0.0.1:\(statusPort)/  snapshot \(endpoints.snapshot)")

        let context = try Context()
        var clients: [ClientRuntime] = []
        // Clients first (their updates in flight are dropped), then the server, gracefully:
        // the aggregator publishes its final version, the status server closes.
        func stopAll() async {
            clients.forEach { $0.stop() }
            await server.shutdown()
            _ = await running.result
        }
        for k in 0..<options.clients {
            let trainer = MLPTrainer(model: mlp, data: workload.trainSet(client: k), seed: UInt64(k))
            let cc = ClientConfig(clientID: "mlp-\(k)", modelEndpoint: endpoints.model, snapshotEndpoint: endpoints.snapshot,
                                  updateEndpoint: endpoints.update,
                                  curve: CurveClientConfig(keyPair: clientKeys[k], serverPublicKey: serverKeys.publicKey))
            let client = try ClientRuntime(config: cc, trainer: trainer, context: context, logger: logger)
            clients.append(client)
            group.addTask { try await client.run() }
        }

        let start = ContinuousClock.now
        var lastPrint = ContinuousClock.now - .seconds(10)
        while true {
            let elapsed = ContinuousClock.now - start
            let latest = server.evaluator?.latest
            if ContinuousClock.now - lastPrint >= .seconds(5) {
                lastPrint = ContinuousClock.now
                let s = server.aggregator.stats
                say(String(format: "  t=%5.1fs version=%5llu merged=%5llu rejected=%3llu accuracy=%@", Double(elapsed.components.seconds),
                           s.version, s.merged, s.rejectedTotal, latest?.accuracy.map { String(format: "%.4f", $0) } ?? "-"))
            }
            if let accuracy = latest?.accuracy, accuracy >= options.target {
                // What an operator sees: the evaluator's gauge and the clients' own metrics.
                let metrics = try await fetch("http://127.0.0.1:\(statusPort)/metrics")
                let status = try await fetch("http://127.0.0.1:\(statusPort)/status")
                let gauge = metrics.split(separator: "\n").first { $0.hasPrefix("apiary_eval_accuracy ") } ?? "(missing)"
                guard gauge != "(missing)", status.contains("\"client_metrics\"") else {
                    say("FAIL: /metrics or /status does not show the evaluation and client metrics")
                    return 1
                }
                let s = server.aggregator.stats
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                say(String(format: "PASS: accuracy %.4f >= %.2f at version %llu after %.1f s (now version %llu, %llu merged, %llu rejected)",
                           accuracy, options.target, latest!.version, seconds, s.version, s.merged, s.rejectedTotal) + "; /metrics: \(gauge)")
                await stopAll()
                return 0
            }
            if elapsed >= .seconds(options.limit) {
                say("FAIL: accuracy \(latest?.accuracy.map { String($0) } ?? "-") below \(options.target) after \(options.limit) s")
                await stopAll()
                return 1
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

do {
    exit(try await main())
} catch {
    FileHandle.standardError.write(Data("mlp-digits: \(error)\n".utf8))
    exit(1)
}
