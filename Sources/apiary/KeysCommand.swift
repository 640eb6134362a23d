import ApiaryAggregator
import ArgumentParser
import Foundation
import ZeroMQ

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make CurveZMQ key pairs and authorize client keys.",
        discussion: """
            Examples:
              apiary keys generate --name aggregator --out keys
              apiary keys generate --name client-1 --out keys
              apiary keys authorize keys/client-1.public --id client-1 --to keys/authorized_keys
            """,
        subcommands: [Generate.self, Authorize.self]
    )

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write NAME.secret (mode 0600) and NAME.public into a directory.")

        @Option(name: .long, help: "Name of the key pair (file names NAME.secret and NAME.public).")
        var name: String

        @Option(name: .long, help: "Directory to write into (created if needed).")
        var out: String

        func run() throws {
            guard !name.isEmpty, !name.contains("/") else { throw ValidationError("--name must be a plain file name") }
            let pair = try CurveKeyPair.generate()
            let paths = try CurveKeyFile.write(pair, name: name, directory: out)
            // The public key only: secret keys are never printed or logged.
            print("wrote \(paths.secret) (secret, mode 0600) and \(paths.public)")
            print("public key: \(pair.publicKey)")
        }
    }

    struct Authorize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Append a client's public key to an authorized-keys file; a running aggregator picks it up for new connections.")

        @Argument(help: "The client's public key file (NAME.public).")
        var publicKeyFile: String

        @Option(name: .long, help: "The client id this key is known by (its updates are attributed to it).")
        var id: String

        @Option(name: .long, help: "The authorized-keys file (created if needed).")
        var to: String

        func run() throws {
            let key = try CurveKeyFile.readPublicKey(path: publicKeyFile)
            var existing = ""
            if FileManager.default.fileExists(atPath: to) {
                existing = try String(contentsOfFile: to, encoding: .utf8)
                let current = try AuthorizedKeys.parse(existing)
                if let other = current.clientID(forKey: key) {
                    throw ValidationError("that key is already authorized as '\(other)'")
                }
            }
            let line = "\(key) \(id)\n"
            // Validate the line as the aggregator will read it.
            _ = try AuthorizedKeys.parse(line)
            let text = existing.isEmpty || existing.hasSuffix("\n") ? existing + line : existing + "\n" + line
            try Data(text.utf8).write(to: URL(fileURLWithPath: to), options: .atomic)
            print("authorized \(id) in \(to)")
        }
    }
}
