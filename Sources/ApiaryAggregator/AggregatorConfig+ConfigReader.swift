import ApiaryCore
import ApiaryProtocol
import Configuration

// The aggregator's settings from a swift-configuration reader (a YAML file with environment
// overrides in `apiary aggregator`; any provider in a program of one's own), as Hummingbird's
// `Application+ConfigReader.swift` does: each init starts from its type's own defaults and
// overrides only the keys present, so no default is written twice. The keys are listed in
// docs/OPERATIONS.md. What names files or the served model (CURVE keys, the status server,
// evaluation, `training.extra`) is the command's. A value out of range throws
// `AggregatorError` (`invalidConfig`) naming the key.

extension AggregatorConfig {
    public init(reader r: ConfigReader) throws {
        self.init()
        if let v = r.string(forKey: "endpoints.model") { modelEndpoint = v }
        if let v = r.string(forKey: "endpoints.snapshot") { snapshotEndpoint = v }
        if let v = r.string(forKey: "endpoints.update") { updateEndpoint = v }
        rule = try FedAsync(reader: r, defaults: rule)
        training = try TrainingConfig(reader: r, defaults: training)
        if let v = r.seconds("publish.interval_s") { publishInterval = v }
        if let v = r.seconds("publish.heartbeat_s") { heartbeatInterval = v }
        if let v = r.int(forKey: "publish.chunk_parameters") { chunkParameters = v }
        if let v = r.int(forKey: "limits.max_frame_bytes") { maxFrameBytes = Int64(v) }
        if let v = r.int(forKey: "limits.max_payload_frames") { maxPayloadFrames = v }
        if let v = r.seconds("limits.receipt_timeout_s") { receiptTimeout = v }
        if let v = try r.positive("limits.dedup_window") { dedupWindow = UInt64(v) }
        if let v = r.int(forKey: "limits.update_queue") { updateQueueLimit = Int32(clamping: v) }
        if let v = try r.positive("limits.update_queue_bytes") { updateQueueBytes = Int64(v) }
        if let v = try r.positive("zmq.io_threads") { ioThreads = v }
        // Left out or empty: no checkpoints, no ledger.
        checkpointDirectory = r.string(forKey: "checkpoint.directory").flatMap { $0.isEmpty ? nil : $0 }
        if let v = r.seconds("checkpoint.interval_s") { checkpointInterval = v }
        if let v = try r.positive("checkpoint.every_versions") { checkpointEveryVersions = UInt64(v) }
        if let v = r.int(forKey: "checkpoint.keep") { checkpointKeep = v }
        ledgerPath = r.string(forKey: "ledger.path").flatMap { $0.isEmpty ? nil : $0 }
        ledgerRetention = try LedgerRetention(reader: r, defaults: ledgerRetention)
        // 0 (or less) = no bound, as documented.
        if let v = r.double(forKey: "limits.max_update_norm") { maxUpdateNorm = v > 0 ? v : nil }
        if let v = r.string(forKey: "limits.norm_policy") {
            guard let p = NormPolicy(rawValue: v) else { throw AggregatorError.invalidConfig("limits.norm_policy must be reject or clip, not '\(v)'") }
            normPolicy = p
        }
        let algorithmName = r.string(forKey: "algorithm", default: algorithm.rawValue)
        guard let algorithm = Algorithm(rawValue: algorithmName) else {
            throw AggregatorError.invalidConfig("algorithm must be \(Algorithm.allCases.map(\.rawValue).joined(separator: ", ")), not '\(algorithmName)'")
        }
        switch algorithm {
        case .fedasync: break
        case .fedavg: sync = try FedAvgConfig(reader: r)
        case .fedbuff: buffer = try FedBuffConfig(reader: r)
        }
        // fedbuff reads privacy.* with its buffer; the other algorithms take no central noise.
        let privacy = try PrivacyConfig(reader: r)
        if let local = privacy.local {
            // Local DP: the clients noise, under any algorithm; the aggregator only requires it.
            localPrivacy = local
            localPrivacyDelta = privacy.delta
            buffer?.privacy = PrivacyConfig()
        } else if buffer == nil, privacy.mode != .off {
            throw AggregatorError.invalidConfig("privacy.mode \(privacy.mode.rawValue) needs algorithm fedbuff (the noise goes on a buffer's sum), not \(algorithm)")
        }
        if r.bool(forKey: "robust.anomaly.enabled", default: false) { anomaly = try AnomalyConfig(reader: r) }
        shard = try ShardConfig(reader: r)
        compression = try UpdateCompression(reader: r, defaults: compression)
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension FedAsync {
    /// `fedasync.*`.
    public init(reader r: ConfigReader, defaults d: FedAsync) throws {
        self = d
        if let v = r.double(forKey: "fedasync.alpha") { alpha = v }
        if let v = r.int(forKey: "fedasync.max_staleness") {
            guard v >= 0 else { throw AggregatorError.invalidConfig("fedasync.max_staleness must not be negative") }
            maxStaleness = UInt64(v)
        }
        staleness = try StalenessFunction(reader: r, defaults: d.staleness)
    }
}

extension StalenessFunction {
    /// `fedasync.staleness.*`: a left-out parameter keeps the default function's, or the
    /// documented 0.5 (a) and 4 (b).
    public init(reader r: ConfigReader, defaults d: StalenessFunction) throws {
        var (a, b) = (0.5, 4.0)
        switch d {
        case .constant: break
        case .polynomial(let da): a = da
        case .hinge(let da, let db): (a, b) = (da, db)
        }
        a = r.double(forKey: "fedasync.staleness.a", default: a)
        b = r.double(forKey: "fedasync.staleness.b", default: b)
        switch r.string(forKey: "fedasync.staleness.function") {
        case nil:
            switch d {
            case .constant: self = .constant
            case .polynomial: self = .polynomial(a: a)
            case .hinge: self = .hinge(a: a, b: b)
            }
        case "constant": self = .constant
        case "polynomial": self = .polynomial(a: a)
        case "hinge": self = .hinge(a: a, b: b)
        case let other?: throw AggregatorError.invalidConfig("fedasync.staleness.function must be constant, polynomial or hinge, not '\(other)'")
        }
    }
}

extension TrainingConfig {
    /// `training.*` (but `training.extra`, which the command reads from the file's map).
    public init(reader r: ConfigReader, defaults d: TrainingConfig) throws {
        self = d
        if let v = r.double(forKey: "training.learning_rate") { learningRate = v }
        if let v = r.int(forKey: "training.local_epochs") { localEpochs = v }
        if let v = r.int(forKey: "training.batch_size") { batchSize = v }
        if let v = r.double(forKey: "training.proximal_mu") { proximalMu = v }
        guard localEpochs >= 1, batchSize >= 1, learningRate > 0 else {
            throw AggregatorError.invalidConfig("training: local_epochs and batch_size must be at least 1 and learning_rate positive")
        }
    }
}

extension LedgerRetention {
    /// `ledger.max_rows` and `ledger.max_age_s`; 0 lifts each limit.
    public init(reader r: ConfigReader, defaults d: LedgerRetention) throws {
        self = d
        if let rows = r.int(forKey: "ledger.max_rows") {
            guard rows >= 0 else { throw AggregatorError.invalidConfig("ledger.max_rows must be 0 (keep every row) or positive, got \(rows)") }
            maxRows = rows == 0 ? nil : rows
        }
        if let age = r.double(forKey: "ledger.max_age_s") {
            guard age >= 0 else { throw AggregatorError.invalidConfig("ledger.max_age_s must be 0 (no age limit) or positive, got \(age)") }
            maxAge = age == 0 ? nil : Duration(configSeconds: age)
        }
    }
}

extension FedAvgConfig {
    /// `sync.*` and `server_optimizer.*`: `sync.expected_clients` is required unless
    /// `expectedClients` is given (the demo's fleet size, which takes its place); `sync.min_clients`
    /// left out (or 0) is all of them.
    public init(reader r: ConfigReader, expectedClients: Int? = nil) throws {
        let expected = expectedClients ?? r.int(forKey: "sync.expected_clients", default: 0)
        guard expected >= 1 else { throw AggregatorError.invalidConfig("algorithm fedavg needs sync.expected_clients >= 1") }
        self.init(expectedClients: expected)
        if let m = r.int(forKey: "sync.min_clients"), m != 0 { minClients = m }
        if let v = r.seconds("sync.round_timeout_s") { roundTimeout = v }
        optimizer = try ServerOptimizer.Config(reader: r)
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension FedBuffConfig {
    /// `fedbuff.*`, `server_optimizer.*` and `privacy.*`: the buffer, its server step and its noise.
    public init(reader r: ConfigReader) throws {
        self.init()
        if let v = r.int(forKey: "fedbuff.buffer_size") { bufferSize = v }
        // 0 = flush only when full.
        if let v = r.double(forKey: "fedbuff.max_wait_s") { maxWait = v > 0 ? Duration(configSeconds: v) : nil }
        if let v = r.bool(forKey: "fedbuff.example_weighting") { exampleWeighting = v }
        if let v = try r.positive("fedbuff.example_cap") { exampleCap = UInt64(v) }
        if let v = r.string(forKey: "fedbuff.aggregate") {
            guard let a = Aggregate(rawValue: v) else {
                throw AggregatorError.invalidConfig("fedbuff.aggregate must be one of \(Aggregate.allCases.map(\.rawValue).joined(separator: ", ")), not '\(v)'")
            }
            aggregate = a
        }
        if let v = r.double(forKey: "fedbuff.trim_fraction") { trimFraction = v }
        optimizer = try ServerOptimizer.Config(reader: r)
        privacy = try PrivacyConfig(reader: r)
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension ServerOptimizer.Config {
    /// `server_optimizer.*`: the server step of fedbuff and of fedavg rounds.
    public init(reader r: ConfigReader) throws {
        self.init()
        if let v = r.string(forKey: "server_optimizer.kind") {
            guard let k = ServerOptimizer.Kind(rawValue: v) else {
                throw AggregatorError.invalidConfig("server_optimizer.kind must be one of \(ServerOptimizer.Kind.allCases.map(\.rawValue).joined(separator: ", ")), not '\(v)'")
            }
            kind = k
        }
        if let v = r.double(forKey: "server_optimizer.learning_rate") { learningRate = v }
        if let v = r.double(forKey: "server_optimizer.beta1") { beta1 = v }
        if let v = r.double(forKey: "server_optimizer.beta2") { beta2 = v }
        if let v = r.double(forKey: "server_optimizer.epsilon") { epsilon = v }
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension PrivacyConfig {
    /// `privacy.*`: central differential privacy (fedbuff only; `AggregatorConfig` checks).
    public init(reader r: ConfigReader) throws {
        self.init()
        if let v = r.string(forKey: "privacy.mode") {
            guard let m = Mode(rawValue: v) else {
                throw AggregatorError.invalidConfig("privacy.mode must be one of \(Mode.allCases.map(\.rawValue).joined(separator: ", ")), not '\(v)'")
            }
            mode = m
        }
        switch r.string(forKey: "privacy.sampling", default: "none") {
        case "none": samplingRate = nil
        case "poisson":
            guard let q = r.double(forKey: "privacy.sampling_rate") else {
                throw AggregatorError.invalidConfig("privacy.sampling poisson needs privacy.sampling_rate (q, in (0, 1])")
            }
            samplingRate = q
        case let other: throw AggregatorError.invalidConfig("privacy.sampling must be none (no amplification) or poisson, not '\(other)'")
        }
        if let budget = r.double(forKey: "privacy.epsilon_budget") {
            guard budget >= 0 else { throw AggregatorError.invalidConfig("privacy.epsilon_budget must be 0 (none) or positive, not \(budget)") }
            epsilonBudget = budget > 0 ? budget : nil
        }
        if let v = r.double(forKey: "privacy.clip") { clip = v }
        if let v = r.double(forKey: "privacy.noise_multiplier") { noiseMultiplier = v }
        if let v = r.double(forKey: "privacy.delta") { delta = v }
        if r.bool(forKey: "privacy.adaptive_clipping", default: false) {
            var a = AdaptiveClipping()
            if let v = r.double(forKey: "privacy.target_quantile") { a.targetQuantile = v }
            if let v = r.double(forKey: "privacy.clip_learning_rate") { a.learningRate = v }
            if let sd = r.double(forKey: "privacy.clipped_count_stddev") {
                guard sd >= 0 else {
                    throw AggregatorError.invalidConfig("privacy.clipped_count_stddev must be 0 (the default, max(K / 20, noise_multiplier)) or positive, not \(sd)")
                }
                a.countStandardDeviation = sd > 0 ? sd : nil
            }
            adaptiveClipping = a
        }
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension UpdateCompression {
    /// `compression.*`: the update codec the aggregator asks clients for.
    public init(reader r: ConfigReader, defaults d: UpdateCompression) throws {
        self = d
        if let v = r.string(forKey: "compression.codec") {
            guard let c = PayloadCodec(name: v) else {
                throw AggregatorError.invalidConfig("compression.codec must be one of \(PayloadCodec.allCases.map(\.name).joined(separator: ", ")), not '\(v)'")
            }
            codec = c
        }
        if let v = r.int(forKey: "compression.int8_block") { block = v }
        if let v = r.double(forKey: "compression.topk_fraction") { topKFraction = v }
    }
}

extension ShardConfig {
    /// `shards.*`: this aggregator's place among parameter shards; nil for one aggregator (no
    /// map, or a map of one entry).
    public init?(reader r: ConfigReader) throws {
        let models = r.stringArray(forKey: "shards.model", default: [])
        let snapshots = r.stringArray(forKey: "shards.snapshot", default: [])
        let updates = r.stringArray(forKey: "shards.update", default: [])
        guard models.count == snapshots.count, models.count == updates.count else {
            throw AggregatorError.invalidConfig("shards.model, shards.snapshot and shards.update must list the same number of shards (\(models.count), \(snapshots.count), \(updates.count))")
        }
        guard models.count > 1 else { return nil }
        let index = r.int(forKey: "shards.index", default: -1)
        guard (0..<models.count).contains(index) else {
            throw AggregatorError.invalidConfig("shards.index (SHARDS_INDEX) must be in 0..<\(models.count), got \(index)")
        }
        var bounds: [Int]?
        let boundaries = r.stringArray(forKey: "shards.boundaries", default: [])
        if !boundaries.isEmpty {
            bounds = try boundaries.map { s in
                guard let v = Int(s.filter { $0 != " " && $0 != "\t" }) else { throw AggregatorError.invalidConfig("shards.boundaries: '\(s)' is not an integer") }
                return v
            }
        }
        self.init(index: index, map: models.indices.map { .init(model: models[$0], snapshot: snapshots[$0], update: updates[$0]) },
                  boundaries: bounds)
    }
}

extension AnomalyConfig {
    /// `robust.anomaly.*`: FedAsync's anomaly filter's parameters over `AnomalyConfig`'s
    /// defaults, whether or not `robust.anomaly.enabled` switches it on.
    public init(reader r: ConfigReader) throws {
        self.init()
        if let v = r.int(forKey: "robust.anomaly.warmup") { warmup = v }
        if let v = r.int(forKey: "robust.anomaly.window") { window = v }
        if let v = r.double(forKey: "robust.anomaly.norm_threshold") { normThreshold = v }
        if let v = r.double(forKey: "robust.anomaly.cosine_threshold") { cosineThreshold = v }
        if let v = r.double(forKey: "robust.anomaly.decay") { decay = v }
        if let v = r.int(forKey: "robust.anomaly.history") { history = v }
        if let e = validationError() { throw AggregatorError.invalidConfig(e) }
    }
}

extension ConfigReader {
    /// A number of seconds as a duration (milliseconds resolution); nil when the key is absent.
    package func seconds(_ key: String) -> Duration? {
        double(forKey: ConfigKey(key)).map(Duration.init(configSeconds:))
    }

    /// An integer that must be at least 1: a smaller value is an error naming the key, not
    /// silently raised to 1. Nil when the key is absent.
    package func positive(_ key: String) throws -> Int? {
        guard let v = int(forKey: ConfigKey(key)) else { return nil }
        guard v >= 1 else { throw AggregatorError.invalidConfig("\(key) must be at least 1, got \(v)") }
        return v
    }
}
