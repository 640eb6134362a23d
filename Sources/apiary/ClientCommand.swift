import ApiaryCommandLine
import ArgumentParser

/// `apiary client`: the same program as the edge binary `apiary-edge` (ClientOptions), kept
/// as a subcommand for convenience.
struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Run one client: joins the aggregator, trains the built-in digits model on its partition, pushes updates.",
        discussion: "Stops on SIGTERM or SIGINT. Keys of the config file can be overridden by environment variables (client.id -> CLIENT_ID). The edge binary apiary-edge runs the same client alone."
    )

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.run()
    }
}
