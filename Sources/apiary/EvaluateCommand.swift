import ApiaryCommandLine
import ApiaryClient
import ApiaryCore
import ApiaryLearning
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle

struct EvaluateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Run an evaluator: follows the newest model and reports its accuracy on the bundled digits test split to the aggregator.",
        discussion: """
            An evaluator is a client that does not train: it joins like one (same config file, keys and \
            endpoints; Configs/client.yaml), evaluates each newer model it receives on held-out data of its \
            own and sends the result as an EVALUATION_REPORT (docs/PROTOCOL.md), which the aggregator shows \
            on the dashboard, /status, /history, /metrics and the ledger. With CURVE its key must be authorized \
            like a client's. Stops on SIGTERM or SIGINT.
            """
    )

    @Option(name: .long, help: "YAML config file (see Configs/client.yaml).")
    var config: String?

    @Option(name: .long, help: "Evaluator id (a client id); overrides client.id. Default: evaluator.")
    var id: String?

    @Option(name: .long, help: "Log level; overrides log.level.")
    var logLevel: String?

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let level = try Settings.logLevel(reader, override: logLevel)
        let logger = LogSetup.bootstrap(level: level)
        var clientConfig = try ClientConfig(reader: reader, clientID: id ?? reader.string(forKey: "client.id") ?? "evaluator")
        try connection.apply(to: &clientConfig, reader: reader)
        if clientConfig.curve == nil {
            logger.warning("INSECURE: CURVE is off; reports travel unencrypted and unauthenticated")
        }
        let test = try DigitsModel.workload().testSet
        let evaluator = DigitsEvaluator(data: test, name: "digits test split (\(test.count) examples)")
        let client = try ClientRuntime(config: clientConfig, evaluator: evaluator, logger: logger)
        logger.info("evaluator starting", metadata: [
            "client": "\(clientConfig.clientID)", "dataset": "\(evaluator.dataset)", "snapshot": "\(clientConfig.snapshotEndpoint)",
        ])
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: client, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}
