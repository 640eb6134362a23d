import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("Prometheus metrics of the aggregator")
struct MetricsTests {
    @Test("counters, histograms and gauges follow merged and rejected updates exactly")
    func countsFollowUpdates() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter, maxStaleness: 3)
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let context = try Context()
        let client = try RawClient(context: context, endpoint: endpoints.update, clientID: "edge-1")
        defer { client.push.close() }

        // Five merges, each waiting for the previous one so their staleness is 0.
        for i in 1...5 {
            try client.sendUpdate(to: aggregator)
            try await eventually("merge \(i)") { aggregator.stats.merged == UInt64(i) && aggregator.latestModel?.version == UInt64(i) }
        }
        try client.sendUpdate(to: aggregator, repeatSeq: true)        // duplicate
        try client.sendUpdate(to: aggregator, base: 1)                 // staleness 4 > 3: too_stale
        try client.sendWrongLayout(to: aggregator)                     // layout_mismatch
        try await eventually("8 updates") { aggregator.stats.received == 8 }

        let stats = aggregator.stats
        var m = Exposition("")
        try await eventually("the counters to catch up") {
            m = Exposition(exporter.exposition())
            return m["apiary_updates_received_total"] == 8 && m["apiary_bytes_received_total"] == Double(stats.bytesIn)
        }
        #expect(m.problems.isEmpty, "\(m.problems)")
        #expect(m["apiary_updates_merged_total"] == 5)
        #expect(m["apiary_updates_rejected_total{reason=\"duplicate\"}"] == 1)
        #expect(m["apiary_updates_rejected_total{reason=\"too_stale\"}"] == 1)
        #expect(m["apiary_updates_rejected_total{reason=\"layout_mismatch\"}"] == 1)
        #expect(m["apiary_updates_rejected_total{reason=\"non_finite\"}"] == 0, "every reason exists from the start")
        #expect(m["apiary_model_version"] == 5)
        #expect(m["apiary_update_staleness_count"] == 5)
        #expect(m["apiary_update_staleness_bucket{le=\"0.0\"}"] == 5)
        #expect(m["apiary_mixing_weight_count"] == 5)
        #expect(m["apiary_mixing_weight_sum"] == 2.5, "alpha 0.5 at staleness 0, five times")
        #expect(m["apiary_merge_duration_seconds_count"] == 5)
        #expect((m["apiary_merge_duration_seconds_sum"] ?? 0) > 0)
        #expect(m["apiary_bytes_sent_total"].map { $0 > 0 } == true)
        #expect(m.types["apiary_update_staleness"] == "histogram")
        #expect(m.types["apiary_updates_rejected_total"] == "counter")
        #expect(m.types["apiary_model_version"] == "gauge")
        #expect(m.helps["apiary_updates_merged_total"] == MetricCatalog.description(of: "apiary_updates_merged_total")?.help)
    }

    @Test("every metric in the exposition is in the catalog, with HELP and TYPE matching it")
    func expositionMatchesCatalog() async throws {
        let exporter = PrometheusExporter()
        let aggregator = try makeAggregator(exporter: exporter, checkpointDirectory: temporaryDirectory("catalog"))
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let evaluator = ModelEvaluator(aggregator: aggregator, everyVersions: 1, metricsFactory: exporter.factory, logger: quietLogger()) { _ in
            EvaluationResult(accuracy: 0.5, loss: 1)
        }
        let monitor = AggregatorMonitor(aggregator: aggregator, evaluator: evaluator, metricsFactory: exporter.factory)
        let context = try Context()
        let client = try RawClient(context: context, endpoint: endpoints.update, clientID: "edge-2")
        defer { client.push.close() }
        try client.sendUpdate(to: aggregator)
        try await eventually("a durable merge") { aggregator.stats.durableVersion == 1 }
        await evaluator.evaluateNow()
        try await eventually("the client's activity") { aggregator.activity.clients.count == 1 }
        // Client metrics and an evaluator's report make the fleet gauges.
        aggregator.fleet.record(update: UpdateMetricsRecord(time: Date(), clientID: "edge-2", version: 1, sampleCount: 5, metrics: ["loss": 0.5]))
        aggregator.fleet.record(report: EvaluationRecord(time: Date(), evaluator: "ev", dataset: "d", version: 1, examples: 3, metrics: ["accuracy": 0.5]))
        monitor.sample()

        let m = Exposition(exporter.exposition())
        #expect(m.problems.isEmpty, "\(m.problems)")
        for (family, type) in m.types {
            let d = try #require(MetricCatalog.description(of: family), "\(family) is not in the catalog")
            #expect(type == d.kind.rawValue, "\(family)")
            #expect(m.helps[family] == d.help, "\(family)")
        }
        // With checkpoints, an evaluator and a monitor, every catalog metric is exported
        // (the central-DP ones only with central DP: `privacyOnStatusAndMetrics`).
        for d in MetricCatalog.all where !d.name.hasPrefix("apiary_privacy_") {
            #expect(m.types[d.name] != nil, "\(d.name) is missing")
            #expect(d.name.hasPrefix("apiary_"))
            if d.kind == .counter { #expect(d.name.hasSuffix("_total"), "\(d.name)") }
        }
        #expect(m["apiary_eval_accuracy"] == 0.5)
        #expect(m["apiary_eval_model_version"] == 1)
        #expect(m["apiary_connected_clients"] == 1)
        #expect(m["apiary_checkpoint_version"] == 1)
        #expect((m["apiary_checkpoint_age_seconds"] ?? -1) >= 0)
        #expect((m["apiary_checkpoint_timestamp_seconds"] ?? 0) > 1_700_000_000)
    }

    @Test("central DP: epsilon after each flush on /status and /metrics")
    func privacyOnStatusAndMetrics() async throws {
        let exporter = PrometheusExporter()
        let privacy = PrivacyConfig(mode: .central, clip: 1, noiseMultiplier: 1.5, delta: 1e-6, epsilonBudget: 50)
        let aggregator = try makeAggregator(exporter: exporter, buffer: FedBuffConfig(bufferSize: 1, maxWait: nil, privacy: privacy))
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let monitor = AggregatorMonitor(aggregator: aggregator, metricsFactory: exporter.factory)
        #expect(monitor.status().privacy?.steps == 0 && monitor.status().privacy?.epsilon == 0)
        let context = try Context()
        let client = try RawClient(context: context, endpoint: endpoints.update, clientID: "edge-dp")
        defer { client.push.close() }
        for i in 1...2 {
            try client.sendDelta(to: aggregator, values: [Float](repeating: 0.1, count: testLayout.parameterCount))
            try await eventually("flush \(i)") { aggregator.stats.privacy?.steps == UInt64(i) && aggregator.latestModel?.version == UInt64(i) }
        }
        let expected = RDPAccountant.epsilon(noiseMultiplier: 1.5, samplingRate: 1, steps: 2, delta: 1e-6)
        let status = monitor.status()
        let p = try #require(status.privacy)
        #expect(abs(p.epsilon - expected) < 1e-9 && p.steps == 2 && p.delta == 1e-6 && p.epsilonBudget == 50 && !p.budgetExhausted)
        let json = String(decoding: try StatusJSON.encoder.encode(status), as: UTF8.self)
        #expect(json.contains(#""budget_exhausted":false"#) && json.contains(#""epsilon":"#))
        monitor.refreshGauges()
        let m = Exposition(exporter.exposition())
        #expect(m.problems.isEmpty, "\(m.problems)")
        #expect(abs((m["apiary_privacy_epsilon"] ?? 0) - expected) < 1e-6)
        #expect(m["apiary_privacy_steps"] == 2 && m["apiary_privacy_budget_exhausted"] == 0)
    }

    @Test("local DP: what clients must apply and one client's epsilon per update on /status")
    func localPrivacyOnStatus() async throws {
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                      insecure: true)
        config.localPrivacy = LocalDPConfig(clipNorm: 0.5, noiseMultiplier: 10)
        config.localPrivacyDelta = 1e-6
        let aggregator = try Aggregator(config: config, layout: testLayout,
                                        initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        _ = try aggregator.start()
        defer { aggregator.stop() }
        let status = AggregatorMonitor(aggregator: aggregator).status()
        let l = try #require(status.localPrivacy)
        #expect(status.privacy == nil)
        #expect(l.clipNorm == 0.5 && l.noiseMultiplier == 10 && l.delta == 1e-6)
        #expect(l.epsilonPerUpdate == RDPAccountant.epsilon(noiseMultiplier: 5, samplingRate: 1, steps: 1, delta: 1e-6))
        #expect(l.epsilonPer100Updates == RDPAccountant.epsilon(noiseMultiplier: 5, samplingRate: 1, steps: 100, delta: 1e-6))
        let json = String(decoding: try StatusJSON.encoder.encode(status), as: UTF8.self)
        #expect(json.contains(#""local_privacy":{"#) && json.contains(#""epsilon_per_update":"#), "\(json)")
    }

    @Test("an aggregator runs without a metrics factory and without a bootstrapped metrics system")
    func noBackendNoCost() async throws {
        // No MetricsSystem.bootstrap in this process's tests: a plain aggregator must run.
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                      insecure: true)
        config.metricsFactory = nil
        let aggregator = try Aggregator(config: config, layout: testLayout,
                                        initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        let endpoints = try aggregator.start()
        defer { aggregator.stop() }
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "edge-3")
        defer { client.push.close() }
        try client.sendUpdate(to: aggregator)
        try await eventually("a merge") { aggregator.stats.merged == 1 }
    }
}
