import ApiaryAggregator
import ApiaryCommandLine
import ApiaryProtocol
import ApiaryClient
import ApiaryCore
import ApiaryObservability
import Configuration
import Foundation
import Logging
import SystemPackage
import Yams
import ZeroMQ

/// What the aggregator's, gateway's and demo's commands read beyond `AggregatorConfig(reader:)`
/// (files, the served model's evaluation, the status server); the client's are in
/// ApiaryCommandLine.
extension Settings {
    /// `training.extra` of the config file: the operator's settings for the user's own trainer,
    /// string keys with number, string or bool values, handed to every client with the
    /// snapshot. The environment variable `TRAINING_EXTRA` (a JSON object) is merged over the
    /// file's map, key by key.
    static func trainingExtra(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [String: TrainingValue] {
        var extra: [String: TrainingValue] = [:]
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw SettingsError("cannot read config file \(file): \(error)")
            }
            let root = try? Yams.load(yaml: text)
            if let training = (root as? [String: Any])?["training"] as? [String: Any], let map = training["extra"] {
                guard let map = map as? [String: Any] else { throw SettingsError("training.extra must be a map of keys to numbers, strings or bools") }
                for (k, v) in map {
                    switch v {
                    case let b as Bool: extra[k] = .bool(b)
                    case let i as Int: extra[k] = .number(Double(i))
                    case let d as Double: extra[k] = .number(d)
                    case let s as String: extra[k] = .string(s)
                    default: throw SettingsError("training.extra.\(k) must be a number, a string or a bool (not a list, map or null)")
                    }
                }
            }
        }
        if let json = environment["TRAINING_EXTRA"], !json.isEmpty {
            do {
                for (k, v) in try JSONDecoder().decode([String: TrainingValue].self, from: Data(json.utf8)) { extra[k] = v }
            } catch {
                throw SettingsError("TRAINING_EXTRA must be a JSON object of keys to numbers, strings or bools: \(json.prefix(200))")
            }
        }
        for (k, v) in extra {
            guard !k.isEmpty, k.utf8.count <= 128 else { throw SettingsError("training.extra: key '\(k.prefix(40))' must be 1 to 128 bytes") }
            if case .number(let d) = v, !d.isFinite { throw SettingsError("training.extra.\(k) is not finite") }
        }
        guard extra.count <= 256 else { throw SettingsError("training.extra has \(extra.count) keys (at most 256)") }
        return extra
    }

    /// The aggregator's CURVE settings, or nil when `security.insecure` is true.
    static func serverCurve(_ r: ConfigReader, insecureFlag: Bool) throws -> CurveServerConfig? {
        if insecureFlag || r.bool(forKey: "security.insecure", default: false) { return nil }
        guard let secret = r.string(forKey: "security.secret_key_file"), !secret.isEmpty else {
            throw SettingsError("security.secret_key_file is required (make one with `apiary keys generate`), or run with --insecure")
        }
        let pair = try CurveKeyFile.readPair(path: secret)
        let auth = r.string(forKey: "security.authorized_keys").flatMap { $0.isEmpty ? nil : $0 }
        guard let auth else { throw SettingsError("security.authorized_keys is required with CURVE (an empty file admits nobody)") }
        return CurveServerConfig(keyPair: pair, authorizedKeysPath: auth)
    }
}

// MARK: Observability: the status server, the evaluator, the demo report

extension Settings {
    /// The status server (`http.host`, `http.port`); nil when the port is 0 or missing.
    static func statusServer(_ r: ConfigReader) throws -> StatusServerConfig? {
        let port = r.int(forKey: "http.port", default: 0)
        guard (0...65535).contains(port) else { throw SettingsError("http.port must be in 0...65535 (0 = no status server)") }
        guard port > 0 else { return nil }
        return StatusServerConfig(host: r.string(forKey: "http.host", default: "127.0.0.1"), port: port)
    }

    /// How the aggregator evaluates its model on the bundled test set (`evaluation.*`).
    struct EvaluationSettings {
        var enabled: Bool
        var everyVersions: UInt64
        var interval: Duration
        var history: Int
    }

    static func evaluation(_ r: ConfigReader) throws -> EvaluationSettings {
        let every = r.int(forKey: "evaluation.every_versions", default: 50)
        guard every >= 1 else { throw SettingsError("evaluation.every_versions must be at least 1") }
        let interval = duration(r, "evaluation.interval_s", seconds: 5)
        guard interval > .zero else { throw SettingsError("evaluation.interval_s must be positive") }
        return EvaluationSettings(enabled: r.bool(forKey: "evaluation.enabled", default: true), everyVersions: UInt64(every),
                                  interval: interval, history: try positive(r, "evaluation.history", default: 2000))
    }
}
