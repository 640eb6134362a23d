import ApiaryCommandLine
import ApiaryObservability
import ArgumentParser

/// swift-log's one-time stderr setup (ApiaryObservability's, shared with `apiary-bench`).
typealias LogSetup = ApiaryCommandLine.LogSetup

@main
struct Apiary: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apiary",
        abstract: "Asynchronous federated learning over ZeroMQ.",
        discussion: """
            An aggregator merges every client update the moment it arrives (FedAsync); clients \
            train on private data and never wait for each other.

            Examples:
              apiary demo                                  # aggregator + 20 clients in one process
              apiary demo --json                           # same, with a JSON summary as the last line
              apiary aggregator --config Configs/aggregator.yaml
              apiary aggregator --config Configs/aggregator.yaml --model my_model.safetensors
              apiary model export --state state/ --out trained.safetensors
              apiary client --config Configs/client.yaml --id client-3 --partition 3
            """,
        subcommands: [AggregatorCommand.self, ClientCommand.self, EvaluateCommand.self, GatewayCommand.self, DemoCommand.self, KeysCommand.self, ConfigCommand.self, ModelCommand.self, CheckpointCommand.self, LedgerCommand.self, BenchCommand.self, PrivacyCommand.self]
    )
}
