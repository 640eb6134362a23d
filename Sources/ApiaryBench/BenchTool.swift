import ArgumentParser

/// The `apiary-bench` executable's command: the suite (the default) and the hidden helpers
/// that the suite's child processes run. `apiary bench` runs the same suite; its children run
/// `apiary-bench` too (see `BenchChild`).
public struct BenchTool: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "apiary-bench",
        abstract: "Measure Apiary's speed against raw bounds measured in the same run.",
        discussion: BenchSuiteCommand.discussion,
        subcommands: [BenchSuiteCommand.self, BenchFootprintClientCommand.self, BenchFleetClientsCommand.self, BenchShardServerCommand.self],
        defaultSubcommand: BenchSuiteCommand.self
    )

    public init() {}
}
