import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryObservability
import ArgumentParser
import Configuration
import Foundation
import Logging
import ServiceLifecycle

struct AggregatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aggregator",
        abstract: "Run an aggregator: binds the model, snapshot and update sockets and merges updates as they arrive.",
        discussion: "Stops on SIGTERM or SIGINT. Keys of the config file can be overridden by environment variables (fedasync.alpha -> FEDASYNC_ALPHA)."
    )

    @Option(name: .long, help: "YAML config file (see Configs/aggregator.yaml).")
    var config: String?

    @Option(name: .long, help: "Log level (trace, debug, info, notice, warning, error, critical); overrides log.level.")
    var logLevel: String?

    @Flag(name: .long, help: "Run without CURVE encryption and authentication (any peer can send updates).")
    var insecure = false

    @Option(name: .long, help: "The model to serve: a safetensors file (its tensors' names, shapes and starting weights); overrides model.initial. Default: the bundled digits softmax.")
    var model: String?

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let level = try Settings.logLevel(reader, override: logLevel)
        let logger = LogSetup.bootstrap(level: level)
        var aggConfig = try Settings.aggregator(reader)
        aggConfig.training.extra = try Settings.trainingExtra(file: config)
        aggConfig.curve = try Settings.serverCurve(reader, insecureFlag: insecure)
        // Metrics go to one Prometheus registry, served on /metrics; bootstrapped before the
        // aggregator makes its instruments.
        let http = try Settings.statusServer(reader)
        let exporter = http.map { _ in PrometheusExporter.bootstrapSystem() }
        let served = try ServedModel.load(reader, override: model, logger: logger)
        let aggregator = try Aggregator(config: aggConfig, layout: served.layout,
                                        initialParameters: served.parameters, logger: logger)
        let services = [aggregator] + (try AggregatorCommand.observers(of: aggregator, reader: reader, http: http, exporter: exporter, logger: logger))
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }

    /// The services that watch an aggregator: the evaluator on the bundled test set (not on
    /// a parameter shard: it holds a slice), the status server, the progress log.
    static func observers(of aggregator: Aggregator, reader: ConfigReader, http: StatusServerConfig?, exporter: PrometheusExporter?,
                          logger: Logger) throws -> [any Service] {
        var services: [any Service] = []
        // Server-side evaluation on the bundled digits test set, in its own task.
        let evaluation = try Settings.evaluation(reader)
        var evaluator: ModelEvaluator?
        let digits = aggregator.layout == DigitsModel.layout
        if evaluation.enabled && aggregator.config.shard != nil {
            logger.notice("evaluation is off: a parameter shard holds a slice of the model, not the whole of it")
        } else if evaluation.enabled && !digits {
            logger.notice("the built-in evaluator scores the bundled digits model only: connect an evaluator client to score this model (docs/OBSERVABILITY.md, \"Evaluators and client metrics\")")
        }
        if evaluation.enabled && aggregator.config.shard == nil && digits {
            let testSet = try DigitsModel.workload().testSet
            evaluator = ModelEvaluator(aggregator: aggregator, dataset: "digits test split (\(testSet.count) examples)", everyVersions: evaluation.everyVersions, interval: evaluation.interval,
                                       historyCapacity: evaluation.history, logger: logger) { model in
                let m = Evaluation.evaluate(parameters: model.parameters, on: testSet)
                return EvaluationResult(accuracy: m.accuracy, loss: m.loss)
            }
            services.append(evaluator!)
        }
        if let http {
            let monitor = AggregatorMonitor(aggregator: aggregator, evaluator: evaluator,
                                            activeWindow: Settings.duration(reader, "http.active_window_s", seconds: 60))
            services.append(monitor)
            services.append(StatusServer(config: http, monitor: monitor, exporter: exporter, logger: logger))
        }
        let interval = Settings.duration(reader, "progress.interval_s", seconds: 5)
        if interval > .zero {
            services.append(ProgressReporter(aggregator: aggregator, evaluator: evaluator, interval: interval, logger: logger))
        }
        return services
    }
}

/// Logs the aggregator's progress (and the evaluator's latest test accuracy, when there is
/// one) at an interval.
struct ProgressReporter: Service {
    let aggregator: Aggregator
    let evaluator: ModelEvaluator?
    let interval: Duration
    let logger: Logger

    func run() async throws {
        var lastVersion: UInt64 = .max
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard let model = aggregator.latestModel, model.version != lastVersion else { continue }
            lastVersion = model.version
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
            logger.info("progress", metadata: meta)
        }
    }
}
