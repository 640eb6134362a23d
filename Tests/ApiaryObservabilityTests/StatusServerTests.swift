import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("The status server: /status, /history, /metrics and / over real HTTP")
struct StatusServerTests {
    @Test("GET /status reports version, run id, clients with counts, rates and the config summary")
    func status() async throws {
        let exporter = PrometheusExporter()
        let checkpoints = temporaryDirectory("status")
        defer { try? FileManager.default.removeItem(atPath: checkpoints) }
        let aggregator = try makeAggregator(exporter: exporter, checkpointDirectory: checkpoints)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let monitor = AggregatorMonitor(aggregator: aggregator, metricsFactory: exporter.factory)
        // The first sample is stamped a second ago: rates need more than half a second behind
        // them, and the test does not wait for that to pass.
        monitor.sample(now: Date().addingTimeInterval(-1))
        let context = try Context()
        let a = try RawClient(context: context, endpoint: endpoints.update, clientID: "alpha")
        let b = try RawClient(context: context, endpoint: endpoints.update, clientID: "beta")
        defer { a.push.close(); b.push.close() }
        for i in 1...6 {
            try (i % 3 == 0 ? b : a).sendUpdate(to: aggregator)
            // Wait for the broadcast too: the next update is trained on version i (staleness 0).
            try await eventually("merge \(i)") { aggregator.stats.merged == UInt64(i) && aggregator.latestModel?.version == UInt64(i) }
        }
        try a.sendUpdate(to: aggregator, repeatSeq: true)
        try await eventually("the duplicate") { aggregator.stats.rejectedTotal == 1 }
        // Client activity is published twice a second.
        try await eventually("activity of both clients") { aggregator.activity.clients["alpha"]?.rejected == 1 && aggregator.activity.clients.count == 2 }
        try await eventually("a durable checkpoint") { aggregator.stats.durableVersion == 6 }

        try await withStatusServer(monitor: monitor, exporter: exporter) { port async throws in
            let answer = try await httpGet(port, "/status")
            #expect(answer.status == 200)
            #expect(answer.contentType == "application/json")
            let s = try StatusJSON.decoder.decode(StatusReport.self, from: answer.body)
            #expect(s.version == 6)
            #expect(s.runId.count == 16 && UInt64(s.runId, radix: 16) == aggregator.runID)
            #expect(s.updates.received == 7 && s.updates.merged == 6 && s.updates.rejected == 1)
            #expect(s.updates.rejectedByReason == ["duplicate": 1])
            #expect(s.clients.known == 2 && s.clients.active == 2)
            let alpha = try #require(s.clients.list.first { $0.id == "alpha" })
            #expect(alpha.received == 5 && alpha.merged == 4 && alpha.rejected == 1 && alpha.active)
            let beta = try #require(s.clients.list.first { $0.id == "beta" })
            #expect(beta.received == 2 && beta.merged == 2 && beta.rejected == 0)
            // Each merge waited for the previous one: staleness 0, six times.
            #expect(s.staleness.counts == [6] && s.staleness.max == 0 && s.staleness.overflowFrom == 64)
            // Rates cover the time since the first sample: merged * window = 6 merges.
            #expect(s.rates.windowSeconds > 1)
            #expect(abs(s.rates.mergedPerSecond * s.rates.windowSeconds - 6) < 1e-6)
            #expect(abs(s.rates.rejectedPerSecond * s.rates.windowSeconds - 1) < 1e-6)
            #expect(s.checkpoint.directory == checkpoints && s.checkpoint.durableVersion == 6)
            #expect(try #require(s.checkpoint.ageSeconds) >= 0)
            #expect(s.config.rule == "fedasync" && s.config.alpha == 0.5 && s.config.stalenessFunction == "polynomial(a=0.5)")
            #expect(s.config.endpoints.update == endpoints.update && s.config.endpoints.model == endpoints.model)
            #expect(s.config.checkpointDirectory == checkpoints && !s.config.curve && s.config.parameters == 15)
            #expect(!s.evaluation.enabled && s.evaluation.latest == nil)
            // The JSON keys are snake_case, a stable interface.
            let keys = try #require(try JSONSerialization.jsonObject(with: answer.body) as? [String: Any]).keys
            #expect(Set(keys) == ["version", "run_id", "time", "uptime_seconds", "updates", "rates", "staleness", "clients",
                                  "checkpoint", "traffic", "config", "evaluation", "fleet"])
        }
    }

    @Test("GET /history has a sample per second and every evaluation; GET / is the dashboard; /metrics is Prometheus text")
    func historyDashboardMetrics() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 1, metricsFactory: exporter.factory, logger: quietLogger()) { model in
            EvaluationResult(accuracy: Double(model.version) / 10, loss: 1 / Double(model.version + 1))
        }
        let monitor = AggregatorMonitor(aggregator: aggregator, evaluator: evaluator, metricsFactory: exporter.factory)
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "gamma")
        defer { client.push.close() }
        await evaluator.evaluateNow()
        monitor.sample()
        for i in 1...3 {
            try client.sendUpdate(to: aggregator)
            try await eventually("merge \(i)") { aggregator.latestModel?.version == UInt64(i) }
            await evaluator.evaluateNow()
            monitor.sample()
        }
        try await eventually("the client's activity") { aggregator.activity.clients.count == 1 }
        aggregator.fleet.record(report: EvaluationRecord(time: Date(), evaluator: "ev-1", dataset: "held out", version: 2, examples: 50,
                                                         metrics: ["accuracy": 0.75, "topK": 0.9]))
        aggregator.fleet.record(update: UpdateMetricsRecord(time: Date(), clientID: "gamma", version: 3, sampleCount: 30, metrics: ["valLoss": 0.5]))
        aggregator.fleet.record(update: UpdateMetricsRecord(time: Date(), clientID: "gamma", version: 3, sampleCount: 10, metrics: ["valLoss": 0.9]))
        monitor.sample()

        try await withStatusServer(monitor: monitor, exporter: exporter) { port async throws in
            let status = try await httpGet(port, "/status")
            let st = try StatusJSON.decoder.decode(StatusReport.self, from: status.body)
            // Metric names are kept as sent (not snake_cased); weighted by examples: (0.5*30 + 0.9*10) / 40.
            #expect(status.text.contains("\"valLoss\"") && status.text.contains("\"topK\""))
            #expect(abs((st.fleet.clientMetrics.values["valLoss"] ?? 0) - 0.6) < 1e-12)
            #expect(st.fleet.evaluators.map(\.evaluator) == ["ev-1"] && st.fleet.evaluators.first?.metrics["accuracy"] == 0.75)
            let h = try StatusJSON.decoder.decode(HistoryReport.self, from: try await httpGet(port, "/history").body)
            #expect(h.reports.map(\.evaluator) == ["ev-1"] && h.reports.first?.dataset == "held out")
            #expect(h.samples.last?.clientMetrics["valLoss"] != nil)
            #expect(h.samples.map(\.version) == [0, 1, 2, 3, 3])
            #expect(h.samples.map(\.t) == h.samples.map(\.t).sorted())
            #expect(h.evaluations.map(\.version) == [0, 1, 2, 3])
            #expect(h.evaluations.map(\.accuracy) == [0, 0.1, 0.2, 0.3])
            #expect(h.evaluations.last?.loss == 0.25)
            #expect(h.now >= h.start)

            let page = try await httpGet(port, "/")
            #expect(page.status == 200 && page.contentType.hasPrefix("text/html"))
            for id in ["version", "merged-rate", "rejected-rate", "active-clients", "accuracy-chart", "loss-chart",
                       "throughput-chart", "staleness-chart", "clients"] {
                #expect(page.text.contains("id=\"\(id)\""), "the dashboard has #\(id)")
            }
            #expect(page.text.contains("fetch(\"/status\"") && page.text.contains("fetch(\"/history\""))
            // Self-contained: nothing is loaded from elsewhere.
            let external = page.text.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
            #expect(!external.contains("http://") && !external.contains("https://") && !external.contains("src=") && !external.contains("<link"))

            let metrics = try await httpGet(port, "/metrics")
            #expect(metrics.status == 200 && metrics.contentType == PrometheusExporter.contentType)
            let m = Exposition(metrics.text)
            #expect(m.problems.isEmpty)
            #expect(m["apiary_model_version"] == 3 && m["apiary_eval_accuracy"] == 0.3 && m["apiary_connected_clients"] == 1)
            #expect(metrics.text.contains("apiary_client_metric{name=\"valLoss\"} 0.6"), "\(metrics.text)")
            #expect(metrics.text.contains("apiary_evaluator_metric{") && metrics.text.contains("evaluator=\"ev-1\""))
            #expect(metrics.text.contains("apiary_evaluator_model_version{"))

            let health = try await httpGet(port, "/healthz")
            #expect(health.status == 200 && health.text == "ok\n")
            #expect(try await httpGet(port, "/nope").status == 404)
        }
    }

    @Test("without an exporter /metrics says so with 404; the rest still works")
    func noExporter() async throws {
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        try aggregator.start()
        defer { aggregator.stop() }
        let monitor = AggregatorMonitor(aggregator: aggregator, metricsFactory: PrometheusExporter().factory)
        try await withStatusServer(monitor: monitor, exporter: nil) { port async throws in
            #expect(try await httpGet(port, "/metrics").status == 404)
            #expect(try await httpGet(port, "/status").status == 200)
        }
    }

    @Test("a stopped server no longer accepts connections")
    func stops() async throws {
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        try aggregator.start()
        defer { aggregator.stop() }
        let monitor = AggregatorMonitor(aggregator: aggregator, metricsFactory: PrometheusExporter().factory)
        let port = try await withStatusServer(monitor: monitor, exporter: nil) { port async throws in
            #expect(try await httpGet(port, "/healthz").status == 200)
            return port
        }
        await #expect(throws: (any Error).self) { _ = try await httpGet(port, "/healthz") }
    }

    @Test("a client counts as connected only while its updates arrive within the window")
    func activeWindow() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let context = try Context()
        let old = try RawClient(context: context, endpoint: endpoints.update, clientID: "old")
        let recent = try RawClient(context: context, endpoint: endpoints.update, clientID: "recent")
        defer { old.push.close(); recent.push.close() }
        try old.sendUpdate(to: aggregator)
        try await eventually("the first merge") { aggregator.activity.clients["old"] != nil }
        let oldSeen = try #require(aggregator.activity.clients["old"]).lastSeen
        // The clock has moved past the first arrival (by a few milliseconds at most): what
        // arrives now is seen later.
        try await eventually("the clock to move on") { Date().timeIntervalSince(oldSeen) > 0.002 }
        try recent.sendUpdate(to: aggregator)
        try await eventually("the second client") { aggregator.activity.clients["recent"] != nil }
        // Judge at the recent arrival, with a window of half the time between the two: the
        // recent client is inside it, the old one outside, whatever the scheduler did since.
        let now = try #require(aggregator.activity.clients["recent"]).lastSeen
        let gap = now.timeIntervalSince(oldSeen)
        #expect(gap > 0.002)
        let monitor = AggregatorMonitor(aggregator: aggregator, activeWindow: .seconds(gap / 2), metricsFactory: exporter.factory)
        let s = monitor.status(now: now)
        #expect(s.clients.known == 2)
        #expect(s.clients.active == 1)
        #expect(s.clients.list.map(\.id) == ["recent", "old"], "most recently seen first")
        #expect(s.clients.list.map(\.active) == [true, false])
        monitor.refreshGauges(now: now)
        #expect(Exposition(exporter.exposition())["apiary_connected_clients"] == 1)
    }
}

@Suite("The status server's start-up errors")
struct StatusServerStartTests {
    @Test("a port that is taken fails the server with an error naming the address and the config keys")
    func portTaken() async throws {
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        try aggregator.start()
        defer { aggregator.stop() }
        let monitor = AggregatorMonitor(aggregator: aggregator, metricsFactory: PrometheusExporter().factory)
        try await withStatusServer(monitor: monitor, exporter: nil) { port async throws in
            let second = StatusServer(config: StatusServerConfig(host: "127.0.0.1", port: port), monitor: monitor, exporter: nil,
                                      logger: quietLogger())
            do {
                try await second.run()
                Issue.record("a second server on port \(port) started")
            } catch let e as StatusServerError {
                #expect(e.description.contains("127.0.0.1:\(port)") && e.description.contains("http.port"))
            }
        }
    }
}
