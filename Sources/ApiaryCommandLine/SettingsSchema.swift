import ApiaryCore
#if YAML
// Foundation: Yams hands back YAML null as NSNull (and Yams itself imports Foundation).
import Foundation
import Yams
#endif

/// Every config key Apiary reads, with the type of its value: the strict check that runs
/// before anything else at start. A key of the file that is not listed (`fedasync.alpah`, a
/// misspelt section `checkpont:`) or a value of the wrong type, in the file or in its
/// environment variable (`fedasync.alpha: high`, `FEDASYNC_ALPHA=abc`, `max_staleness: 1.5`),
/// stops the process with one line naming the key (or the variable) and what was expected,
/// instead of being ignored for the default.
///
/// Keep this table in step with the reads in `Settings` (and `Configs/*.yaml`, which document
/// every key).
public enum SettingsSchema {
    public enum Kind: Sendable {
        case int, double, bool, string, stringList
        /// A map of the user's own keys (`training.extra`): its contents are checked where it is read.
        case userMap

        public var expected: String {
            switch self {
            case .int: "an integer"
            case .double: "a number"
            case .bool: "true or false"
            case .string: "a string"
            case .stringList: "a list of strings (in the environment: comma-separated)"
            case .userMap: "a map of keys to numbers, strings or bools"
            }
        }
    }

    /// Keys of a client (and of a gateway's `upstream:` section, where they are read again).
    public static let clientKeys: [String: Kind] = [
        "client.id": .string, "client.max_backoff_s": .double, "client.max_pending_updates": .int,
        "client.new_model_wait_s": .double, "client.receipt_timeout_s": .double, "client.snapshot_timeout_s": .double,
        "endpoints.model": .string, "endpoints.snapshot": .string, "endpoints.update": .string,
        "security.insecure": .bool, "security.secret_key_file": .string, "security.server_public_key_file": .string,
    ]

    public static let keys: [String: Kind] = {
        var k: [String: Kind] = [
            "algorithm": .string,
            "checkpoint.directory": .string, "checkpoint.every_versions": .int, "checkpoint.interval_s": .double, "checkpoint.keep": .int,
            "data.delay_s": .double, "data.partition": .int, "data.shuffle_seed": .int,
            "demo.clients": .int, "demo.delay_scale": .double, "demo.gateways": .int, "demo.mode": .string,
            "demo.progress_interval_s": .double, "demo.report_dir": .string, "demo.shards": .int, "demo.sync_time_limit_s": .double,
            "demo.target_accuracy": .double, "demo.time_limit_s": .double,
            "evaluation.enabled": .bool, "evaluation.every_versions": .int, "evaluation.history": .int, "evaluation.interval_s": .double,
            "fedasync.alpha": .double, "fedasync.max_staleness": .int,
            "fedasync.staleness.a": .double, "fedasync.staleness.b": .double, "fedasync.staleness.function": .string,
            "gateway.push_every_merges": .int, "gateway.push_interval_s": .double,
            "http.active_window_s": .double, "http.host": .string, "http.port": .int,
            "ledger.path": .string, "ledger.max_rows": .int, "ledger.max_age_s": .double,
            "limits.dedup_window": .int, "limits.max_frame_bytes": .int, "limits.max_payload_frames": .int,
            "limits.max_update_norm": .double, "limits.norm_policy": .string, "limits.receipt_timeout_s": .double,
            "limits.update_queue": .int, "limits.update_queue_bytes": .int,
            "log.level": .string,
            "model.exclude": .stringList, "model.initial": .string,
            "progress.interval_s": .double,
            "publish.chunk_parameters": .int, "publish.heartbeat_s": .double, "publish.interval_s": .double,
            "security.authorized_keys": .string,
            "shards.boundaries": .stringList, "shards.index": .int, "shards.model": .stringList, "shards.snapshot": .stringList,
            "shards.update": .stringList,
            "sync.expected_clients": .int, "sync.max_rounds": .int, "sync.min_clients": .int, "sync.round_timeout_s": .double,
            "compression.codec": .string, "compression.int8_block": .int, "compression.topk_fraction": .double,
            "fedbuff.buffer_size": .int, "fedbuff.max_wait_s": .double, "fedbuff.example_weighting": .bool, "fedbuff.example_cap": .int,
            "fedbuff.aggregate": .string, "fedbuff.trim_fraction": .double,
            "privacy.mode": .string, "privacy.clip": .double, "privacy.noise_multiplier": .double, "privacy.delta": .double,
            "privacy.sampling": .string, "privacy.sampling_rate": .double, "privacy.epsilon_budget": .double,
            "privacy.adaptive_clipping": .bool, "privacy.target_quantile": .double, "privacy.clip_learning_rate": .double,
            "privacy.clipped_count_stddev": .double,
            "robust.anomaly.enabled": .bool, "robust.anomaly.warmup": .int, "robust.anomaly.window": .int,
            "robust.anomaly.norm_threshold": .double, "robust.anomaly.cosine_threshold": .double, "robust.anomaly.decay": .double, "robust.anomaly.history": .int,
            "server_optimizer.kind": .string, "server_optimizer.learning_rate": .double, "server_optimizer.beta1": .double,
            "server_optimizer.beta2": .double, "server_optimizer.epsilon": .double,
            "training.batch_size": .int, "training.extra": .userMap, "training.learning_rate": .double,
            "training.local_epochs": .int, "training.proximal_mu": .double,
            "zmq.io_threads": .int,
        ]
        for (key, kind) in clientKeys {
            k[key] = kind
            k["upstream." + key] = kind
        }
        return k
    }()

    /// The environment variable of `key`: `fedasync.alpha` -> `FEDASYNC_ALPHA`.
    public static func environmentName(_ key: String) -> String {
        String(key.uppercased().map { $0 == "." ? "_" : $0 })
    }

    /// Checks the YAML text of a config file (named `file` in messages) and the environment
    /// variables of known keys. Throws a `SettingsError` naming the first problem.
    public static func check(yaml text: String?, file: String?, environment: [String: String]) throws {
        if let text {
            let root: Any?
            do {
                root = try load(yaml: text)
            } catch {
                throw SettingsError("config file \(file ?? "?") is not valid YAML: \(error)")
            }
            if let root {
                guard let map = root as? [String: Any] else {
                    throw SettingsError("config file \(file ?? "?") must be a map of sections and keys, not \(describe(root))")
                }
                try check(map: map, prefix: "", file: file ?? "?")
            }
        }
        for (key, kind) in keys.sorted(by: { $0.key < $1.key }) {
            let name = environmentName(key)
            guard let value = environment[name], !value.isEmpty else { continue }
            if let problem = problem(environmentValue: value, kind: kind) {
                throw SettingsError("environment variable \(name) (\(key)): expected \(kind.expected), got '\(PeerText.escaped(value))'\(problem)")
            }
        }
    }

    /// The file's content as Yams.load gives it: with Yams (the `YAML` trait, `apiary`), else
    /// with FlatYAML (the edge build, which links no Foundation).
    static func load(yaml text: String) throws -> Any? {
        #if YAML
        return try Yams.load(yaml: text)
        #else
        return try FlatYAML.parse(text).map(FlatYAML.loaded)
        #endif
    }

    private static func check(map: [String: Any], prefix: String, file: String) throws {
        for key in map.keys.sorted() {
            let full = prefix + key
            let value = map[key]!
            if let kind = keys[full] {
                if let problem = problem(yamlValue: value, kind: kind) {
                    throw SettingsError("config file \(file): \(full): expected \(kind.expected), got \(problem)")
                }
                continue
            }
            let isSection = keys.keys.contains { $0.hasPrefix(full + ".") }
            if isSection, let sub = value as? [String: Any] {
                try check(map: sub, prefix: full + ".", file: file)
                continue
            }
            if isSection {
                throw SettingsError("config file \(file): \(full) is a section: expected a map of its keys, got \(describe(value))")
            }
            let what = value is [String: Any] ? "section" : "key"
            let hint = suggestion(for: full, section: value is [String: Any]).map { " (did you mean '\($0)'?)" } ?? ""
            throw SettingsError("config file \(file): unknown \(what) '\(full)'\(hint); the keys are documented in Configs/*.yaml")
        }
    }

    /// Nil when `value` (as Yams loaded it) fits `kind`; else what it is.
    private static func problem(yamlValue value: Any, kind: Kind) -> String? {
        if isNull(value) { return nil }
        switch kind {
        case .int:
            if value is Int { return nil }
        case .double:
            if let d = value as? Double, !d.isFinite { return "\(d)" }
            if value is Int || value is Double { return nil }
        case .bool:
            if value is Bool { return nil }
        case .string:
            if value is String || value is Int || value is Double { return nil }
        case .stringList:
            if let list = value as? [Any], list.allSatisfy({ $0 is String || $0 is Int || $0 is Double }) { return nil }
        case .userMap:
            if value is [String: Any] { return nil }
        }
        return describe(value)
    }

    private static func isNull(_ value: Any) -> Bool {
        #if YAML
        if value is NSNull { return true }
        #endif
        return value is FlatYAML.Null
    }

    /// Nil when an environment variable's text fits `kind`; else a short note (may be empty).
    private static func problem(environmentValue s: String, kind: Kind) -> String? {
        switch kind {
        case .int: return Int(s) == nil ? "" : nil
        case .double:
            guard let d = Double(s) else { return "" }
            return d.isFinite ? nil : " (not finite)"
        case .bool: return ["true", "false", "yes", "no", "1", "0"].contains(s.lowercased()) ? nil : ""
        case .string, .stringList, .userMap: return nil
        }
    }

    private static func describe(_ value: Any) -> String {
        switch value {
        case let b as Bool: return "the bool \(b)"
        case let i as Int: return "the integer \(i)"
        case let d as Double: return "the number \(d)"
        case let s as String: return "'\(PeerText.escaped(s))'"
        case is [Any]: return "a list"
        case is [String: Any]: return "a map"
        case is FlatYAML.Timestamp: return "Date"  // what Yams makes of it, in the same words
        default: return "\(type(of: value))"
        }
    }

    /// The known key (or section, for a misspelt section) nearest to `key`, when it is close.
    private static func suggestion(for key: String, section: Bool) -> String? {
        var candidates = Set(keys.keys)
        if section {
            for k in keys.keys {
                var parts = k.split(separator: ".")
                while parts.count > 1 {
                    parts.removeLast()
                    candidates.insert(parts.joined(separator: "."))
                }
            }
        }
        var best: (key: String, distance: Int)?
        for candidate in candidates.sorted() {
            let d = distance(key, candidate)
            if best == nil || d < best!.distance { best = (candidate, d) }
        }
        guard let best, best.distance <= Swift.max(2, key.count / 4) else { return nil }
        return best.key
    }

    /// Levenshtein distance.
    private static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        if a.isEmpty { return b.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let saved = row[j]
                let substitution: Int = previous + (a[i - 1] == b[j - 1] ? 0 : 1)
                let insertion: Int = row[j - 1] + 1
                let deletion: Int = row[j] + 1
                row[j] = Swift.min(deletion, insertion, substitution)
                previous = saved
            }
        }
        return row[b.count]
    }
}
