import ApiaryAggregator
import ApiaryCore
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// What evaluating a model on a held-out set came to. Either value may be missing (an
/// evaluator that measures only a loss, say).
public struct EvaluationResult: Sendable, Hashable, Codable {
    /// Fraction of examples classified correctly, in [0, 1].
    public var accuracy: Double?
    /// Mean loss over the held-out examples.
    public var loss: Double?

    /// Makes a result.
    public init(accuracy: Double?, loss: Double?) {
        self.accuracy = accuracy
        self.loss = loss
    }
}

/// One evaluation of the global model.
public struct EvaluationPoint: Sendable, Hashable, Codable {
    /// When the evaluation finished.
    public var time: Date
    /// The model version evaluated.
    public var version: UInt64
    /// Accuracy, when the evaluator measures it.
    public var accuracy: Double?
    /// Loss, when the evaluator measures it.
    public var loss: Double?
    /// Seconds the evaluation took.
    public var seconds: Double
}

/// Evaluates the global model on a held-out set every `everyVersions` versions or every
/// `interval`, whichever comes first, off the merge path: it runs in its own task, reads
/// `Aggregator.latestModel` (an immutable copy) and never blocks the aggregator thread.
/// A slow evaluation skips the versions merged in the meantime.
///
/// Results go to the gauges `apiary_eval_accuracy`, `apiary_eval_loss` and
/// `apiary_eval_model_version`, and to a bounded in-memory history (`history`) that
/// `GET /history` and the dashboard show. A `Service`: run it in the aggregator's
/// `ServiceGroup`; it stops on cancellation or graceful shutdown.
public final class ModelEvaluator: Service, Sendable {
    /// The closure that evaluates one model. It may be slow (it runs in the evaluator's task)
    /// and may throw (the error is logged and the evaluator carries on).
    public typealias Evaluate = @Sendable (PublishedModel) async throws -> EvaluationResult

    /// What it evaluates on ("digits test split", say), shown with its results.
    public let dataset: String
    private let source: @Sendable () -> PublishedModel?
    private let evaluate: Evaluate
    private let everyVersions: UInt64
    private let interval: Duration
    private let capacity: Int
    private let logger: Logger
    private let accuracyGauge, lossGauge, versionGauge: Gauge
    private let runs: Counter
    private let changes: ChangeSignal?
    private let state = Mutex(State())

    private struct State {
        var history: [EvaluationPoint] = []
    }

    /// An evaluator of `aggregator`'s global model (of a parameter shard: its slice, which is
    /// why `apiary aggregator` makes no evaluator on a shard).
    /// - Parameters:
    ///   - everyVersions: evaluate once this many versions were merged since the last evaluation (at least 1)...
    ///   - interval: ...or once this long passed and the model changed.
    ///   - historyCapacity: evaluations kept in `history` (the oldest are dropped).
    ///   - metricsFactory: where the gauges go; nil: `MetricsSystem.factory`.
    ///   - evaluate: evaluates one model.
    ///   - dataset: what it evaluates on, shown on the dashboard and in `/status`.
    public convenience init(aggregator: Aggregator, dataset: String = "held-out data", everyVersions: UInt64 = 50, interval: Duration = .seconds(5),
                            historyCapacity: Int = 2000, metricsFactory: (any MetricsFactory)? = nil, logger: Logger,
                            evaluate: @escaping Evaluate) {
        self.init(source: { aggregator.latestModel }, changes: aggregator.statsChanged, dataset: dataset, everyVersions: everyVersions,
                  interval: interval, historyCapacity: historyCapacity, metricsFactory: metricsFactory, logger: logger, evaluate: evaluate)
    }

    /// An evaluator of whatever model `source` returns (nil: none yet). `changes`, when given,
    /// is announced whenever `source` may return a newer model: `run()` then waits on it
    /// instead of looking ten times a second.
    public init(source: @escaping @Sendable () -> PublishedModel?, changes: ChangeSignal? = nil, dataset: String = "held-out data", everyVersions: UInt64 = 50,
                interval: Duration = .seconds(5), historyCapacity: Int = 2000, metricsFactory: (any MetricsFactory)? = nil, logger: Logger,
                evaluate: @escaping Evaluate) {
        self.dataset = dataset
        self.source = source
        self.changes = changes
        self.evaluate = evaluate
        self.everyVersions = max(1, everyVersions)
        self.interval = interval
        self.capacity = max(1, historyCapacity)
        self.logger = logger
        let f = metricsFactory ?? MetricsSystem.factory
        accuracyGauge = Gauge(label: MetricCatalog.evalAccuracy, factory: f)
        lossGauge = Gauge(label: MetricCatalog.evalLoss, factory: f)
        versionGauge = Gauge(label: MetricCatalog.evalModelVersion, factory: f)
        runs = Counter(label: MetricCatalog.evaluations, factory: f)
    }

    /// The evaluations so far, oldest first (at most `historyCapacity`).
    public var history: [EvaluationPoint] { state.withLock { $0.history } }

    /// The most recent evaluation.
    public var latest: EvaluationPoint? { state.withLock { $0.history.last } }

    /// Evaluates the current model now, unless it was already evaluated; returns the new point.
    /// It may overlap an evaluation of `run()`; `history` keeps points in the order they finish.
    @discardableResult
    public func evaluateNow() async -> EvaluationPoint? {
        guard let model = source(), model.version != latest?.version else { return nil }
        return await run(on: model)
    }

    /// Evaluates the source's model when due, until cancelled or shut down gracefully: woken by
    /// `changes` (or, without it, ten times a second) and when the interval runs out.
    public func run() async throws {
        var schedule = EvaluationSchedule(everyVersions: everyVersions, interval: interval, start: .now)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let generation = changes?.generation
            if let model = source() {
                let now = ContinuousClock.now
                if schedule.isDue(version: model.version, lastEvaluated: latest?.version, now: now) {
                    schedule.started(at: now)
                    await run(on: model)
                }
            }
            if let changes, let generation {
                // A model that changed without being due becomes due when the interval runs out.
                let wake = max(schedule.lastStart + interval, .now + .milliseconds(1))
                try? await cancelWhenGracefulShutdown { await changes.wait(after: generation, until: wake) }
            } else {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(100)) }
            }
        }
    }

    @discardableResult
    private func run(on model: PublishedModel) async -> EvaluationPoint? {
        let started = ContinuousClock.now
        let result: EvaluationResult
        do {
            result = try await evaluate(model)
        } catch {
            logger.warning("evaluation failed", metadata: ["version": "\(model.version)", "error": "\(error)"])
            return nil
        }
        let took = ContinuousClock.now - started
        let point = EvaluationPoint(time: Date(), version: model.version, accuracy: result.accuracy, loss: result.loss,
                                    seconds: Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
        if let a = point.accuracy { accuracyGauge.record(a) }
        if let l = point.loss { lossGauge.record(l) }
        versionGauge.record(Int64(clamping: point.version))
        runs.increment()
        state.withLock {
            $0.history.append(point)
            if $0.history.count > capacity { $0.history.removeFirst($0.history.count - capacity) }
        }
        logger.debug("model evaluated", metadata: [
            "version": "\(point.version)", "accuracy": "\(point.accuracy.map { String(format: "%.4f", $0) } ?? "-")",
            "loss": "\(point.loss.map { String(format: "%.4f", $0) } ?? "-")",
        ])
        return point
    }
}

/// When `ModelEvaluator.run()` evaluates: the first model at once, then a model this many
/// versions newer than the last one evaluated, or a changed model once `interval` passed
/// since the last evaluation started. Never the same version twice. The time is a parameter,
/// so the rule is checked without waiting for a clock.
public struct EvaluationSchedule: Sendable {
    /// Versions between evaluations (a value below 1 counts as 1, as in `ModelEvaluator`).
    public let everyVersions: UInt64
    public let interval: Duration
    /// When the last evaluation started (or the schedule, before the first).
    public private(set) var lastStart: ContinuousClock.Instant

    public init(everyVersions: UInt64, interval: Duration, start: ContinuousClock.Instant) {
        self.everyVersions = max(1, everyVersions)
        self.interval = interval
        self.lastStart = start
    }

    /// Whether the model at `version` is due at `now`, `lastEvaluated` being the version of
    /// the newest evaluation (nil: none yet).
    public func isDue(version: UInt64, lastEvaluated: UInt64?, now: ContinuousClock.Instant) -> Bool {
        guard let last = lastEvaluated else { return true }
        return version >= last &+ everyVersions || (version != last && now - lastStart >= interval)
    }

    /// Records that an evaluation started at `now`.
    public mutating func started(at now: ContinuousClock.Instant) { lastStart = now }
}
