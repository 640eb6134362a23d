import ApiaryCommandLine
import ArgumentParser
import Foundation

/// `apiary config check`: the strict start-up check of a config file and the environment,
/// without starting anything (for a deployment pipeline, or before a restart).
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check config files.",
        subcommands: [Check.self]
    )

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check a config file and the environment variables of known keys: every key known, every value of its key's type (what every command checks at start). Exit status 1 with one line naming the key otherwise."
        )

        @Option(name: .long, help: "YAML config file.")
        var config: String?

        func run() async throws {
            _ = try await Settings.reader(file: config)
            _ = try Settings.trainingExtra(file: config)
            print("\(config ?? "(no file)"): ok")
        }
    }
}
