import ApiaryAggregator
import ApiaryCore
import Foundation
import Metrics
import ServiceLifecycle
import Synchronization

/// Watches an aggregator from outside its thread: samples its counters every second into a
/// bounded history (rates, the throughput chart), derives the gauges the aggregator cannot
/// know by itself (connected clients, checkpoint age, uptime), and builds the `/status` and
/// `/history` reports. Reads only `Aggregator.stats`, `activity` and `latestModel`, each a
/// copy taken under a lock, so it never slows the merge path.
///
/// A `Service`; `status()`, `history()` and `refreshGauges()` may be called from any thread.
public final class AggregatorMonitor: Service, Sendable {
    /// The aggregator watched.
    public let aggregator: Aggregator
    /// The evaluator whose results `/status` and `/history` include, if any.
    public let evaluator: ModelEvaluator?
    /// A client counts as connected when its last update arrived within this window.
    public let activeWindow: Duration
    private let rateWindow: Double = 60
    private let capacity: Int
    private let started = Date()
    private let clientsGauge, uptimeGauge: Gauge
    private let checkpointAgeGauge: Gauge?
    private let factory: any MetricsFactory
    private let samples = Mutex([Point]())

    /// One sample of the counters.
    private struct Point: Sendable {
        var time: Date
        var version: UInt64
        var received: UInt64
        var merged: UInt64
        var rejected: UInt64
        var activeClients: Int
        var clientMetrics: [String: Double]
    }

    /// A monitor of `aggregator`.
    /// - Parameters:
    ///   - evaluator: its results appear in the reports.
    ///   - activeWindow: the window of "connected" clients (ZeroMQ does not tell who is
    ///     connected: a client counts while its updates keep arriving).
    ///   - historyCapacity: samples kept (one a second; the default keeps 15 minutes).
    ///   - metricsFactory: where the gauges go; nil: `MetricsSystem.factory`.
    public init(aggregator: Aggregator, evaluator: ModelEvaluator? = nil, activeWindow: Duration = .seconds(60),
                historyCapacity: Int = 900, metricsFactory: (any MetricsFactory)? = nil) {
        self.aggregator = aggregator
        self.evaluator = evaluator
        self.activeWindow = activeWindow
        self.capacity = max(2, historyCapacity)
        let f = metricsFactory ?? MetricsSystem.factory
        factory = f
        clientsGauge = Gauge(label: MetricCatalog.connectedClients, factory: f)
        uptimeGauge = Gauge(label: MetricCatalog.uptime, factory: f)
        checkpointAgeGauge = aggregator.config.checkpointDirectory == nil ? nil : Gauge(label: MetricCatalog.checkpointAge, factory: f)
    }

    private var windowSeconds: Double {
        Double(activeWindow.components.seconds) + Double(activeWindow.components.attoseconds) / 1e18
    }

    /// Samples every second until cancelled or shut down gracefully.
    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            sample()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
    }

    /// Takes one sample, stamped `now`, and refreshes the gauges. Samples are kept in the
    /// order taken: stamp them in order.
    public func sample(now: Date = Date()) {
        let s = aggregator.stats
        let active = aggregator.activity.activeClients(within: windowSeconds, now: now)
        let p = Point(time: now, version: s.version, received: s.received, merged: s.merged, rejected: s.rejectedTotal,
                      activeClients: active, clientMetrics: aggregator.fleet.clientMetrics().values)
        samples.withLock {
            $0.append(p)
            if $0.count > capacity { $0.removeFirst($0.count - capacity) }
        }
        refreshGauges(now: now)
    }

    /// Brings the derived gauges up to date (called before every scrape, too).
    public func refreshGauges(now: Date = Date()) {
        let s = aggregator.stats
        clientsGauge.record(aggregator.activity.activeClients(within: windowSeconds, now: now))
        uptimeGauge.record(now.timeIntervalSince(started))
        if let checkpointAgeGauge, let t = s.lastCheckpointAt {
            checkpointAgeGauge.record(max(0, now.timeIntervalSince(t)))
        }
        if let p = s.privacy {
            Gauge(label: MetricCatalog.privacyEpsilon, factory: factory).record(p.epsilon)
            Gauge(label: MetricCatalog.privacySteps, factory: factory).record(Double(p.steps))
            Gauge(label: MetricCatalog.privacyBudgetExhausted, factory: factory).record(p.exhausted ? 1 : 0)
        }
        // The fleet's metrics, one labelled gauge each (the factory hands back the same
        // gauge for the same label and dimensions).
        for (name, v) in aggregator.fleet.clientMetrics().values {
            Gauge(label: MetricCatalog.clientMetric, dimensions: [("name", name)], factory: factory).record(v)
        }
        for r in aggregator.fleet.latestReports() {
            let who = [("evaluator", r.evaluator), ("dataset", r.dataset)]
            Gauge(label: MetricCatalog.evaluatorModelVersion, dimensions: who, factory: factory).record(Double(r.version))
            for (name, v) in r.metrics {
                Gauge(label: MetricCatalog.evaluatorMetric, dimensions: who + [("name", name)], factory: factory).record(v)
            }
        }
    }

    /// The report of `GET /status`.
    public func status(now: Date = Date()) -> StatusReport {
        let s = aggregator.stats
        let activity = aggregator.activity
        let config = aggregator.config
        let window = windowSeconds

        // Rates: from the oldest sample within the last minute to now.
        let base = samples.withLock { points in points.first { now.timeIntervalSince($0.time) <= rateWindow } }
        var rates = StatusReport.Rates(windowSeconds: 0, receivedPerSecond: 0, mergedPerSecond: 0, rejectedPerSecond: 0)
        if let base, now.timeIntervalSince(base.time) > 0.5 {
            let dt = now.timeIntervalSince(base.time)
            rates = .init(windowSeconds: dt,
                          receivedPerSecond: Double(s.received &- base.received) / dt,
                          mergedPerSecond: Double(s.merged &- base.merged) / dt,
                          rejectedPerSecond: Double(s.rejectedTotal &- base.rejected) / dt)
        }

        var counts = activity.stalenessCounts
        while let last = counts.last, last == 0 { counts.removeLast() }

        let totals = activity.totals
        let clients = activity.clients
            .sorted { $0.value.lastSeen != $1.value.lastSeen ? $0.value.lastSeen > $1.value.lastSeen : $0.key < $1.key }
            .prefix(StatusReport.clientListLimit)
            .map { id, a in
                let ago = max(0, now.timeIntervalSince(a.lastSeen))
                return StatusReport.Client(id: id, lastSeenSecondsAgo: ago, active: ago <= window,
                                           received: a.received, merged: a.merged, rejected: a.rejected,
                                           mergeShare: totals.merged == 0 ? 0 : Double(a.merged) / Double(totals.merged),
                                           weightShare: totals.mixingWeight > 0 ? a.mixingWeight / totals.mixingWeight : 0,
                                           starved: a.isStarved)
            }

        let endpoints = aggregator.endpoints.map { StatusReport.Endpoints(model: $0.model, snapshot: $0.snapshot, update: $0.update) }
            ?? StatusReport.Endpoints(model: config.modelEndpoint, snapshot: config.snapshotEndpoint, update: config.updateEndpoint)
        let publish = config.publishInterval.components
        let evaluations = evaluator?.history

        return StatusReport(
            version: s.version,
            runId: Self.hex(aggregator.runID),
            time: now,
            uptimeSeconds: now.timeIntervalSince(started),
            updates: .init(received: s.received, merged: s.merged, rejected: s.rejectedTotal,
                           rejectedByReason: Dictionary(uniqueKeysWithValues: s.rejected.filter { $0.value > 0 }.map { ($0.key.name, $0.value) })),
            rates: rates,
            staleness: .init(mean: s.meanStaleness, max: s.maxStaleness, counts: counts,
                             overflowFrom: AggregatorActivity.stalenessSlots - 1),
            clients: .init(active: activity.activeClients(within: window, now: now), known: activity.clients.count,
                           windowSeconds: window, list: Array(clients)),
            checkpoint: .init(directory: config.checkpointDirectory, durableVersion: s.durableVersion,
                              ageSeconds: config.checkpointDirectory == nil ? nil : s.lastCheckpointAt.map { max(0, now.timeIntervalSince($0)) }),
            traffic: .init(bytesIn: s.bytesIn, bytesOut: s.bytesOut, snapshotsServed: s.snapshotsServed, broadcasts: s.broadcasts),
            config: .init(rule: config.algorithm.rawValue, alpha: config.rule.alpha,
                          stalenessFunction: config.rule.staleness.description, maxStaleness: config.rule.maxStaleness,
                          endpoints: endpoints, checkpointDirectory: config.checkpointDirectory, ledgerPath: config.ledgerPath,
                          curve: config.curve != nil,
                          publishIntervalSeconds: Double(publish.seconds) + Double(publish.attoseconds) / 1e18,
                          parameters: aggregator.layout.parameterCount,
                          shard: config.shard.map { .init(index: $0.index, count: $0.map.count, start: aggregator.range.lowerBound, end: aggregator.range.upperBound) },
                          relay: config.relay ? .init(rebases: s.rebases, unsentMerges: s.unsentMerges, restoredPushes: s.restoredPushes) : nil),
            evaluation: .init(enabled: evaluator != nil, count: evaluations?.count ?? 0, latest: evaluations?.last, dataset: evaluator?.dataset),
            fleet: .init(clientMetrics: aggregator.fleet.clientMetrics(), evaluators: aggregator.fleet.latestReports(),
                         reportsRecorded: aggregator.fleet.reportsRecorded),
            privacy: s.privacy,
            localPrivacy: s.localPrivacy
        )
    }

    /// The report of `GET /history`: per-second samples and every evaluation kept.
    public func history(now: Date = Date()) -> HistoryReport {
        let points = samples.withLock { $0 }
        var out: [HistoryReport.Sample] = []
        out.reserveCapacity(points.count)
        for (i, p) in points.enumerated() {
            var merged = 0.0, rejected = 0.0
            if i > 0 {
                let q = points[i - 1]
                let dt = p.time.timeIntervalSince(q.time)
                if dt > 0 {
                    merged = Double(p.merged &- q.merged) / dt
                    rejected = Double(p.rejected &- q.rejected) / dt
                }
            }
            out.append(.init(t: p.time.timeIntervalSince(started), version: p.version, mergedPerSecond: merged,
                             rejectedPerSecond: rejected, activeClients: p.activeClients, clientMetrics: p.clientMetrics))
        }
        let reports = aggregator.fleet.reports().map {
            HistoryReport.Report(t: $0.time.timeIntervalSince(started), evaluator: $0.evaluator, dataset: $0.dataset,
                                 version: $0.version, metrics: $0.metrics)
        }
        let evaluations = (evaluator?.history ?? []).map {
            HistoryReport.Evaluation(t: $0.time.timeIntervalSince(started), version: $0.version, accuracy: $0.accuracy, loss: $0.loss)
        }
        return HistoryReport(start: started, now: now, samples: out, evaluations: evaluations,
                             evaluationDataset: evaluator?.dataset, reports: reports)
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }
}
