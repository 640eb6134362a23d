import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ApiaryTesting

/// A trainer that reports metrics with each update: loss falls with the round.
struct MetricsTrainer: Trainer {
    let layout: ParameterLayout
    var examples = 10
    var accuracy = 0.5

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        try await Task.sleep(for: .milliseconds(5))
        return TrainingResult(parameters: model.parameters.map { $0 + 0.5 * (1 - $0) }, sampleCount: examples,
                              loss: 1 / Double(round), metrics: ["accuracy": accuracy, "lr_seen": config.learningRate])
    }
}

/// An evaluator that measures the mean parameter and says so.
struct MeanEvaluator: Evaluator {
    let layout: ParameterLayout
    var dataset = "mean of the parameters"

    func evaluate(model: ModelSnapshot, config: TrainingConfig) async throws -> EvaluatorResult {
        let mean = model.parameters.reduce(0, +) / Float(model.parameters.count)
        return EvaluatorResult(metrics: ["mean": Double(mean), "extra_seen": config.extra["k"]?.number ?? -1], exampleCount: 7)
    }
}

@Suite("Client metrics and evaluator reports, over real sockets")
struct FleetMetricsTests {
    func tempDir() -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-fleet-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test("metrics come with updates, are averaged by examples, and reach the ledger; an evaluator's reports are recorded and receipted")
    func endToEnd() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var config = anyPortConfig()
        config.ledgerPath = dir.appendingPathComponent("ledger.sqlite").path
        config.training = TrainingConfig(learningRate: 0.05, extra: ["k": .number(3)])
        let aggregator = try Aggregator(config: config, layout: testLayout, initialParameters: .init(repeating: 0, count: testLayout.parameterCount),
                                        logger: quietLogger())
        let e = try aggregator.start()
        defer { aggregator.stop() }

        let a = try ClientRuntime(config: clientConfig("a", e), trainer: MetricsTrainer(layout: testLayout, examples: 30, accuracy: 0.9),
                                  logger: quietLogger())
        let b = try ClientRuntime(config: clientConfig("b", e), trainer: MetricsTrainer(layout: testLayout, examples: 10, accuracy: 0.5),
                                  logger: quietLogger())
        let ev = try ClientRuntime(config: clientConfig("ev", e), evaluator: MeanEvaluator(layout: testLayout), logger: quietLogger())
        let tasks = [a, b, ev].map { c in Task { try await c.run() } }
        defer { for t in tasks { t.cancel() } }

        try await eventually("updates with metrics from both clients and two reports", within: 30) {
            let s = aggregator.fleet.clientMetrics()
            return s.updates >= 6 && ev.stats.reportsRecorded >= 2 && a.stats.merged >= 2 && b.stats.merged >= 2
        }
        for c in [a, b, ev] { c.stop() }
        for t in tasks { _ = try? await t.value }

        let s = aggregator.fleet.clientMetrics()
        // Weighted by examples: accuracy lies strictly between b's 0.5 and a's 0.9, nearer a's.
        let acc = try #require(s.values["accuracy"])
        #expect(acc > 0.5 && acc < 0.9)
        #expect(s.values["lr_seen"] == 0.05, "the trainer saw the aggregator's learning rate")
        #expect(s.values["loss"] != nil, "TrainingResult.loss goes as 'loss'")

        let reports = aggregator.fleet.latestReports()
        let r = try #require(reports.first)
        #expect(reports.count == 1)
        #expect(r.evaluator == "ev" && r.dataset == "mean of the parameters" && r.examples == 7)
        #expect(r.metrics["extra_seen"] == 3, "training.extra reached the evaluator")
        #expect(r.version <= aggregator.stats.version)
        #expect(ev.stats.merged == 0 && ev.stats.rejected == 0, "a report is recorded, not merged")
        #expect(aggregator.stats.reportsRecorded >= 2)

        aggregator.stop()
        let rows = try LedgerReader(path: config.ledgerPath!).recent(limit: 1000)
        #expect(rows.contains { $0.decision == .merged && $0.metrics["accuracy"] == 0.9 && $0.clientID == "a" })
        let recorded = rows.filter { $0.decision == .recorded }
        #expect(recorded.count >= 2)
        #expect(recorded.allSatisfy { $0.clientID == "ev" && $0.detail == "mean of the parameters" && $0.metrics["mean"] != nil })
    }

    @Test("reports of another run, of a future version, or claiming another id are rejected with a receipt; a resend is a duplicate")
    func badReports() async throws {
        let aggregator = try Aggregator(config: anyPortConfig(), layout: testLayout,
                                        initialParameters: .init(repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        let e = try aggregator.start()
        defer { aggregator.stop() }
        let peer = try RawPeer(e, clientID: "ev")
        let run = aggregator.runID
        func report(run: UInt64, version: UInt64, seq: UInt64, id: String = "ev") throws -> Receipt {
            try peer.send(frames: Codec.encode(EvaluationReport(runID: run, version: version, seq: seq, exampleCount: 1, clientID: id,
                                                                dataset: "d", metrics: ["accuracy": 0.5])))
            return try peer.receipt()
        }
        let ok = try report(run: run, version: 0, seq: 1)
        #expect(ok.decision == .recorded && ok.seq == 1 && ok.baseVersion == 0)
        let again = try report(run: run, version: 0, seq: 1)
        #expect(again.decision == .duplicate)
        let otherRun = try report(run: run &+ 1, version: 0, seq: 2)
        #expect(otherRun.decision == .rejected && otherRun.reason == .unknownBase)
        let future = try report(run: run, version: 99, seq: 3)
        #expect(future.decision == .rejected && future.reason == .unknownBase)
        // A malformed body is receipted too (the header names the sender).
        var frames = Codec.encode(EvaluationReport(runID: run, version: 0, seq: 4, exampleCount: 1, clientID: "ev", dataset: "d", metrics: ["a": 1]))
        frames[1] = Array("{\"dataset\":\"d\",\"metrics\":{\"a\":\"x\"}}".utf8)
        try peer.send(frames: frames)
        let bad = try peer.receipt()
        #expect(bad.decision == .rejected && bad.reason == .malformed && bad.seq == 4)
        #expect(aggregator.fleet.reports().count == 1)
        #expect(aggregator.stats.version == 0, "reports never touch the model")
        #expect(aggregator.stats.received == 0, "reports are not counted as updates")
    }
}
