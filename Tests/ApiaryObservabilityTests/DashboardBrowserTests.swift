import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import Foundation
import Testing
import ApiaryTesting

@Suite("The live dashboard in headless Chromium", .serialized, .enabled(if: Chromium.executable != nil, Comment(rawValue: Chromium.missing)))
struct DashboardBrowserTests {
    /// The first number captured by `pattern` in `text`.
    func number(_ pattern: String, in text: String) -> Int? {
        guard let regex = try? NSRegularExpression(pattern: pattern),
              let m = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
              let r = Range(m.range(at: 1), in: text) else { return nil }
        return Int(text[r])
    }

    @Test("the dashboard shows live data: the version advances between two loads and the charts have points")
    func liveData() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 10, interval: .milliseconds(300),
                                       metricsFactory: exporter.factory, logger: quietLogger()) { model in
            let mean = Double(model.parameters.reduce(0, +)) / Double(model.parameters.count)
            return EvaluationResult(accuracy: mean, loss: (1 - mean) * (1 - mean))
        }
        let monitor = AggregatorMonitor(aggregator: aggregator, evaluator: evaluator, metricsFactory: exporter.factory)
        let services = Task {
            async let e: Void = evaluator.run()
            async let m: Void = monitor.run()
            _ = try await (e, m)
        }
        defer { services.cancel() }
        // Three clients, a few duplicates among their updates (so that rejections show too).
        let feeder = Feeder(aggregator: aggregator, endpoint: endpoints.update, clients: ["feeder-0", "feeder-1", "feeder-2"],
                            period: .milliseconds(15), duplicateEvery: 9)
        defer { feeder.stop() }
        // What an evaluator process and clients with metrics would have sent (the wire path has
        // its own tests): two series of reports and client metrics.
        for v in 1...3 {
            aggregator.fleet.record(report: EvaluationRecord(time: Date(), evaluator: "eval-py", dataset: "my held-out set", version: UInt64(v),
                                                             examples: 100, metrics: ["accuracy": 0.5 + 0.1 * Double(v), "loss": 1 / Double(v)]))
            aggregator.fleet.record(update: UpdateMetricsRecord(time: Date(), clientID: "feeder-0", version: UInt64(v), sampleCount: 10,
                                                                metrics: ["train_loss": 1 / Double(v)]))
        }
        try await eventually("versions, evaluations and samples", within: 60) {
            aggregator.stats.version >= 30 && evaluator.history.count >= 3 && monitor.history().samples.count >= 2
                && aggregator.activity.clients.count == 3 && monitor.history().samples.contains { !$0.clientMetrics.isEmpty }
        }

        try await withStatusServer(monitor: monitor, exporter: exporter) { port async throws in
            let url = "http://127.0.0.1:\(port)/"
            let first = try await offPool { try Chromium.dumpDOM(url) }
            let v1 = try #require(number("<body[^>]*data-version=\"(\\d+)\"", in: first), "no version in the page:\n\(first.prefix(3000))")
            #expect(v1 >= 30)
            #expect(try #require(number("<body[^>]*data-refreshes=\"(\\d+)\"", in: first)) >= 1)
            #expect(first.contains("id=\"live\" class=\"ok\""), "the page says it is live")
            let accuracyPoints = try #require(number("id=\"accuracy-chart\"[^>]*data-points=\"(\\d+)\"", in: first))
            #expect(accuracyPoints >= 3, "the accuracy chart has a point per evaluation")
            #expect(try #require(number("id=\"throughput-chart\"[^>]*data-points=\"(\\d+)\"", in: first)) >= 1)
            #expect(try #require(number("id=\"staleness-chart\"[^>]*data-bars=\"(\\d+)\"", in: first)) >= 1)
            #expect(first.contains("<polyline"), "the charts are drawn as SVG lines")
            for id in ["feeder-0", "feeder-1", "feeder-2"] { #expect(first.contains(">\(id)<"), "the client table lists \(id)") }
            #expect(first.contains(">duplicate<"), "rejections are listed by reason")
            // Which evaluator and data each accuracy series comes from.
            #expect(try #require(number("id=\"accuracy-chart\"[^>]*data-series=\"(\\d+)\"", in: first)) == 2)
            #expect(first.contains("eval-py on my held-out set"), "the evaluator's series is named with its data")
            #expect(first.contains("aggregator on held-out data"), "the in-process series is named with its data")
            #expect(first.contains(">eval-py<"), "the evaluators table lists it")
            #expect(try #require(number("id=\"client-metrics-chart\"[^>]*data-points=\"(\\d+)\"", in: first)) >= 1)
            #expect(first.contains(">train_loss<"), "client metrics are listed")

            try await eventually("the model to move on", within: 30) { aggregator.stats.version > UInt64(v1) + 20 }
            let second = try await offPool { try Chromium.dumpDOM(url) }
            let v2 = try #require(number("<body[^>]*data-version=\"(\\d+)\"", in: second))
            #expect(v2 > v1, "the version advances: \(v1) then \(v2)")
            #expect(try #require(number("id=\"accuracy-chart\"[^>]*data-points=\"(\\d+)\"", in: second)) >= accuracyPoints)

            // A picture for people (git-ignored under .build).
            let png = repositoryRoot.appendingPathComponent(".build/dashboard.png").path
            try await offPool { try Chromium.screenshot(url, to: png) }
            let bytes = try #require(FileManager.default.contents(atPath: png))
            #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) && bytes.count > 10_000)
            print("dashboard screenshot: \(png)")
        }
    }
}
