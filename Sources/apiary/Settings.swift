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

/// The aggregator's, gateway's and demo's settings (the client's are in ApiaryCommandLine).
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

    static func staleness(_ r: ConfigReader) throws -> StalenessFunction {
        let kind = r.string(forKey: "fedasync.staleness.function", default: "polynomial")
        let a = r.double(forKey: "fedasync.staleness.a", default: 0.5)
        let b = r.double(forKey: "fedasync.staleness.b", default: 4)
        switch kind {
        case "constant": return .constant
        case "polynomial": return .polynomial(a: a)
        case "hinge": return .hinge(a: a, b: b)
        default: throw SettingsError("fedasync.staleness.function must be constant, polynomial or hinge, not '\(kind)'")
        }
    }

    static func aggregator(_ r: ConfigReader) throws -> AggregatorConfig {
        let maxStaleness = r.int(forKey: "fedasync.max_staleness", default: 128)
        guard maxStaleness >= 0 else { throw SettingsError("fedasync.max_staleness must not be negative") }
        let rule = FedAsync(alpha: r.double(forKey: "fedasync.alpha", default: 0.6), staleness: try staleness(r),
                            maxStaleness: UInt64(maxStaleness))
        let training = TrainingConfig(learningRate: r.double(forKey: "training.learning_rate", default: 0.1),
                                      localEpochs: r.int(forKey: "training.local_epochs", default: 1),
                                      batchSize: r.int(forKey: "training.batch_size", default: 16),
                                      proximalMu: r.double(forKey: "training.proximal_mu", default: 0))
        guard training.localEpochs >= 1, training.batchSize >= 1, training.learningRate > 0 else {
            throw SettingsError("training: local_epochs and batch_size must be at least 1 and learning_rate positive")
        }
        let c = AggregatorConfig(
            modelEndpoint: r.string(forKey: "endpoints.model", default: "tcp://127.0.0.1:5557"),
            snapshotEndpoint: r.string(forKey: "endpoints.snapshot", default: "tcp://127.0.0.1:5556"),
            updateEndpoint: r.string(forKey: "endpoints.update", default: "tcp://127.0.0.1:5558"),
            rule: rule,
            training: training,
            publishInterval: duration(r, "publish.interval_s", seconds: 0.02),
            heartbeatInterval: duration(r, "publish.heartbeat_s", seconds: 5),
            chunkParameters: r.int(forKey: "publish.chunk_parameters", default: 262_144),
            maxFrameBytes: Int64(r.int(forKey: "limits.max_frame_bytes", default: 16 << 20)),
            maxPayloadFrames: r.int(forKey: "limits.max_payload_frames", default: 65_536),
            receiptTimeout: duration(r, "limits.receipt_timeout_s", seconds: 10),
            dedupWindow: UInt64(try positive(r, "limits.dedup_window", default: 256)),
            updateQueueLimit: Int32(clamping: r.int(forKey: "limits.update_queue", default: 256)),
            ioThreads: try positive(r, "zmq.io_threads", default: 1),
            checkpointDirectory: r.string(forKey: "checkpoint.directory").flatMap { $0.isEmpty ? nil : $0 },
            checkpointInterval: duration(r, "checkpoint.interval_s", seconds: 0.25),
            checkpointEveryVersions: UInt64(try positive(r, "checkpoint.every_versions", default: 1000)),
            checkpointKeep: r.int(forKey: "checkpoint.keep", default: 3),
            ledgerPath: r.string(forKey: "ledger.path").flatMap { $0.isEmpty ? nil : $0 },
            maxUpdateNorm: r.double(forKey: "limits.max_update_norm").flatMap { $0 > 0 ? $0 : nil },
            normPolicy: try normPolicy(r)
        )
        var config = c
        let maxRows = r.int(forKey: "ledger.max_rows", default: LedgerRetention.default.maxRows ?? 0)
        guard maxRows >= 0 else { throw SettingsError("ledger.max_rows must be 0 (keep every row) or positive, got \(maxRows)") }
        let maxAge = r.double(forKey: "ledger.max_age_s", default: 0)
        guard maxAge >= 0 else { throw SettingsError("ledger.max_age_s must be 0 (no age limit) or positive, got \(maxAge)") }
        config.ledgerRetention = LedgerRetention(maxRows: maxRows == 0 ? nil : maxRows,
                                                 maxAge: maxAge == 0 ? nil : .milliseconds(Int64((maxAge * 1000).rounded())))
        let queueBytes = r.int(forKey: "limits.update_queue_bytes", default: 256 << 20)
        guard queueBytes >= 1 else { throw SettingsError("limits.update_queue_bytes must be positive") }
        config.updateQueueBytes = Int64(queueBytes)
        switch r.string(forKey: "algorithm", default: "fedasync") {
        case "fedasync": break
        case "fedavg":
            let expected = r.int(forKey: "sync.expected_clients", default: 0)
            guard expected >= 1 else { throw SettingsError("algorithm fedavg needs sync.expected_clients >= 1") }
            config.sync = FedAvgConfig(expectedClients: expected, minClients: { let m = r.int(forKey: "sync.min_clients", default: 0); return m > 0 ? m : expected }(),
                                       roundTimeout: duration(r, "sync.round_timeout_s", seconds: 60), optimizer: try serverOptimizer(r))
        case "fedbuff":
            config.buffer = try fedBuff(r)
        case let other: throw SettingsError("algorithm must be fedasync, fedavg or fedbuff, not '\(other)'")
        }
        // fedbuff read privacy.* with its buffer; the other algorithms take no noise.
        if config.buffer == nil, case let p = try Settings.privacy(r), p.mode != .off {
            throw SettingsError("privacy.mode \(p.mode.rawValue) needs algorithm fedbuff (the noise goes on a buffer's sum), not \(config.algorithm)")
        }
        config.anomaly = try anomaly(r)
        config.shard = try shard(r)
        config.compression = try compression(r)
        if let e = config.validationError() { throw SettingsError(e) }
        return config
    }

    /// `fedbuff.*` and `server_optimizer.*`: the buffer and its server step (defaults: FedBuffConfig's).
    static func fedBuff(_ r: ConfigReader) throws -> FedBuffConfig {
        let d = FedBuffConfig()
        let optimizer = try serverOptimizer(r)
        let wait = r.double(forKey: "fedbuff.max_wait_s", default: d.maxWait.map { Double($0.components.seconds) } ?? 0)
        let cap = r.int(forKey: "fedbuff.example_cap", default: Int(d.exampleCap))
        guard cap >= 1 else { throw SettingsError("fedbuff.example_cap must be >= 1, not \(cap)") }
        let aggregateName = r.string(forKey: "fedbuff.aggregate", default: d.aggregate.rawValue)
        guard let aggregate = FedBuffConfig.Aggregate(rawValue: aggregateName) else {
            throw SettingsError("fedbuff.aggregate must be one of \(FedBuffConfig.Aggregate.allCases.map(\.rawValue).joined(separator: ", ")), not '\(aggregateName)'")
        }
        var c = FedBuffConfig(bufferSize: r.int(forKey: "fedbuff.buffer_size", default: d.bufferSize),
                              maxWait: wait > 0 ? .milliseconds(Int64((wait * 1000).rounded())) : nil,
                              exampleWeighting: r.bool(forKey: "fedbuff.example_weighting", default: d.exampleWeighting),
                              exampleCap: UInt64(cap), optimizer: optimizer, aggregate: aggregate,
                              trimFraction: r.double(forKey: "fedbuff.trim_fraction", default: d.trimFraction))
        c.privacy = try privacy(r)
        if let e = c.validationError() { throw SettingsError(e) }
        return c
    }

    /// `robust.anomaly.*`: FedAsync's anomaly filter (defaults: AnomalyConfig's); nil when not enabled.
    static func anomaly(_ r: ConfigReader) throws -> AnomalyConfig? {
        r.bool(forKey: "robust.anomaly.enabled", default: false) ? try anomalySettings(r) : nil
    }

    /// The `robust.anomaly.*` parameters, whether or not the filter is enabled.
    static func anomalySettings(_ r: ConfigReader) throws -> AnomalyConfig {
        let d = AnomalyConfig()
        let c = AnomalyConfig(warmup: r.int(forKey: "robust.anomaly.warmup", default: d.warmup),
                              window: r.int(forKey: "robust.anomaly.window", default: d.window),
                              normThreshold: r.double(forKey: "robust.anomaly.norm_threshold", default: d.normThreshold),
                              cosineThreshold: r.double(forKey: "robust.anomaly.cosine_threshold", default: d.cosineThreshold),
                              decay: r.double(forKey: "robust.anomaly.decay", default: d.decay),
                              history: r.int(forKey: "robust.anomaly.history", default: d.history))
        if let e = c.validationError() { throw SettingsError(e) }
        return c
    }

    /// `privacy.*`: central differential privacy (fedbuff only; checked by the caller).
    static func privacy(_ r: ConfigReader) throws -> PrivacyConfig {
        let d = PrivacyConfig()
        let modeName = r.string(forKey: "privacy.mode", default: d.mode.rawValue)
        guard let mode = PrivacyConfig.Mode(rawValue: modeName) else {
            throw SettingsError("privacy.mode must be one of \(PrivacyConfig.Mode.allCases.map(\.rawValue).joined(separator: ", ")), not '\(modeName)'")
        }
        let sampling = r.string(forKey: "privacy.sampling", default: "none")
        let rate: Double?
        switch sampling {
        case "none": rate = nil
        case "poisson":
            guard let q = r.double(forKey: "privacy.sampling_rate") else {
                throw SettingsError("privacy.sampling poisson needs privacy.sampling_rate (q, in (0, 1])")
            }
            rate = q
        default: throw SettingsError("privacy.sampling must be none (no amplification) or poisson, not '\(sampling)'")
        }
        let budget = r.double(forKey: "privacy.epsilon_budget", default: 0)
        guard budget >= 0 else { throw SettingsError("privacy.epsilon_budget must be 0 (none) or positive, not \(budget)") }
        var c = PrivacyConfig(mode: mode, clip: r.double(forKey: "privacy.clip", default: d.clip),
                              noiseMultiplier: r.double(forKey: "privacy.noise_multiplier", default: d.noiseMultiplier),
                              delta: r.double(forKey: "privacy.delta", default: d.delta), samplingRate: rate,
                              epsilonBudget: budget > 0 ? budget : nil)
        if r.bool(forKey: "privacy.adaptive_clipping", default: false) {
            let a = PrivacyConfig.AdaptiveClipping()
            let countStd = r.double(forKey: "privacy.clipped_count_stddev", default: 0)
            guard countStd >= 0 else { throw SettingsError("privacy.clipped_count_stddev must be 0 (the default, max(K / 20, noise_multiplier)) or positive, not \(countStd)") }
            c.adaptiveClipping = .init(targetQuantile: r.double(forKey: "privacy.target_quantile", default: a.targetQuantile),
                                       learningRate: r.double(forKey: "privacy.clip_learning_rate", default: a.learningRate),
                                       countStandardDeviation: countStd > 0 ? countStd : nil)
        }
        if let e = c.validationError() { throw SettingsError(e) }
        return c
    }

    /// `compression.*`: the update codec the aggregator asks for (`codec` overrides the key).
    static func compression(_ r: ConfigReader, codec override: PayloadCodec? = nil) throws -> UpdateCompression {
        let codecName = r.string(forKey: "compression.codec", default: "float32")
        guard let codec = override ?? PayloadCodec(name: codecName) else {
            throw SettingsError("compression.codec must be one of \(PayloadCodec.allCases.map(\.name).joined(separator: ", ")), not '\(codecName)'")
        }
        return UpdateCompression(codec: codec, block: r.int(forKey: "compression.int8_block", default: UpdateCodec.defaultBlock),
                                 topKFraction: r.double(forKey: "compression.topk_fraction", default: UpdateCodec.defaultTopKFraction))
    }

    /// `server_optimizer.*`: the server step of fedbuff and of fedavg rounds.
    static func serverOptimizer(_ r: ConfigReader) throws -> ServerOptimizer.Config {
        let o = ServerOptimizer.Config()
        let kindName = r.string(forKey: "server_optimizer.kind", default: o.kind.rawValue)
        guard let kind = ServerOptimizer.Kind(rawValue: kindName) else {
            throw SettingsError("server_optimizer.kind must be one of \(ServerOptimizer.Kind.allCases.map(\.rawValue).joined(separator: ", ")), not '\(kindName)'")
        }
        let optimizer = ServerOptimizer.Config(kind: kind, learningRate: r.double(forKey: "server_optimizer.learning_rate", default: o.learningRate),
                                               beta1: r.double(forKey: "server_optimizer.beta1", default: o.beta1),
                                               beta2: r.double(forKey: "server_optimizer.beta2", default: o.beta2),
                                               epsilon: r.double(forKey: "server_optimizer.epsilon", default: o.epsilon))
        if let e = optimizer.validationError() { throw SettingsError(e) }
        return optimizer
    }

    /// `shards.*`: this aggregator's place among parameter shards; nil for one aggregator
    /// (no map, or a map of one entry).
    static func shard(_ r: ConfigReader) throws -> ShardConfig? {
        let models = r.stringArray(forKey: "shards.model", default: [])
        let snapshots = r.stringArray(forKey: "shards.snapshot", default: [])
        let updates = r.stringArray(forKey: "shards.update", default: [])
        guard models.count == snapshots.count, models.count == updates.count else {
            throw SettingsError("shards.model, shards.snapshot and shards.update must list the same number of shards (\(models.count), \(snapshots.count), \(updates.count))")
        }
        guard models.count > 1 else { return nil }
        let index = r.int(forKey: "shards.index", default: -1)
        guard (0..<models.count).contains(index) else {
            throw SettingsError("shards.index (SHARDS_INDEX) must be in 0..<\(models.count), got \(index)")
        }
        let boundaries = r.stringArray(forKey: "shards.boundaries", default: [])
        var bounds: [Int]?
        if !boundaries.isEmpty {
            bounds = try boundaries.map { s in
                guard let v = Int(s.trimmingCharacters(in: .whitespaces)) else { throw SettingsError("shards.boundaries: '\(s)' is not an integer") }
                return v
            }
        }
        return ShardConfig(index: index, map: models.indices.map { .init(model: models[$0], snapshot: snapshots[$0], update: updates[$0]) },
                           boundaries: bounds)
    }

    static func normPolicy(_ r: ConfigReader) throws -> NormPolicy {
        let v = r.string(forKey: "limits.norm_policy", default: "reject")
        guard let p = NormPolicy(rawValue: v) else { throw SettingsError("limits.norm_policy must be reject or clip, not '\(v)'") }
        return p
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
