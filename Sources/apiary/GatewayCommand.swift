import ApiaryCommandLine
import ApiaryAggregator
import ApiaryClient
import ApiaryGateway
import ApiaryObservability
import ApiaryServer
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run an IoT gateway: an aggregator for the devices behind it and one client of the tier above.",
        discussion: """
        The root keys of the config are those of an aggregator (Configs/aggregator.yaml): where the devices connect, \
        the gateway's own keys, the merge rule, checkpoints. upstream.* says how the gateway reaches the tier above \
        (upstream.endpoints.*, upstream.client.id, upstream.security.*), gateway.* when it pushes its progress \
        (see Configs/gateway.yaml). Stops on SIGTERM or SIGINT; environment variables override keys \
        (upstream.client.id -> UPSTREAM_CLIENT_ID).
        """
    )

    @Option(name: .long, help: "YAML config file (see Configs/gateway.yaml).")
    var config: String?

    @Option(name: .long, help: "Log level; overrides log.level.")
    var logLevel: String?

    @Flag(name: .long, help: "Run both sides without CURVE encryption and authentication.")
    var insecure = false

    @Option(name: .long, help: "The model's safetensors file, as the tier above serves it; overrides model.initial. Default: the bundled digits softmax.")
    var model: String?

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let level = try Settings.logLevel(reader, override: logLevel)
        let logger = LogSetup.bootstrap(level: level)
        var config = try GatewayConfig(reader: reader)
        config.downstream.curve = try Settings.serverCurve(reader, insecureFlag: insecure)
        config.downstream.insecure = config.downstream.curve == nil
        config.upstream.curve = try Settings.clientCurve(reader.scoped(to: "upstream"), insecureFlag: insecure)
        config.upstream.insecure = config.upstream.curve == nil
        if config.upstream.curve == nil {
            logger.warning("INSECURE: CURVE is off on the uplink; progress travels unencrypted and unauthenticated")
        }

        // The model's layout (and weights until the first upstream model arrives): the same
        // model.initial / --model as the aggregator above serves.
        let served = try ServedModel.load(reader, override: model, logger: logger)
        let options = try AggregatorCommand.serverOptions(reader, layout: served.layout, sharded: false, logger: logger)
        let exporter = PrometheusExporter()
        config.downstream.metricsFactory = exporter.factory
        let gateway = try Gateway(config: config,
                                  layout: served.layout, initialParameters: served.parameters, logger: logger)
        try gateway.startDownstream()
        logger.info("gateway started", metadata: [
            "upstream": "\(config.upstream.snapshotEndpoint)", "id": "\(config.upstream.clientID)",
            "push_every_merges": "\(config.pushEveryMerges)", "push_interval_s": "\(config.pushInterval)",
        ])
        var services: [any Service] = [gateway]
        services += AggregatorServer.observers(of: gateway.aggregator, options: options, exporter: exporter, logger: logger).services
        let progress = Settings.duration(reader, "progress.interval_s", seconds: 5)
        if progress > .zero {
            services.append(ClosureService { [gateway, logger] in
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: progress) }
                    let u = gateway.uplink.stats
                    let a = gateway.aggregator.stats
                    logger.info("uplink", metadata: [
                        "upstream_version": "\(u.modelVersion)", "pushed": "\(u.updatesSent)", "merged_upstream": "\(u.merged)",
                        "rejected_upstream": "\(u.rejected)", "pending": "\(u.pending)", "resends": "\(u.resends)",
                        "rebases": "\(a.rebases)", "unsent_merges": "\(a.unsentMerges)",
                    ])
                }
            })
        }
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}
