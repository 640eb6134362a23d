import ApiaryCommandLine
import ArgumentParser
import CEdgeMalloc

/// The edge binary's entry: malloc is tuned before any thread starts (one arena for all
/// threads, model-sized buffers mapped and unmapped whole), then the command runs.
@main
enum EdgeMain {
    static func main() async {
        apiary_edge_tune_malloc()
        await Edge.main()
    }
}

/// `apiary-edge`: the client alone, for gateways and small devices. The same program as
/// `apiary client` (ClientOptions): same flags, config keys and environment overrides, without
/// the aggregator, the HTTP server, SQLite or the benchmarks, and with the Swift runtime linked
/// in (`make edge`), so a device needs only libzmq.
struct Edge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apiary-edge",
        abstract: "Apiary's edge client: joins the aggregator, trains the built-in digits model on its partition, pushes updates.",
        discussion: """
            Stops on SIGTERM or SIGINT. Keys of the config file (Configs/client.yaml) can be overridden by \
            environment variables (client.id -> CLIENT_ID).

            Examples:
              apiary-edge --config /etc/apiary/client.yaml
              apiary-edge --config client.yaml --id gw-7 --partition 3 --aggregator tcp://10.0.0.2:5556
            """,
        subcommands: [FootprintClient.self]
    )

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.run()
    }
}

/// `apiary-edge footprint-client`: the footprint benchmark's client (hidden), so that
/// `apiary bench --only footprint` measures this binary on the same work as `apiary client`.
struct FootprintClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "footprint-client", abstract: "Helper of `apiary bench --only footprint`.", shouldDisplay: false)

    @OptionGroup var options: FootprintClientOptions

    func run() async throws {
        try await options.run()
    }
}
