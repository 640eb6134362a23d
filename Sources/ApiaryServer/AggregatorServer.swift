@_exported import ApiaryAggregator
@_exported import ApiaryCore
@_exported import ApiaryObservability
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// How an `AggregatorServer` is watched: the status server (dashboard, `/status`,
/// `/history`, `/metrics`), a server-side evaluator, the progress log.
public struct ServerOptions: Sendable {
    /// Where the status server listens; nil: no HTTP server.
    public var status: StatusServerConfig?
    /// A server-side evaluator of the global model; nil: none (evaluator clients can still
    /// report, see `ClientRuntime(config:evaluator:)`).
    public var evaluation: ServerEvaluation?
    /// Log a progress line this often (zero: never).
    public var progressInterval: Duration
    /// A client counts as active on the dashboard when it sent an update within this long.
    public var activeWindow: Duration
    /// The Prometheus registry `/metrics` serves; nil: a new one for this server (so that two
    /// servers in one process keep their metrics apart). It replaces
    /// `AggregatorConfig.metricsFactory` unless that is set.
    public var exporter: PrometheusExporter?
    /// Signals that shut the server down gracefully while `run()` runs (empty: none, for a
    /// program that handles signals itself).
    public var gracefulShutdownSignals: [UnixSignal]

    public init(status: StatusServerConfig? = nil, evaluation: ServerEvaluation? = nil, progressInterval: Duration = .seconds(5),
                activeWindow: Duration = .seconds(60), exporter: PrometheusExporter? = nil,
                gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) {
        self.gracefulShutdownSignals = gracefulShutdownSignals
        self.status = status
        self.evaluation = evaluation
        self.progressInterval = progressInterval
        self.activeWindow = activeWindow
        self.exporter = exporter
    }
}

/// A server-side evaluation of the global model: what it runs on and how often. It runs in
/// its own task off the merge path (`ModelEvaluator`).
public struct ServerEvaluation: Sendable {
    /// What it evaluates on, shown on the dashboard ("digits test split (360 examples)", say).
    public var dataset: String
    /// Evaluate once this many versions were merged since the last evaluation...
    public var everyVersions: UInt64
    /// ...or once this long passed and the model changed.
    public var interval: Duration
    /// Evaluations kept for `/history` and the dashboard.
    public var history: Int
    /// Evaluates one model (the whole flat vector, in the layout's order).
    public var evaluate: ModelEvaluator.Evaluate

    public init(dataset: String, everyVersions: UInt64 = 50, interval: Duration = .seconds(5), history: Int = 2000,
                evaluate: @escaping ModelEvaluator.Evaluate) {
        self.dataset = dataset
        self.everyVersions = everyVersions
        self.interval = interval
        self.history = history
        self.evaluate = evaluate
    }
}

/// An aggregator with everything that watches it, ready to run: the one entry point for a
/// Swift program that serves a model (what `apiary aggregator` runs).
///
/// ```swift
/// let server = try AggregatorServer(config: config, modelFile: "model.safetensors",
///                                   options: ServerOptions(status: StatusServerConfig(port: 9464)), logger: logger)
/// try await server.run()          // until SIGTERM or SIGINT
/// ```
///
/// `run()` starts the aggregator, the status server, the evaluator and the progress log in
/// one `ServiceGroup` and shuts them down together. A program that has a service group of
/// its own adds `services` to it instead.
public final class AggregatorServer: Sendable {
    /// The aggregator (its stats, its latest model, `stop()`).
    public let aggregator: Aggregator
    /// The server-side evaluator, when `ServerOptions.evaluation` is set and the aggregator
    /// holds the whole model (not a parameter shard).
    public let evaluator: ModelEvaluator?
    /// The reports `/status` and `/history` serve, when there is a status server.
    public let monitor: AggregatorMonitor?
    /// The registry `/metrics` serves.
    public let exporter: PrometheusExporter
    /// The aggregator and its observers, in start order.
    public let services: [any Service]
    private let group: ServiceGroup
    private let status: StatusServerConfig?

    /// A server for `layout`, starting from `initialParameters` (or from the newest valid
    /// checkpoint in `config.checkpointDirectory`, which must hold the same layout).
    /// - Parameter onListening: called with the status server's port once it listens.
    public init(config: AggregatorConfig, layout: ParameterLayout, initialParameters: [Float], options: ServerOptions = ServerOptions(),
                logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) throws {
        let exporter = options.exporter ?? PrometheusExporter()
        var config = config
        if config.metricsFactory == nil { config.metricsFactory = exporter.factory }
        let aggregator = try Aggregator(config: config, layout: layout, initialParameters: initialParameters, logger: logger)
        let observers = Self.observers(of: aggregator, options: options, exporter: exporter, logger: logger, onListening: onListening)
        self.aggregator = aggregator
        self.status = options.status
        self.exporter = exporter
        self.evaluator = observers.evaluator
        self.monitor = observers.monitor
        self.services = [aggregator] + observers.services
        self.group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: options.gracefulShutdownSignals,
            logger: logger
        ))
    }

    /// A server for the model in a safetensors file: its tensors' names, shapes and starting
    /// weights (`ModelFile`: tensors in name order, float16/bfloat16/float64 widened to
    /// float32), less the tensors `exclude` (glob patterns) leaves out. What was converted
    /// and left out is logged.
    public convenience init(config: AggregatorConfig, modelFile: String, exclude: [String] = [], options: ServerOptions = ServerOptions(),
                            logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) throws {
        let loaded = try Self.loadModel(path: modelFile, exclude: exclude, logger: logger)
        try self.init(config: config, layout: loaded.layout, initialParameters: loaded.parameters, options: options,
                      logger: logger, onListening: onListening)
    }

    /// Reads a model file and logs what was loaded, converted and left out; the error names
    /// the file.
    public static func loadModel(path: String, exclude: [String] = [], logger: Logger) throws -> ModelFile.Loaded {
        let loaded: ModelFile.Loaded
        do {
            loaded = try ModelFile.load(path: path, exclude: exclude)
        } catch {
            throw ModelFileLoadError(description: "\(path): \(error)")
        }
        for (name, dtype) in loaded.converted {
            logger.notice("model tensor converted to float32", metadata: ["tensor": "\(name)", "dtype": "\(dtype)"])
        }
        for (name, dtype) in loaded.excluded {
            logger.notice("model tensor left out by model.exclude (not served, not trained)", metadata: ["tensor": "\(name)", "dtype": "\(dtype)"])
        }
        logger.notice("model loaded", metadata: [
            "file": "\(path)", "tensors": "\(loaded.layout.tensors.count)", "parameters": "\(loaded.layout.parameterCount)",
            "fingerprint": "\(Checkpoint.hex64(loaded.layout.fingerprint))", "converted": "\(loaded.converted.count)",
            "excluded": "\(loaded.excluded.count)", "order": "\(ModelFile.orderRule)",
        ])
        return loaded
    }

    /// Runs every service until `shutdown()`, a signal of `ServerOptions.gracefulShutdownSignals`
    /// or `aggregator.stop()`, then shuts them down gracefully: the aggregator takes no more
    /// updates, publishes its final version and writes its last checkpoint; the status server
    /// finishes the requests in flight. Throws what made a service fail (an address in use,
    /// say). Call it once.
    public func run() async throws {
        // Bind the sockets, resume the checkpoint and open the ledger first: an error there
        // (a port in use, a state directory that cannot be created) is reported alone,
        // before the status server and the other services start.
        // The status server's address too, before anything starts (the server binds it later,
        // in the service group: a port in use would otherwise stop an aggregator that had
        // already started a run).
        if let status, !aggregator.isRunning { try StatusServer.checkAddress(status) }
        if !aggregator.isRunning { try aggregator.start() }
        do {
            try await group.run()
        } catch {
            await aggregator.shutdown()
            throw error
        }
        await aggregator.shutdown()
    }

    /// Shuts a running server down gracefully (what SIGTERM does); `run()` then returns.
    public func shutdown() async {
        await group.triggerGracefulShutdown()
    }

    /// The services that watch `aggregator` (a plain one, or a gateway's): the evaluator (not
    /// on a parameter shard: it holds a slice), the monitor and status server, the progress log.
    public static func observers(of aggregator: Aggregator, options: ServerOptions, exporter: PrometheusExporter, logger: Logger,
                                 onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        -> (services: [any Service], evaluator: ModelEvaluator?, monitor: AggregatorMonitor?) {
        var services: [any Service] = []
        var evaluator: ModelEvaluator?
        if let e = options.evaluation {
            if aggregator.config.shard != nil {
                logger.notice("evaluation is off: a parameter shard holds a slice of the model, not the whole of it")
            } else {
                let made = ModelEvaluator(aggregator: aggregator, dataset: e.dataset, everyVersions: e.everyVersions, interval: e.interval,
                                          historyCapacity: e.history, metricsFactory: exporter.factory, logger: logger, evaluate: e.evaluate)
                evaluator = made
                services.append(made)
            }
        }
        var monitor: AggregatorMonitor?
        if let status = options.status {
            let m = AggregatorMonitor(aggregator: aggregator, evaluator: evaluator, activeWindow: options.activeWindow,
                                      metricsFactory: exporter.factory)
            monitor = m
            services.append(m)
            services.append(StatusServer(config: status, monitor: m, exporter: exporter, logger: logger, onListening: onListening))
        }
        if options.progressInterval > .zero {
            services.append(ProgressReporter(aggregator: aggregator, evaluator: evaluator, interval: options.progressInterval, logger: logger))
        }
        return (services, evaluator, monitor)
    }
}

/// A model file that cannot be served: the file and the reason, on one line.
public struct ModelFileLoadError: Error, CustomStringConvertible {
    public let description: String
}

/// Logs the aggregator's progress at an interval: version, merges, rejections, staleness,
/// active clients, the evaluator's latest result and the fleet's reported client metrics.
public struct ProgressReporter: Service {
    let aggregator: Aggregator
    let evaluator: ModelEvaluator?
    let interval: Duration
    let logger: Logger

    public init(aggregator: Aggregator, evaluator: ModelEvaluator?, interval: Duration, logger: Logger) {
        self.aggregator = aggregator
        self.evaluator = evaluator
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        var lastVersion: UInt64 = .max
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard let model = aggregator.latestModel, model.version != lastVersion else { continue }
            lastVersion = model.version
            logger.info("progress", metadata: Self.metadata(aggregator: aggregator, evaluator: evaluator))
        }
    }

    /// What one progress line says.
    public static func metadata(aggregator: Aggregator, evaluator: ModelEvaluator?) -> Logger.Metadata {
        let s = aggregator.stats
        var meta: Logger.Metadata = [
            "version": "\(s.version)", "merged": "\(s.merged)", "rejected": "\(s.rejectedTotal)",
            "mean_staleness": "\(String(format: "%.2f", s.meanStaleness))", "snapshots": "\(s.snapshotsServed)",
        ]
        meta["clients"] = "\(aggregator.activity.activeClients(within: 60))"
        if let e = evaluator?.latest {
            meta["accuracy"] = "\(e.accuracy.map { String(format: "%.4f", $0) } ?? "-")"
            meta["loss"] = "\(e.loss.map { String(format: "%.4f", $0) } ?? "-")"
            meta["eval_version"] = "\(e.version)"
        }
        // The newest result of each evaluator client, and the fleet's recent training metrics.
        for report in aggregator.fleet.latestReports().prefix(4) {
            for (name, value) in report.metrics.sorted(by: { $0.key < $1.key }).prefix(4) {
                meta["eval.\(report.evaluator).\(name)"] = "\(String(format: "%.4f", value))"
            }
        }
        let fleet = aggregator.fleet.clientMetrics()
        for (name, value) in fleet.values.sorted(by: { $0.key < $1.key }).prefix(8) {
            meta["client.\(name)"] = "\(String(format: "%.4f", value))"
        }
        return meta
    }
}
