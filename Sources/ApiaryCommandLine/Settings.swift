#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ApiaryClient
import Configuration
import Logging
import SystemPackage
import ZeroMQ

/// Reads YAML config files with environment overrides: the key `fedasync.alpha` is
/// overridden by the variable `FEDASYNC_ALPHA`. Every key has a default, so a missing key
/// (or no file at all) gives the documented default.
public enum Settings {
    ///
    /// Strict: before anything is read, every key of the file must be a known one and every
    /// value (of the file, and of the environment variable of a known key) of the key's type
    /// (`SettingsSchema`); otherwise this throws a `SettingsError` naming the key.
    public static func reader(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> ConfigReader {
        var providers: [any ConfigProvider] = [EnvironmentVariablesProvider()]
        var text: String?
        if let file {
            guard FileManager.default.fileExists(atPath: file) else { throw SettingsError("config file not found: \(file)") }
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                #if YAML
                throw SettingsError("cannot read config file \(file): \(error.localizedDescription)")
                #else
                throw SettingsError("cannot read config file \(file): \(error)")  // no localizedDescription in FoundationEssentials
                #endif
            }
        }
        try SettingsSchema.check(yaml: text, file: file, environment: environment)
        if let file {
            do {
                #if YAML
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
                #else
                providers.append(try await FileProvider<FlatYAMLSnapshot>(filePath: FilePath(file)))
                #endif
            } catch {
                throw SettingsError("cannot read config file \(file): \(error)")
            }
        }
        return ConfigReader(providers: providers)
    }

    /// An integer key that must be at least 1: a smaller value is an error naming the key, not
    /// silently raised to 1.
    public static func positive(_ r: ConfigReader, _ key: String, default d: Int) throws -> Int {
        let v = r.int(forKey: ConfigKey(key), default: d)
        guard v >= 1 else { throw SettingsError("\(key) must be at least 1, got \(v)") }
        return v
    }

    public static func duration(_ r: ConfigReader, _ key: String, seconds: Double) -> Duration {
        Duration(configSeconds: r.double(forKey: ConfigKey(key), default: seconds))
    }

    /// A client's CURVE settings, or nil when `security.insecure` is true (or `--insecure`).
    /// The key files: `--key` / `--server-key`, else `security.secret_key_file` /
    /// `security.server_public_key_file`, else `keys/<client id>.secret` and
    /// `keys/aggregator.public` (what `apiary keys generate` writes). A missing file is an
    /// error that says how to make it.
    public static func clientCurve(_ r: ConfigReader, insecureFlag: Bool, clientID: String? = nil, key: String? = nil,
                            serverKey: String? = nil) throws -> CurveClientConfig? {
        if insecureFlag || r.bool(forKey: "security.insecure", default: false) { return nil }
        let configured = key ?? r.string(forKey: "security.secret_key_file").flatMap { $0.isEmpty ? nil : $0 }
        guard let secret = configured ?? clientID.map({ "keys/\($0).secret" }) else {
            throw SettingsError("security.secret_key_file (or --key) is required (make one with `apiary keys generate`), or run with --insecure")
        }
        let server = serverKey ?? r.string(forKey: "security.server_public_key_file").flatMap { $0.isEmpty ? nil : $0 } ?? "keys/aggregator.public"
        guard FileManager.default.fileExists(atPath: secret) else {
            let name = URL(fileURLWithPath: secret).deletingPathExtension().lastPathComponent
            throw SettingsError("no secret key file \(secret): make one with `apiary keys generate --name \(name) --out \(URL(fileURLWithPath: secret).deletingLastPathComponent().relativePath)` and have the operator authorize its .public file, pass --key FILE, or run with --insecure")
        }
        guard FileManager.default.fileExists(atPath: server) else {
            throw SettingsError("no aggregator public key file \(server): copy the aggregator's .public file there or pass --server-key FILE (security.server_public_key_file)")
        }
        return CurveClientConfig(keyPair: try CurveKeyFile.readPair(path: secret), serverPublicKey: try CurveKeyFile.readPublicKey(path: server))
    }

    /// `--aggregator tcp://HOST:PORT`: the snapshot endpoint; the model and update endpoints
    /// are on the next two ports (the aggregator's defaults 5556, 5557, 5558 keep this offset).
    public static func applyAggregator(_ address: String, to c: inout ClientConfig) throws {
        guard address.hasPrefix("tcp://"), let colon = address.lastIndex(of: ":"), colon > address.index(address.startIndex, offsetBy: 6),
              let port = Int(address[address.index(after: colon)...]), (1...65533).contains(port) else {
            throw SettingsError("--aggregator takes tcp://HOST:PORT (the snapshot port; model and update are PORT+1 and PORT+2), got '\(address)'; set endpoints.* in the config for other layouts")
        }
        let host = address[..<colon]
        c.snapshotEndpoint = address
        c.modelEndpoint = "\(host):\(port + 1)"
        c.updateEndpoint = "\(host):\(port + 2)"
    }

    /// The log level: `override` (a `--log-level` option) when given, else `log.level`.
    public static func logLevel(_ r: ConfigReader, override: String? = nil, default d: Logger.Level = .info) throws -> Logger.Level {
        if let override {
            guard let v = Logger.Level(rawValue: override) else { throw SettingsError("unknown log level '\(override)': one of trace, debug, info, notice, warning, error, critical") }
            return v
        }
        let s = r.string(forKey: "log.level", default: d.rawValue)
        guard let l = Logger.Level(rawValue: s) else { throw SettingsError("log.level must be one of trace, debug, info, notice, warning, error, critical") }
        return l
    }
}

/// A config problem: one line that names the key (or the variable) and what was expected.
public struct SettingsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
