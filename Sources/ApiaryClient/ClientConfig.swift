import ApiaryCore
import ApiaryProtocol
import ZeroMQ

/// How a client reaches its aggregator and how it behaves.
public struct ClientConfig: Sendable {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    public var clientID: String
    public var modelEndpoint: String
    public var snapshotEndpoint: String
    public var updateEndpoint: String
    /// Resend an update after this long without a receipt; nil uses the aggregator's advice.
    public var receiptTimeout: Duration?
    /// Most updates kept without a receipt; training pauses while the bound is reached.
    public var maxPendingUpdates: Int
    /// Re-ask for a snapshot after this long without a reply.
    public var snapshotTimeout: Duration
    /// After pushing, wait at most this long for a newer model before training again on
    /// the one it has.
    public var newModelWait: Duration
    /// Cap of the resend back-off and of the reconnect interval.
    public var maxBackoff: Duration
    /// CurveZMQ: this client's key pair and the aggregator's public key. Required unless
    /// `insecure` is true: like `apiary client`, the library refuses to connect unencrypted by
    /// accident.
    public var curve: CurveClientConfig?
    /// Connect without CURVE when `curve` is nil (no encryption, no authentication). Ignored
    /// when `curve` is set.
    public var insecure: Bool

    public init(clientID: String,
                modelEndpoint: String = "tcp://127.0.0.1:5557",
                snapshotEndpoint: String = "tcp://127.0.0.1:5556",
                updateEndpoint: String = "tcp://127.0.0.1:5558",
                receiptTimeout: Duration? = nil,
                maxPendingUpdates: Int = 8,
                snapshotTimeout: Duration = .seconds(2),
                newModelWait: Duration = .seconds(2),
                maxBackoff: Duration = .seconds(30),
                curve: CurveClientConfig? = nil,
                insecure: Bool = false) {
        self.clientID = clientID
        self.modelEndpoint = modelEndpoint
        self.snapshotEndpoint = snapshotEndpoint
        self.updateEndpoint = updateEndpoint
        self.receiptTimeout = receiptTimeout
        self.maxPendingUpdates = maxPendingUpdates
        self.snapshotTimeout = snapshotTimeout
        self.newModelWait = newModelWait
        self.maxBackoff = maxBackoff
        self.curve = curve
        self.insecure = insecure
    }
}

/// The client's side of CurveZMQ.
public struct CurveClientConfig: Sendable {
    public var keyPair: CurveKeyPair
    /// The aggregator's public key (Z85).
    public var serverPublicKey: String

    public init(keyPair: CurveKeyPair, serverPublicKey: String) {
        self.keyPair = keyPair
        self.serverPublicKey = serverPublicKey
    }
}

/// Counters a client keeps.
public struct ClientStats: Sendable, Hashable {
    /// Local training runs finished.
    public var rounds = 0
    public var updatesSent = 0
    public var resends = 0
    public var merged = 0
    public var rejected = 0
    public var duplicates = 0
    /// Evaluation reports the aggregator recorded (an evaluator's; see `ClientRuntime(config:evaluator:)`).
    public var reportsRecorded = 0
    public var snapshotsReceived = 0
    /// Snapshot requests that timed out without a reply (each is asked again).
    public var snapshotsUnanswered = 0
    public var broadcastsReceived = 0
    /// Version of the newest model the client holds (with parameter shards: the sum of the
    /// shards' versions, which grows with every merge on any shard).
    public var modelVersion: UInt64 = 0
    public var pending = 0
    /// Aggregators the model comes from: the number of parameter shards (1 when unsharded).
    public var shards = 0
    public var lastRejectReason: RejectReason?
    /// Handshakes with an aggregator that failed (libzmq's socket monitor), and the cause of
    /// the last one (`HandshakeFailure.cause`: `unauthorized_key`, `no_detail`, ...).
    public var handshakeFailures = 0
    public var lastHandshakeFailure: String?

    public init() {}
}

/// Things a client reports as they happen (for progress displays and tests).
public enum ClientEvent: Sendable {
    /// The first model arrived: the client can train.
    case joined(version: UInt64)
    case modelUpdated(version: UInt64)
    /// The result of training round `round` was queued as update `seq`.
    case updateQueued(seq: UInt64, round: Int)
    case updateSent(seq: UInt64, baseVersion: UInt64)
    /// Every aggregator (every shard) answered update `seq`, or it was given up; `rejected`
    /// lists the ranges of the flat vector whose aggregator did not merge it (empty: merged
    /// everywhere; the whole model when unsharded and rejected).
    case updateDone(seq: UInt64, rejected: [Range<Int>])
    /// What one aggregator said of an update (one receipt per shard when the model is sharded).
    case receipt(Receipt)
}

/// Why a client could not start or stopped (`ApiaryError`'s shape: a code, the reason, the
/// underlying error, where).
public typealias ClientError = ApiaryError<ClientErrors>

/// The domain of `ClientError`.
public enum ClientErrors: ApiaryErrorDomain {
    public static func describe(code: String, reason: String) -> String {
        switch code {
        case ClientError.Code.invalidConfig.description: "invalid client config: \(reason)"
        case ClientError.Code.ioFailed.description: "client I/O failed: \(reason)"
        default: reason
        }
    }
}

extension ApiaryError.Code where Domain == ClientErrors {
    /// The configuration is out of range (an invalid id, no keys, ...).
    public static let invalidConfig = Self("invalid config")
    /// The aggregator's model does not fit the trainer (or the trainer's result the model).
    public static let layoutMismatch = Self("layout mismatch")
    /// The I/O thread could not set up its sockets (an endpoint, a key: see `underlying`).
    public static let ioFailed = Self("I/O failed")
}

extension ApiaryError where Domain == ClientErrors {
    public static func invalidConfig(_ reason: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.invalidConfig, reason, file: file, line: line)
    }

    public static func layoutMismatch(server: String, trainer: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.layoutMismatch, "the aggregator's model layout [\(server)] differs from the trainer's [\(trainer)]", file: file, line: line)
    }

    public static func ioFailed(_ error: any Error, file: String = #fileID, line: Int = #line) -> Self {
        Self(.ioFailed, "\(error)", underlying: error, file: file, line: line)
    }
}

