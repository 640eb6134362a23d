import ApiaryCore
import Foundation

/// The config frame of SNAPSHOT_REPLY: a UTF-8 JSON object with the training plan a client
/// needs. Unknown keys are ignored, so servers may add keys without breaking clients.
public struct SnapshotConfig: Sendable, Hashable, Codable {
    /// "fedasync" in v1.
    public var algorithm: String
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

    public init(algorithm: String = "fedasync", rule: FedAsync, training: TrainingConfig,
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
