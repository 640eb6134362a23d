import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import Foundation
import Synchronization
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("Server-side evaluation off the merge path")
struct EvaluatorTests {
    /// Runs `evaluator` until `body` returns, then cancels it.
    func running<R>(_ evaluator: ModelEvaluator, _ body: () async throws -> R) async throws -> R {
        let task = Task { try await evaluator.run() }
        defer { task.cancel() }
        return try await body()
    }

    @Test("evaluates every N versions, records gauges, and keeps a bounded history")
    func everyNVersions() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 5, interval: .seconds(3600), historyCapacity: 3,
                                       metricsFactory: exporter.factory, logger: quietLogger()) { model in
            // The updates move every parameter toward 1: their mean is a stand-in for accuracy.
            let mean = model.parameters.reduce(0, +) / Float(model.parameters.count)
            return EvaluationResult(accuracy: Double(mean), loss: Double((1 - mean) * (1 - mean)))
        }
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "eval-1")
        defer { client.push.close() }
        try await running(evaluator) {
            try await eventually("the first evaluation") { evaluator.latest?.version == 0 }
            for i in 1...15 {
                try client.sendUpdate(to: aggregator)
                try await eventually("merge \(i)") { aggregator.latestModel?.version == UInt64(i) }
                // Versions 1 to 4 after an evaluation are not due (the interval is an hour); the
                // fifth is: wait for it before merging more, so the evaluated version is exact.
                if i % 5 == 0 { try await eventually("the evaluation at version \(i)") { evaluator.latest?.version == UInt64(i) } }
            }
        }
        // 0, 5, 10, 15 evaluated, only the last 3 kept.
        let history = evaluator.history
        #expect(history.map(\.version) == [5, 10, 15])
        #expect(history.map { $0.accuracy! } == history.map { $0.accuracy! }.sorted(), "the model improves")
        // Each merge mixes in half of the way to 1 with weight alpha = 0.5: a quarter of the gap closes.
        #expect(abs(history.last!.accuracy! - (1 - pow(0.75, 15))) < 1e-5)
        let m = Exposition(exporter.exposition())
        #expect(m["apiary_eval_model_version"] == 15)
        #expect(m["apiary_evaluations_total"] == 4)
        #expect(abs((m["apiary_eval_accuracy"] ?? 0) - (1 - pow(0.75, 15))) < 1e-5)
    }

    @Test("evaluates after the interval when fewer than N versions were merged, and not again without a change")
    func interval() async throws {
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let calls = Atomic<Int>(0)
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 1000, interval: .milliseconds(300),
                                       metricsFactory: PrometheusExporter().factory, logger: quietLogger()) { _ in
            calls.add(1, ordering: .relaxed)
            return EvaluationResult(accuracy: nil, loss: 1)
        }
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "eval-2")
        defer { client.push.close() }
        try await running(evaluator) {
            try await eventually("the first evaluation") { evaluator.latest?.version == 0 }
            try client.sendUpdate(to: aggregator)
            try await eventually("the evaluation of version 1 after the interval", within: 30) { evaluator.latest?.version == 1 }
        }
        // That no evaluation follows without a new version is the schedule's rule, checked
        // with given times below, not by waiting here.
        #expect(calls.load(ordering: .relaxed) == 2)
        #expect(evaluator.latest?.accuracy == nil && evaluator.latest?.loss == 1)
    }

    @Test("the schedule: the first model at once, every N versions, a changed model after the interval, never the same version twice")
    func schedule() {
        let t0 = ContinuousClock.now
        var s = EvaluationSchedule(everyVersions: 5, interval: .milliseconds(300), start: t0)
        #expect(s.isDue(version: 0, lastEvaluated: nil, now: t0))
        s.started(at: t0)
        #expect(!s.isDue(version: 0, lastEvaluated: 0, now: t0 + .seconds(3600)), "no new version, no new evaluation, however long")
        #expect(!s.isDue(version: 4, lastEvaluated: 0, now: t0 + .milliseconds(299)))
        #expect(s.isDue(version: 5, lastEvaluated: 0, now: t0 + .milliseconds(1)), "N versions newer: at once")
        #expect(s.isDue(version: 1, lastEvaluated: 0, now: t0 + .milliseconds(300)), "changed, and the interval passed")
        s.started(at: t0 + .milliseconds(300))
        #expect(!s.isDue(version: 2, lastEvaluated: 1, now: t0 + .milliseconds(599)), "the interval runs from the last start")
        #expect(s.isDue(version: 2, lastEvaluated: 1, now: t0 + .milliseconds(600)))
        #expect(EvaluationSchedule(everyVersions: 0, interval: .seconds(1), start: t0).everyVersions == 1)
    }

    @Test("merging goes on while an evaluation is in progress; the evaluation sees the model it started with")
    func slowEvaluatorDoesNotBlockMerges() async throws {
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let inside = Atomic<Bool>(false)
        let release = Atomic<Bool>(false)
        defer { release.store(true, ordering: .relaxed) }
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 1, metricsFactory: PrometheusExporter().factory,
                                       logger: quietLogger()) { model in
            inside.store(true, ordering: .relaxed)
            // An evaluation that lasts until the test lets it finish.
            while !release.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            return EvaluationResult(accuracy: Double(model.parameters[0]), loss: 0)
        }
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "eval-3")
        defer { client.push.close() }
        try await running(evaluator) {
            try await eventually("the evaluation to start", within: 30) { inside.load(ordering: .relaxed) }
            for i in 1...20 {
                try client.sendUpdate(to: aggregator)
                try await eventually("merge \(i)", within: 30) { aggregator.latestModel?.version == UInt64(i) }
            }
            // Twenty merges happened while the evaluation of version 0 was still running.
            #expect(evaluator.history.isEmpty)
            release.store(true, ordering: .relaxed)
            try await eventually("the evaluation to finish", within: 30) { !evaluator.history.isEmpty }
        }
        let first = try #require(evaluator.history.first)
        #expect(first.version == 0 && first.accuracy == 0, "it evaluated its own copy of version 0")
    }

    @Test("an evaluator that throws is logged and the service carries on")
    func throwingEvaluator() async throws {
        struct Broken: Error {}
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let calls = Atomic<Int>(0)
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 1, interval: .milliseconds(100),
                                       metricsFactory: PrometheusExporter().factory, logger: quietLogger()) { model in
            calls.add(1, ordering: .relaxed)
            if model.version == 0 { throw Broken() }
            return EvaluationResult(accuracy: 0.5, loss: nil)
        }
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "eval-4")
        defer { client.push.close() }
        try await running(evaluator) {
            try await eventually("a failed evaluation") { calls.load(ordering: .relaxed) >= 1 }
            try client.sendUpdate(to: aggregator)
            try await eventually("an evaluation after the failure") { evaluator.latest?.version == 1 }
        }
        #expect(evaluator.history.map(\.version) == [1])
    }
}
