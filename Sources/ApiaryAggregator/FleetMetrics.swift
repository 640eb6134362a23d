import ApiaryCore
import ApiaryProtocol
import Foundation
import Synchronization

/// What clients and evaluators told the aggregator about the model, for the status server,
/// `/metrics`, the dashboard and the progress log: the metrics that came with merged updates
/// (a window of the most recent ones) and the evaluators' reports (a bounded history).
///
/// Written by the aggregator thread when an update with metrics is merged or a report is
/// recorded; read from any thread (each read copies under a lock).
public final class FleetMetrics: Sendable {
    /// Merged updates with metrics kept for the client-metrics window.
    public let windowCapacity: Int
    /// Evaluation reports kept (the oldest are dropped).
    public let reportCapacity: Int
    private let state = Mutex(State())

    private struct State: Sendable {
        var window: [UpdateMetricsRecord] = []
        var next = 0
        var reports: [EvaluationRecord] = []
        var updatesWithMetrics: UInt64 = 0
        var reportsRecorded: UInt64 = 0
    }

    public init(windowCapacity: Int = 200, reportCapacity: Int = 2000) {
        self.windowCapacity = max(1, windowCapacity)
        self.reportCapacity = max(1, reportCapacity)
    }

    /// Records the metrics of one merged update.
    public func record(update r: UpdateMetricsRecord) {
        state.withLock { s in
            s.updatesWithMetrics += 1
            if s.window.count < windowCapacity {
                s.window.append(r)
            } else {
                s.window[s.next] = r
            }
            s.next = (s.next + 1) % windowCapacity
        }
    }

    /// Records one evaluation report.
    public func record(report r: EvaluationRecord) {
        state.withLock { s in
            s.reportsRecorded += 1
            s.reports.append(r)
            if s.reports.count > reportCapacity { s.reports.removeFirst(s.reports.count - reportCapacity) }
        }
    }

    /// The client metrics of the window, each averaged over the updates that carried it,
    /// weighted by their training examples (equally when none reported examples).
    public func clientMetrics() -> ClientMetricsSummary {
        let (window, total) = state.withLock { ($0.window, $0.updatesWithMetrics) }
        return ClientMetricsSummary(window, totalUpdates: total)
    }

    /// The evaluation reports kept, oldest first.
    public func reports() -> [EvaluationRecord] { state.withLock { $0.reports } }

    /// The newest report of each (evaluator, dataset), ordered by evaluator then dataset.
    public func latestReports() -> [EvaluationRecord] {
        var newest: [String: EvaluationRecord] = [:]
        for r in reports() { newest[r.seriesKey] = r }
        return newest.values.sorted { ($0.evaluator, $0.dataset) < ($1.evaluator, $1.dataset) }
    }

    /// Reports recorded since the start (including those no longer kept).
    public var reportsRecorded: UInt64 { state.withLock { $0.reportsRecorded } }
}

/// The metrics one merged update carried.
public struct UpdateMetricsRecord: Sendable, Hashable {
    public var time: Date
    public var clientID: String
    /// The model version the merge made.
    public var version: UInt64
    public var sampleCount: UInt64
    public var metrics: [String: Double]

    public init(time: Date, clientID: String, version: UInt64, sampleCount: UInt64, metrics: [String: Double]) {
        self.time = time
        self.clientID = clientID
        self.version = version
        self.sampleCount = sampleCount
        self.metrics = metrics
    }
}

/// Client metrics averaged over the window.
public struct ClientMetricsSummary: Sendable, Hashable, Codable {
    /// Updates in the window (merged updates that carried metrics).
    public var updates: Int
    /// Training examples behind them.
    public var examples: UInt64
    /// Merged updates with metrics since the start.
    public var totalUpdates: UInt64
    /// Versions the window spans (nil when empty).
    public var fromVersion: UInt64?
    public var toVersion: UInt64?
    /// Each metric's mean over the updates that carried it, weighted by examples.
    public var values: [String: Double]

    public init(_ window: [UpdateMetricsRecord], totalUpdates: UInt64) {
        updates = window.count
        examples = window.reduce(0) { $0 &+ $1.sampleCount }
        self.totalUpdates = totalUpdates
        fromVersion = window.map(\.version).min()
        toVersion = window.map(\.version).max()
        var sums: [String: (sum: Double, weight: Double)] = [:]
        let weighted = window.contains { $0.sampleCount > 0 }
        for r in window {
            let w = weighted ? Double(r.sampleCount) : 1
            guard w > 0 else { continue }
            for (k, v) in r.metrics {
                let s = sums[k] ?? (0, 0)
                sums[k] = (s.sum + v * w, s.weight + w)
            }
        }
        values = sums.compactMapValues { $0.weight > 0 ? $0.sum / $0.weight : nil }
    }
}

/// One evaluation report as recorded.
public struct EvaluationRecord: Sendable, Hashable, Codable {
    public var time: Date
    /// The evaluator's (authenticated) client id.
    public var evaluator: String
    public var dataset: String
    /// The model version it evaluated.
    public var version: UInt64
    public var examples: UInt64
    public var metrics: [String: Double]

    public init(time: Date, evaluator: String, dataset: String, version: UInt64, examples: UInt64, metrics: [String: Double]) {
        self.time = time
        self.evaluator = evaluator
        self.dataset = dataset
        self.version = version
        self.examples = examples
        self.metrics = metrics
    }

    /// Which series it belongs to: one per evaluator and dataset.
    public var seriesKey: String { "\(evaluator)\u{0}\(dataset)" }
}
