import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ArgumentParser
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

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let level = try logLevel.map { l -> Logger.Level in
            guard let v = Logger.Level(rawValue: l) else { throw ValidationError("unknown log level \(l)") }
            return v
        } ?? Settings.logLevel(reader)
        let logger = LogSetup.bootstrap(level: level)
        var aggConfig = try Settings.aggregator(reader)
        aggConfig.curve = try Settings.serverCurve(reader, insecureFlag: insecure)
        let aggregator = try Aggregator(config: aggConfig, layout: DigitsModel.layout,
                                        initialParameters: DigitsModel.initialParameters, logger: logger)
        var services: [any Service] = [aggregator]
        let interval = Settings.duration(reader, "progress.interval_s", seconds: 5)
        if interval > .zero {
            let testSet = reader.bool(forKey: "evaluation.enabled", default: true) ? try DigitsModel.workload().testSet : nil
            services.append(ProgressReporter(aggregator: aggregator, testSet: testSet, interval: interval, logger: logger))
        }
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}

/// Logs the aggregator's progress (and test accuracy, when a test set is given) at an interval.
struct ProgressReporter: Service {
    let aggregator: Aggregator
    let testSet: Dataset?
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
            if let testSet {
                let m = Evaluation.evaluate(parameters: model.parameters, on: testSet)
                meta["accuracy"] = "\(String(format: "%.4f", m.accuracy))"
                meta["loss"] = "\(String(format: "%.4f", m.loss))"
            }
            logger.info("progress", metadata: meta)
        }
    }
}
