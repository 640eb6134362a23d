import ApiaryClient
import ApiaryCore
import ApiaryLearning
import ArgumentParser
import Logging
import ServiceLifecycle

/// The options and the run of one training client process: `apiary client` and the edge
/// binary `apiary-edge` are the same program behind two names (same flags, same config keys,
/// same environment overrides, same strict check).
public struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file (see Configs/client.yaml).")
    public var config: String?

    @Option(name: .long, help: "Client id; overrides client.id.")
    public var id: String?

    @Option(name: .long, help: "Which client partition of the bundled workload (0-19) to train on; overrides data.partition.")
    public var partition: Int?

    @Option(name: .long, help: "Extra delay per local training run, in seconds; overrides data.delay_s.")
    public var delay: Double?

    @Option(name: .long, help: "Log level; overrides log.level.")
    public var logLevel: String?

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    /// Joins the aggregator, trains the built-in digits model on the partition and pushes
    /// updates until SIGTERM or SIGINT (then it stops gracefully: the running training step
    /// ends, the sockets close). Throws a `SettingsError` or `ValidationError` naming the key
    /// or flag for a bad config, before any socket is opened.
    public func run() async throws {
        let reader = try await Settings.reader(file: config)
        let level = try Settings.logLevel(reader, override: logLevel)
        let logger = LogSetup.bootstrap(level: level)
        var clientConfig = try ClientConfig(reader: reader, clientID: id)
        try connection.apply(to: &clientConfig, reader: reader)
        if clientConfig.curve == nil {
            logger.warning("INSECURE: CURVE is off; updates travel unencrypted and unauthenticated")
        }

        let workload = try DigitsModel.workload()
        let part = partition ?? reader.int(forKey: "data.partition", default: 0)
        guard (0..<workload.clientCount).contains(part) else {
            throw ValidationError("partition must be in 0..<\(workload.clientCount), got \(part)")
        }
        // The shared workload's device delays are for the demo and the benchmarks; a real client trains at full speed.
        let delaySeconds = delay ?? reader.double(forKey: "data.delay_s") ?? 0
        let trainer = SoftmaxRegression(dataset: workload.trainSet(client: part), clientID: part,
                                        shuffleSeed: UInt64(reader.int(forKey: "data.shuffle_seed", default: 0)),
                                        delay: delaySeconds > 0 ? .milliseconds(Int64(delaySeconds * 1000)) : nil)
        let client = try ClientRuntime(config: clientConfig, trainer: trainer, logger: logger)
        logger.info("client starting", metadata: [
            "client": "\(clientConfig.clientID)", "partition": "\(part)", "examples": "\(trainer.dataset.count)",
            "delay_s": "\(delaySeconds)", "update": "\(clientConfig.updateEndpoint)",
        ])
        let reporter = ClosureService { [client, logger] in
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(10)) }
                let s = client.stats
                logger.info("client progress", metadata: [
                    "rounds": "\(s.rounds)", "merged": "\(s.merged)", "rejected": "\(s.rejected)",
                    "resends": "\(s.resends)", "version": "\(s.modelVersion)", "pending": "\(s.pending)",
                ])
            }
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: client, successTerminationBehavior: .gracefullyShutdownGroup),
                       .init(service: reporter, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}
