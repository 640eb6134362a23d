import ApiaryBench
import ArgumentParser

/// `apiary bench`: the speed suite of ApiaryBench (the same as `apiary-bench`). Its child
/// processes run `apiary-bench`, built next to `apiary`.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure merge, ingest, sharded ingest, broadcast, fleet size and client footprint against raw bounds measured in the same run.",
        discussion: BenchSuiteCommand.discussion,
        subcommands: [BenchSuiteCommand.self],
        defaultSubcommand: BenchSuiteCommand.self
    )
}
