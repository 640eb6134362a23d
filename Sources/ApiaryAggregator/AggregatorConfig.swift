import ApiaryCore

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
    /// libzmq I/O threads.
    public var ioThreads: Int
    /// Identifies this training run; random when nil.
    public var runID: UInt64?

    public init(
        modelEndpoint: String = "tcp://127.0.0.1:5557",
        snapshotEndpoint: String = "tcp://127.0.0.1:5556",
        updateEndpoint: String = "tcp://127.0.0.1:5558",
        rule: FedAsync = FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 64),
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
        runID: UInt64? = nil
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
    }

    /// Checks ranges; returns the first problem found.
    public func validationError() -> String? {
        if let e = rule.validationError() { return e }
        if chunkParameters < 1 { return "chunk_parameters must be at least 1" }
        if Int64(chunkParameters) * 4 > maxFrameBytes { return "max_frame_bytes must hold one chunk (\(chunkParameters * 4) bytes)" }
        if publishInterval < .zero { return "publish_interval must not be negative" }
        if dedupWindow < 1 || dedupWindow > DedupTable<Int>.maxWindow { return "dedup_window must be in 1...\(DedupTable<Int>.maxWindow)" }
        return nil
    }
}
