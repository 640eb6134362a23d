import ApiaryCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The config frame of SNAPSHOT_REPLY: a UTF-8 JSON object with the training plan a client
/// needs. Unknown keys are ignored, so servers may add keys without breaking clients.
public struct SnapshotConfig: Sendable, Hashable, Codable {
    /// How updates are merged, and so what a client sends (a delta for `fedbuff`).
    public var algorithm: Algorithm
    public var alpha: Double
    /// "constant", "polynomial" or "hinge".
    public var stalenessFunction: String
    public var stalenessA: Double
    public var stalenessB: Double
    public var maxStaleness: UInt64
    public var training: TrainingConfig
    /// Parameters per model chunk on the PUB socket.
    public var chunkParameters: Int
    /// Largest frame the aggregator accepts, in bytes.
    public var maxFrameBytes: Int64
    /// Seconds a client should wait for a receipt before resending.
    public var receiptTimeoutSeconds: Double
    /// At most one broadcast per this many seconds.
    public var publishIntervalSeconds: Double?
    /// The current model is re-broadcast after this many seconds without a broadcast (0: never).
    public var heartbeatSeconds: Double?
    /// The shard map when the model is split across aggregators (parameter shards): every
    /// shard, in parameter order. Nil (or absent) for a single aggregator.
    public var shards: [ShardEntry]?
    /// Which entry of `shards` sent this reply.
    public var shardIndex: Int?
    /// Optional protocol features the aggregator takes (`ProtocolFeature`); nil or absent
    /// from aggregators older than them, which take none.
    public var features: [String]?
    /// The update codec asked for (`PayloadCodec.name`); nil or absent: float32.
    public var codec: String?
    /// int8 values per block; nil: `UpdateCodec.defaultBlock`.
    public var codecBlock: Int?
    /// top-k fraction; nil: `UpdateCodec.defaultTopKFraction`.
    public var topkFraction: Double?
    /// Local differential privacy the aggregator requires of every update (PROTOCOL.md 4.8);
    /// nil or absent: none.
    public var localDP: LocalDPConfig?

    /// The local DP this config asks for (nil: none); throws on bad values.
    public func localPrivacy() throws(WireError) -> LocalDPConfig? {
        guard let localDP else { return nil }
        if let e = localDP.validationError() { throw .invalidConfig(e) }
        return localDP
    }

    /// The compression these keys ask for; throws on an unknown codec name or bad values.
    public func compression() throws(WireError) -> UpdateCompression {
        guard let c = PayloadCodec(name: codec ?? "float32") else {
            throw .invalidConfig("unknown codec '\(codec ?? "")' (this client knows \(PayloadCodec.allCases.map(\.name).joined(separator: ", ")))")
        }
        let u = UpdateCompression(codec: c, block: codecBlock ?? UpdateCodec.defaultBlock, topKFraction: topkFraction ?? UpdateCodec.defaultTopKFraction)
        if let e = u.validationError(algorithm: algorithm) { throw .invalidConfig(e) }
        return u
    }

    public init(algorithm: Algorithm = .fedasync, rule: FedAsync, training: TrainingConfig,
                chunkParameters: Int, maxFrameBytes: Int64, receiptTimeoutSeconds: Double,
                publishIntervalSeconds: Double? = nil, heartbeatSeconds: Double? = nil) {
        self.algorithm = algorithm
        self.alpha = rule.alpha
        switch rule.staleness {
        case .constant: (stalenessFunction, stalenessA, stalenessB) = ("constant", 0, 0)
        case .polynomial(let a): (stalenessFunction, stalenessA, stalenessB) = ("polynomial", a, 0)
        case .hinge(let a, let b): (stalenessFunction, stalenessA, stalenessB) = ("hinge", a, b)
        }
        self.maxStaleness = rule.maxStaleness
        self.training = training
        self.chunkParameters = chunkParameters
        self.maxFrameBytes = maxFrameBytes
        self.receiptTimeoutSeconds = receiptTimeoutSeconds
        self.publishIntervalSeconds = publishIntervalSeconds
        self.heartbeatSeconds = heartbeatSeconds
    }

    enum CodingKeys: String, CodingKey {
        case algorithm, alpha
        case stalenessFunction = "staleness_function"
        case stalenessA = "staleness_a"
        case stalenessB = "staleness_b"
        case maxStaleness = "max_staleness"
        case training
        case chunkParameters = "chunk_parameters"
        case maxFrameBytes = "max_frame_bytes"
        case receiptTimeoutSeconds = "receipt_timeout_s"
        case publishIntervalSeconds = "publish_interval_s"
        case heartbeatSeconds = "heartbeat_s"
        case shards
        case shardIndex = "shard_index"
        case features
        case codec
        case codecBlock = "codec_block"
        case topkFraction = "topk_fraction"
        case localDP = "local_dp"
    }

    /// Whether the aggregator listed `feature`.
    public func supports(_ feature: String) -> Bool { features?.contains(feature) ?? false }

    /// The range of the flat parameter vector the replying aggregator serves: its shard's,
    /// or the whole model. Throws when the shard map is not a valid split of `parameterCount`.
    public func servedRange(parameterCount: Int) throws(WireError) -> Range<Int> {
        guard let shards else {
            guard shardIndex == nil else { throw .invalidConfig("shard_index without shards") }
            return 0..<parameterCount
        }
        if let e = ShardEntry.validationError(shards, parameterCount: parameterCount) { throw .invalidConfig(e) }
        guard let i = shardIndex, shards.indices.contains(i) else {
            throw .invalidConfig("shard_index \(shardIndex.map(String.init) ?? "missing") is not in 0..<\(shards.count)")
        }
        return shards[i].range
    }

    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(self)) ?? Data("{}".utf8))
    }

    public static func decode(_ frame: UnsafeRawBufferPointer) throws(WireError) -> SnapshotConfig {
        guard frame.count <= 65536 else { throw .invalidConfig("config frame of \(frame.count) bytes") }
        do {
            return try JSONDecoder().decode(SnapshotConfig.self, from: Data(frame))
        } catch {
            throw .invalidConfig(String(describing: error))
        }
    }
}

/// One aggregator of a sharded model: the contiguous range `start..<end` of the flat
/// parameter vector it owns and the endpoints clients connect to.
public struct ShardEntry: Sendable, Hashable, Codable {
    public var start: Int
    public var end: Int
    public var model: String
    public var snapshot: String
    public var update: String

    public init(range: Range<Int>, model: String, snapshot: String, update: String) {
        self.start = range.lowerBound
        self.end = range.upperBound
        self.model = model
        self.snapshot = snapshot
        self.update = update
    }

    public var range: Range<Int> { start..<max(start, end) }

    /// Nil when `map` splits `0..<parameterCount` into non-empty, contiguous ranges in order
    /// with an endpoint for each; otherwise what is wrong.
    public static func validationError(_ map: [ShardEntry], parameterCount: Int) -> String? {
        guard !map.isEmpty else { return "the shard map is empty" }
        guard map.count <= 4096 else { return "the shard map has \(map.count) entries (at most 4096)" }
        var next = 0
        for (i, e) in map.enumerated() {
            guard e.start == next else { return "shard \(i) starts at \(e.start), expected \(next)" }
            guard e.end > e.start else { return "shard \(i) is empty (\(e.start)..<\(e.end))" }
            guard !e.model.isEmpty, !e.snapshot.isEmpty, !e.update.isEmpty else { return "shard \(i) lacks an endpoint" }
            next = e.end
        }
        guard next == parameterCount else { return "the shard map ends at \(next), the model has \(parameterCount) parameters" }
        return nil
    }

    /// Even split points of `parameterCount` into `shards` ranges (the first ones one larger).
    public static func evenBoundaries(parameterCount: Int, shards: Int) -> [Int] {
        let q = parameterCount / shards, r = parameterCount % shards
        var b = [0]
        for i in 0..<shards { b.append(b[i] + q + (i < r ? 1 : 0)) }
        return b
    }
}
