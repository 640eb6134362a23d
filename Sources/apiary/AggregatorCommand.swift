import ApiaryCommandLine
import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryObservability
import ArgumentParser
import Configuration
import Foundation
import Logging
import ApiaryServer
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
        var aggConfig = try AggregatorConfig(reader: reader)
        aggConfig.training.extra = try Settings.trainingExtra(file: config)
        aggConfig.curve = try Settings.serverCurve(reader, insecureFlag: insecure)
        aggConfig.insecure = aggConfig.curve == nil
        let served = try ServedModel.load(reader, override: model, logger: logger)
        let options = try AggregatorCommand.serverOptions(reader, layout: served.layout, sharded: aggConfig.shard != nil, logger: logger)
        let server = try AggregatorServer(config: aggConfig, layout: served.layout, initialParameters: served.parameters,
                                          options: options, logger: logger)
        try await server.run()
    }

    /// What watches the aggregator, from the config: the status server (`http.*`), the
    /// progress log (`progress.interval_s`) and, for the bundled digits model, the built-in
    /// evaluator on its test split (`evaluation.*`). Another model is scored by evaluator
    /// clients (`apiary evaluate`, or the user's own `Evaluator`).
    static func serverOptions(_ reader: ConfigReader, layout: ParameterLayout, sharded: Bool, logger: Logger) throws -> ServerOptions {
        let evaluation = try Settings.evaluation(reader)
        var options = ServerOptions(status: try Settings.statusServer(reader),
                                    progressInterval: Settings.duration(reader, "progress.interval_s", seconds: 5),
                                    activeWindow: Settings.duration(reader, "http.active_window_s", seconds: 60))
        if evaluation.enabled && !sharded && layout != DigitsModel.layout {
            logger.notice("the built-in evaluator scores the bundled digits model only: connect an evaluator client to score this model (docs/OBSERVABILITY.md, \"Evaluators and client metrics\")")
        } else if evaluation.enabled {
            let testSet = try DigitsModel.workload().testSet
            options.evaluation = ServerEvaluation(dataset: "digits test split (\(testSet.count) examples)", everyVersions: evaluation.everyVersions,
                                                  interval: evaluation.interval, history: evaluation.history) { model in
                let m = Evaluation.evaluate(parameters: model.parameters, on: testSet)
                return EvaluationResult(accuracy: m.accuracy, loss: m.loss)
            }
        }
        return options
    }
}
