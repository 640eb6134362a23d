import ApiaryCore

/// Protocol version spoken by this implementation.
public let protocolVersion: UInt8 = 1

/// The first bytes of every header frame: ASCII "APRY".
public let headerMagic: [UInt8] = [0x41, 0x50, 0x52, 0x59]

/// Message types (byte 5 of every header frame).
public enum MessageType: UInt8, Sendable, Hashable, CustomStringConvertible {
    case modelChunk = 1
    case snapshotRequest = 2
    case snapshotReply = 3
    case clientUpdate = 4
    case receipt = 5
    /// An evaluator's measurement of one model version (update socket, like CLIENT_UPDATE).
    case evaluationReport = 6

    public var description: String {
        switch self {
        case .modelChunk: "MODEL_CHUNK"
        case .snapshotRequest: "SNAPSHOT_REQUEST"
        case .snapshotReply: "SNAPSHOT_REPLY"
        case .clientUpdate: "CLIENT_UPDATE"
        case .receipt: "RECEIPT"
        case .evaluationReport: "EVALUATION_REPORT"
        }
    }
}

/// Payload codecs of a client update (PROTOCOL.md 3.4.1; `UpdateCodec`).
public enum PayloadCodec: UInt8, Sendable, Hashable, CaseIterable {
    /// float32 little-endian, layout order.
    case denseFloat32 = 0
    /// IEEE-754 binary16.
    case float16 = 1
    /// The upper 16 bits of the float32.
    case bfloat16 = 2
    /// One block per frame: an f32 scale, then int8 values.
    case int8 = 3
    /// Sparse: (u32 index, bfloat16 value) entries; deltas only.
    case topK = 4
}

/// Topics on the model PUB socket (first frame of every published message).
public enum Topic {
    /// Model broadcast chunks.
    public static let model: [UInt8] = Array("model".utf8)
    /// Receipts for one client: `receipt/<client id>/` (the trailing slash keeps the
    /// subscription of `c1` from matching `c10`).
    public static func receipt(clientID: String) -> [UInt8] { Array("receipt/\(clientID)/".utf8) }
    /// Prefix shared by every receipt topic.
    public static let receiptPrefix: [UInt8] = Array("receipt/".utf8)
}

/// Client ids: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
public enum ClientID {
    public static func isValid(_ id: String) -> Bool {
        let u = id.utf8
        guard (1...64).contains(u.count) else { return false }
        return u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }
}

/// Header of one MODEL_CHUNK message: a slice of the flat parameter vector of one version.
public struct ModelChunkHeader: Sendable, Hashable {
    public var runID: UInt64
    public var version: UInt64
    public var layoutFingerprint: UInt64
    public var parameterCount: UInt64
    /// Index of the chunk's first parameter in the flat vector.
    public var chunkOffset: UInt64
    public var chunkIndex: UInt32
    public var chunkCount: UInt32

    public init(runID: UInt64, version: UInt64, layoutFingerprint: UInt64, parameterCount: UInt64,
                chunkOffset: UInt64, chunkIndex: UInt32, chunkCount: UInt32) {
        self.runID = runID
        self.version = version
        self.layoutFingerprint = layoutFingerprint
        self.parameterCount = parameterCount
        self.chunkOffset = chunkOffset
        self.chunkIndex = chunkIndex
        self.chunkCount = chunkCount
    }
}

/// SNAPSHOT_REQUEST: a client asks for the current model.
public struct SnapshotRequest: Sendable, Hashable {
    /// Echoed in the reply, so a client can drop replies to requests it gave up on.
    public var requestID: UInt64
    /// The requester's client id (informational; may be empty).
    public var clientID: String

    public init(requestID: UInt64, clientID: String) {
        self.requestID = requestID
        self.clientID = clientID
    }
}

/// Header of SNAPSHOT_REPLY: followed by the layout frame, the config frame and the payload.
public struct SnapshotReplyHeader: Sendable, Hashable {
    public var requestID: UInt64
    public var runID: UInt64
    public var version: UInt64
    public var layoutFingerprint: UInt64
    public var parameterCount: UInt64
    /// Server wall-clock time, milliseconds since the Unix epoch.
    public var serverTimeMilliseconds: Int64
    /// Number of payload frames that follow the config frame.
    public var payloadFrameCount: UInt32

    public init(requestID: UInt64, runID: UInt64, version: UInt64, layoutFingerprint: UInt64,
                parameterCount: UInt64, serverTimeMilliseconds: Int64, payloadFrameCount: UInt32) {
        self.requestID = requestID
        self.runID = runID
        self.version = version
        self.layoutFingerprint = layoutFingerprint
        self.parameterCount = parameterCount
        self.serverTimeMilliseconds = serverTimeMilliseconds
        self.payloadFrameCount = payloadFrameCount
    }
}

/// Header of CLIENT_UPDATE: followed by the layout frame and the payload frames.
public struct UpdateHeader: Sendable, Hashable {
    /// Run id of the model the client trained from.
    public var runID: UInt64
    /// Version of the model the client trained from (tau).
    public var baseVersion: UInt64
    /// Per-client sequence number; (client id, epoch, seq) identifies the update for dedup.
    public var seq: UInt64
    /// Number of training examples behind the update.
    public var sampleCount: UInt64
    public var codec: PayloadCodec
    public var clientID: String
    /// Flag bit 0 of the header: a metrics frame follows the layout frame. Set it only
    /// when the aggregator's snapshot config lists the feature `update_metrics` (an older
    /// aggregator rejects the update as malformed: reserved bits set).
    public var carriesMetrics: Bool
    /// Flag bit 1: the payload is `trained - base` (a delta), not the trained model. Set it
    /// exactly when the snapshot config's algorithm sends deltas (`Algorithm.sendsDeltas`):
    /// an aggregator rejects the other kind as `wrong_update_kind`.
    public var isDelta: Bool
    /// The client epoch (PROTOCOL.md 3.4): a random non-zero number the client process picked
    /// at start; seqs need only increase within it. 0: none (flag bit 2 clear, as from
    /// clients before epochs). Send one only when the snapshot config lists the feature
    /// `client_epoch` (an older aggregator rejects the update as malformed).
    public var epoch: UInt64
    /// Flag bit 3: the client privatized the update to the snapshot config's `local_dp`
    /// (PROTOCOL.md 4.8). Set it exactly when the config carries `local_dp` (an aggregator
    /// that requires local DP rejects an update without it as `not_privatized`; an older one
    /// rejects the bit as malformed).
    public var isPrivatized: Bool

    public init(runID: UInt64, baseVersion: UInt64, seq: UInt64, sampleCount: UInt64,
                codec: PayloadCodec = .denseFloat32, clientID: String, carriesMetrics: Bool = false, isDelta: Bool = false,
                epoch: UInt64 = 0, isPrivatized: Bool = false) {
        self.runID = runID
        self.baseVersion = baseVersion
        self.seq = seq
        self.sampleCount = sampleCount
        self.codec = codec
        self.clientID = clientID
        self.carriesMetrics = carriesMetrics
        self.isDelta = isDelta
        self.epoch = epoch
        self.isPrivatized = isPrivatized
    }
}

/// Client epochs (PROTOCOL.md 3.4): one per client process, so that a restarted process,
/// a restored device image or a clock stepped back starts a fresh dedup window.
public enum ClientEpoch {
    /// A new epoch: 64 bits from the system's CSPRNG (`SystemRandomNumberGenerator`), never 0.
    public static func fresh() -> UInt64 {
        var rng = SystemRandomNumberGenerator()
        return UInt64.random(in: 1...UInt64.max, using: &rng)
    }
}

/// Optional features an aggregator lists in its snapshot config (`features`); a peer uses a
/// feature only when the other side lists it, so old and new peers keep talking.
public enum ProtocolFeature {
    /// CLIENT_UPDATE may carry a metrics frame (header flag bit 0).
    public static let updateMetrics = "update_metrics"
    /// EVALUATION_REPORT messages are taken on the update socket.
    public static let evaluationReports = "evaluation_reports"
    /// CLIENT_UPDATE may carry a delta (header flag bit 1), as algorithm `fedbuff` asks.
    public static let deltaUpdates = "delta_updates"
    /// What this implementation's aggregator takes.
    /// CLIENT_UPDATE may use the codecs 1-4 (PROTOCOL.md 3.4.1).
    public static let codecs = "codecs"
    /// CLIENT_UPDATE and EVALUATION_REPORT may carry a client epoch (header flag bit 2).
    public static let clientEpoch = "client_epoch"
    /// The aggregator knows local DP: the config key `local_dp` (present when it requires it)
    /// and CLIENT_UPDATE's flag bit 3 (PROTOCOL.md 4.8).
    public static let localDP = "local_dp"
    public static let all = [updateMetrics, evaluationReports, deltaUpdates, codecs, clientEpoch, localDP]
}

/// EVALUATION_REPORT: an evaluator (a client that does not train) measured model `version`
/// of run `runID` on its own held-out data. Sent on the update socket, answered by a
/// RECEIPT with decision `recorded` (or `rejected`, or `duplicate` for a resend).
public struct EvaluationReport: Sendable, Hashable {
    public var runID: UInt64
    /// The model version evaluated.
    public var version: UInt64
    /// Per-client sequence number, shared with the client's updates (dedup).
    public var seq: UInt64
    /// Examples evaluated on.
    public var exampleCount: UInt64
    public var clientID: String
    /// What the evaluator measured on ("digits test split", say): 1 to 128 bytes of UTF-8.
    public var dataset: String
    /// The measurements ("accuracy", "loss", any of the user's); see `UpdateMetrics`.
    public var metrics: [String: Double]
    /// The client epoch, as in `UpdateHeader.epoch` (0: none).
    public var epoch: UInt64

    public init(runID: UInt64, version: UInt64, seq: UInt64, exampleCount: UInt64, clientID: String,
                dataset: String, metrics: [String: Double], epoch: UInt64 = 0) {
        self.runID = runID
        self.version = version
        self.seq = seq
        self.exampleCount = exampleCount
        self.clientID = clientID
        self.dataset = dataset
        self.metrics = metrics
        self.epoch = epoch
    }
}

/// Named numbers that travel with an update (its metrics frame) or in an evaluation
/// report: a UTF-8 JSON object of name to finite number. Names are 1 to 64 characters of
/// `A-Z a-z 0-9 . _ - /`; at most `maxEntries` of them; the frame is at most `maxFrameBytes`.
public enum UpdateMetrics {
    public static let maxEntries = 64
    public static let maxFrameBytes = 8192
    public static let maxDatasetBytes = 128

    /// Nil when `name` is a valid metric name.
    public static func isValidName(_ name: String) -> Bool {
        let u = name.utf8
        guard (1...64).contains(u.count) else { return false }
        return u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D || c == 0x2F
        }
    }

    /// What is wrong with `metrics`, or nil.
    public static func validationError(_ metrics: [String: Double]) -> String? {
        guard metrics.count <= maxEntries else { return "\(metrics.count) metrics (at most \(maxEntries))" }
        for (k, v) in metrics.sorted(by: { $0.key < $1.key }) {
            guard isValidName(k) else { return "metric name '\(PeerText.escaped(k, limit: 80))' is not 1 to 64 characters of A-Z a-z 0-9 . _ - /" }
            guard v.isFinite else { return "metric '\(k)' is not finite" }
        }
        return nil
    }
}

/// RECEIPT: what happened to one update, published on `receipt/<client id>/`.
public struct Receipt: Sendable, Hashable {
    public var clientID: String
    public var runID: UInt64
    public var seq: UInt64
    public var baseVersion: UInt64
    /// The model version after the merge (merged), or the current version (otherwise).
    public var modelVersion: UInt64
    /// Staleness of the update, when it was known.
    public var staleness: UInt64?
    /// The mixing weight a_t used (0 unless merged).
    public var mixingWeight: Double
    public var decision: Decision
    public var reason: RejectReason
    /// Human-readable detail (UTF-8, at most 1024 bytes on the wire).
    public var message: String

    public init(clientID: String, runID: UInt64, seq: UInt64, baseVersion: UInt64, modelVersion: UInt64,
                staleness: UInt64?, mixingWeight: Double, decision: Decision, reason: RejectReason, message: String = "") {
        self.clientID = clientID
        self.runID = runID
        self.seq = seq
        self.baseVersion = baseVersion
        self.modelVersion = modelVersion
        self.staleness = staleness
        self.mixingWeight = mixingWeight
        self.decision = decision
        self.reason = reason
        self.message = message
    }
}
