import ApiaryCore
import ApiaryProtocol
import Metrics
import ZeroMQ

/// Everything an aggregator needs to run. Defaults suit a small fleet on one host.
public struct AggregatorConfig: Sendable {
    /// PUB endpoint: model broadcasts and receipts.
    public var modelEndpoint: String
    /// ROUTER endpoint: snapshot requests.
    public var snapshotEndpoint: String
    /// PULL endpoint: client updates.
    public var updateEndpoint: String
    /// The merge rule.
    public var rule: FedAsync
    /// Hyper-parameters sent to clients with each snapshot.
    public var training: TrainingConfig
    /// At most one model broadcast per interval (newest wins).
    public var publishInterval: Duration
    /// Re-broadcast the current model after this long without a broadcast (zero: never).
    public var heartbeatInterval: Duration
    /// Parameters per model chunk on the wire (about 1 MiB of float32).
    public var chunkParameters: Int
    /// Largest inbound frame on the update socket, in bytes (`ZMQ_MAXMSGSIZE`).
    public var maxFrameBytes: Int64
    /// Most payload frames one update may have.
    public var maxPayloadFrames: Int
    /// Receipt timeout advertised to clients (they resend after it).
    public var receiptTimeout: Duration
    /// How many recent seqs per client the dedup table remembers.
    public var dedupWindow: UInt64
    /// Receive high-water mark of the update socket, in messages.
    public var updateQueueLimit: Int32
    /// ...and at most about this many bytes of queued updates per connection: the queue limit
    /// is lowered to `updateQueueBytes / update size` (at least 2) for large models, since
    /// libzmq's high-water mark counts messages, not bytes.
    public var updateQueueBytes: Int64 = 256 << 20
    /// libzmq I/O threads.
    public var ioThreads: Int
    /// Identifies this training run; random when nil (a resumed checkpoint keeps its own).
    public var runID: UInt64?
    /// Where checkpoints go. When set, the aggregator resumes from the newest valid one and a
    /// "merged" receipt is sent only once a checkpoint holding that merge is on disk (group
    /// commit). When nil, nothing survives a restart and receipts go out at once.
    public var checkpointDirectory: String?
    /// A checkpoint is started when the model changed and this long passed since the last one...
    public var checkpointInterval: Duration
    /// ...or when this many versions were merged since the last one.
    public var checkpointEveryVersions: UInt64
    /// How many checkpoints to keep.
    public var checkpointKeep: Int
    /// SQLite file of the contribution ledger (one row per received update); nil: none.
    public var ledgerPath: String?
    /// How much of the ledger is kept (rows, age); the per-client totals count every row.
    public var ledgerRetention: LedgerRetention = .default
    /// Bound on the L2 norm of `update - model`; nil: no bound.
    public var maxUpdateNorm: Double?
    /// What to do with an update over the bound.
    public var normPolicy: NormPolicy
    /// CurveZMQ on every socket with a ZAP allowlist. Required unless `insecure` is true:
    /// like `apiary aggregator`, the library refuses to run unencrypted by accident.
    public var curve: CurveServerConfig?
    /// Run without CURVE when `curve` is nil: no encryption, no authentication, any peer can
    /// send updates (logged loudly). Ignored when `curve` is set.
    public var insecure: Bool
    /// Synchronous FedAvg rounds instead of FedAsync (the baseline); nil: FedAsync.
    public var sync: FedAvgConfig?
    /// Buffered asynchronous aggregation (FedBuff) instead of FedAsync; nil: FedAsync. The
    /// rule's staleness function weights the buffered deltas (its alpha is not used).
    public var buffer: FedBuffConfig? = nil
    /// Local differential privacy required of every client (privacy.mode local): sent in the
    /// snapshot config; updates not flagged as privatized are rejected `not_privatized`. Nil: none.
    public var localPrivacy: LocalDPConfig? = nil
    /// The delta at which the clients' epsilon under `localPrivacy` is stated.
    public var localPrivacyDelta: Double = 1e-5
    /// FedAsync's anomaly filter (robust.anomaly.*): outlying updates are rejected as
    /// `anomalous`; nil: off.
    public var anomaly: AnomalyConfig? = nil
    /// The update codec the snapshot config asks clients for (every codec is accepted).
    public var compression = UpdateCompression()
    /// The algorithm these settings make (at most one of `sync` and `buffer` is set).
    public var algorithm: Algorithm { sync != nil ? .fedavg : buffer != nil ? .fedbuff : .fedasync }
    /// Parameter shards: this aggregator owns one contiguous range of the flat parameter
    /// vector; nil: the whole model.
    public var shard: ShardConfig? = nil
    /// Relay mode, for a gateway: the model can be rebased onto a newer upstream model
    /// (`Aggregator.rebase(onto:)`) and its local progress taken (`Aggregator.takeProgress()`).
    public var relay: Bool = false
    /// Where the aggregator's metrics go (see `AggregatorMetricName`); nil: the process-wide
    /// `MetricsSystem.factory`. Tests pass their own to read metrics without a global bootstrap.
    public var metricsFactory: (any MetricsFactory)? = nil

    public init(
        modelEndpoint: String = "tcp://127.0.0.1:5557",
        snapshotEndpoint: String = "tcp://127.0.0.1:5556",
        updateEndpoint: String = "tcp://127.0.0.1:5558",
        rule: FedAsync = FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 128),
        training: TrainingConfig = TrainingConfig(),
        publishInterval: Duration = .milliseconds(20),
        heartbeatInterval: Duration = .seconds(5),
        chunkParameters: Int = 262_144,
        maxFrameBytes: Int64 = 16 << 20,
        maxPayloadFrames: Int = 65_536,
        receiptTimeout: Duration = .seconds(10),
        dedupWindow: UInt64 = 256,
        updateQueueLimit: Int32 = 256,
        ioThreads: Int = 1,
        runID: UInt64? = nil,
        checkpointDirectory: String? = nil,
        checkpointInterval: Duration = .milliseconds(250),
        checkpointEveryVersions: UInt64 = 1000,
        checkpointKeep: Int = 3,
        ledgerPath: String? = nil,
        maxUpdateNorm: Double? = nil,
        normPolicy: NormPolicy = .reject,
        curve: CurveServerConfig? = nil,
        insecure: Bool = false,
        sync: FedAvgConfig? = nil
    ) {
        self.modelEndpoint = modelEndpoint
        self.snapshotEndpoint = snapshotEndpoint
        self.updateEndpoint = updateEndpoint
        self.rule = rule
        self.training = training
        self.publishInterval = publishInterval
        self.heartbeatInterval = heartbeatInterval
        self.chunkParameters = chunkParameters
        self.maxFrameBytes = maxFrameBytes
        self.maxPayloadFrames = maxPayloadFrames
        self.receiptTimeout = receiptTimeout
        self.dedupWindow = dedupWindow
        self.updateQueueLimit = updateQueueLimit
        self.ioThreads = ioThreads
        self.runID = runID
        self.checkpointDirectory = checkpointDirectory
        self.checkpointInterval = checkpointInterval
        self.checkpointEveryVersions = checkpointEveryVersions
        self.checkpointKeep = checkpointKeep
        self.ledgerPath = ledgerPath
        self.maxUpdateNorm = maxUpdateNorm
        self.normPolicy = normPolicy
        self.curve = curve
        self.insecure = insecure
        self.sync = sync
    }

    /// Checks ranges; returns the first problem found.
    public func validationError() -> String? {
        if let e = rule.validationError() { return e }
        if chunkParameters < 1 { return "chunk_parameters must be at least 1" }
        if Int64(chunkParameters) * 4 > maxFrameBytes { return "max_frame_bytes must hold one chunk (\(chunkParameters * 4) bytes)" }
        if publishInterval < .zero { return "publish_interval must not be negative" }
        if checkpointKeep < 1 { return "checkpoint.keep must be at least 1" }
        if checkpointEveryVersions < 1 { return "checkpoint.every_versions must be at least 1" }
        if let n = maxUpdateNorm, !(n.isFinite && n > 0) { return "limits.max_update_norm must be a positive number" }
        if updateQueueBytes < 1 { return "limits.update_queue_bytes must be positive" }
        if relay && shard != nil { return "a gateway (relay) aggregator cannot be a parameter shard" }
        if relay && sync != nil { return "a gateway (relay) aggregator merges with fedasync, not fedavg rounds" }
        if relay && buffer != nil { return "a gateway (relay) aggregator merges with fedasync, not fedbuff" }
        if sync != nil && buffer != nil { return "choose one algorithm: fedavg rounds or a fedbuff buffer" }
        if let e = buffer?.validationError() { return e }
        if let a = anomaly {
            if let e = a.validationError() { return e }
            if algorithm != .fedasync {
                return "robust.anomaly scores single updates for fedasync; \(algorithm) takes fedbuff.aggregate median or trimmed_mean instead"
            }
            if shard != nil { return "robust.anomaly cannot run on parameter shards: each shard would judge only its slice of an update" }
        }
        if buffer?.privacy.mode == .central && shard != nil {
            return "privacy.mode central cannot run on parameter shards: each shard sees only its slice of a delta, so no shard can clip the whole delta to privacy.clip"
        }
        if let l = localPrivacy {
            if let e = l.validationError() { return e }
            if buffer?.privacy.mode == .central { return "choose one privacy.mode: central (the aggregator noises) or local (the clients do)" }
            guard localPrivacyDelta.isFinite, localPrivacyDelta > 0, localPrivacyDelta < 1 else { return "privacy.delta must be in (0, 1), not \(localPrivacyDelta)" }
        }
        if let e = sync?.validationError() { return e }
        if let rows = ledgerRetention.maxRows, rows < 1 { return "ledger.max_rows must be 0 (keep every row) or positive, got \(rows)" }
        if let e = compression.validationError(algorithm: algorithm) { return e }
        if compression.codec == .int8, Int64(compression.block) + 4 > maxFrameBytes {
            return "compression.int8_block (\(compression.block) values, \(compression.block + 4) bytes a frame) must fit limits.max_frame_bytes (\(maxFrameBytes))"
        }
        if dedupWindow < 1 || dedupWindow > DedupTable<Int>.maxWindow { return "dedup_window must be in 1...\(DedupTable<Int>.maxWindow)" }
        return nil
    }
}

/// This aggregator's place among the parameter shards of one model.
public struct ShardConfig: Sendable, Hashable {
    /// Endpoints of one shard as clients reach them.
    public struct Endpoints: Sendable, Hashable {
        public var model: String
        public var snapshot: String
        public var update: String
        public init(model: String, snapshot: String, update: String) {
            self.model = model
            self.snapshot = snapshot
            self.update = update
        }
    }

    /// This aggregator's entry in `map`, 0-based.
    public var index: Int
    /// Every shard, in parameter order; the same in every shard's config.
    public var map: [Endpoints]
    /// Split points: `map.count + 1` ascending numbers from 0 to the parameter count; nil
    /// splits evenly.
    public var boundaries: [Int]?

    public init(index: Int, map: [Endpoints], boundaries: [Int]? = nil) {
        self.index = index
        self.map = map
        self.boundaries = boundaries
    }

    /// The shard map for a model of `parameterCount` parameters, or what is wrong with it.
    public func entries(parameterCount: Int) -> Result<[ShardEntry], AggregatorError> {
        guard !map.isEmpty else { return .failure(.invalidConfig("shards: the map is empty")) }
        guard map.indices.contains(index) else { return .failure(.invalidConfig("shards.index \(index) is not in 0..<\(map.count)")) }
        guard parameterCount >= map.count else {
            return .failure(.invalidConfig("shards: \(map.count) shards for \(parameterCount) parameters"))
        }
        let b = boundaries ?? ShardEntry.evenBoundaries(parameterCount: parameterCount, shards: map.count)
        guard b.count == map.count + 1 else {
            return .failure(.invalidConfig("shards.boundaries needs \(map.count + 1) numbers (0, the split points, \(parameterCount)), got \(b.count)"))
        }
        guard zip(b, b.dropFirst()).allSatisfy({ $0 < $1 }) else {
            return .failure(.invalidConfig("shards.boundaries \(b) must strictly ascend (no empty shard)"))
        }
        let entries = map.indices.map { ShardEntry(range: b[$0]..<max(b[$0], b[$0 + 1]), model: map[$0].model, snapshot: map[$0].snapshot, update: map[$0].update) }
        if let e = ShardEntry.validationError(entries, parameterCount: parameterCount) { return .failure(.invalidConfig("shards: \(e)")) }
        return .success(entries)
    }
}

/// The aggregator's side of CurveZMQ.
public struct CurveServerConfig: Sendable {
    /// The aggregator's key pair (clients hold its public key).
    public var keyPair: CurveKeyPair
    /// Authorized-keys file (`PUBLIC_KEY CLIENT_ID` per line), re-read when it changes.
    public var authorizedKeysPath: String?
    /// Keys authorized in code (added to the file's).
    public var authorizedKeys: AuthorizedKeys

    /// Whether to run the ZAP handler. Always true in service; false only lets a test prove
    /// that the start-up self-test refuses to start without one.
    public var startsZAPHandler: Bool

    public init(keyPair: CurveKeyPair, authorizedKeysPath: String? = nil, authorizedKeys: AuthorizedKeys = AuthorizedKeys(),
                startsZAPHandler: Bool = true) {
        self.keyPair = keyPair
        self.authorizedKeysPath = authorizedKeysPath
        self.authorizedKeys = authorizedKeys
        self.startsZAPHandler = startsZAPHandler
    }
}

extension AggregatorConfig {
    /// The receive high-water mark of the update socket for updates of `parameters` float32
    /// values: `updateQueueLimit` messages, fewer when they would exceed `updateQueueBytes`.
    public func updateQueueMessages(parameters: Int) -> Int32 {
        let bytes = max(Int64(parameters) * 4, 1)
        return Int32(clamping: max(2, min(Int64(updateQueueLimit), updateQueueBytes / bytes)))
    }
}
