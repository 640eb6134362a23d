/// What the aggregator did with an update, as told in its receipt.
public enum Decision: UInt8, Sendable, Hashable, Codable, CustomStringConvertible {
    /// Merged into the global model.
    case merged = 1
    /// Not merged; `RejectReason` says why.
    case rejected = 2
    /// This (client id, client epoch, seq) was already processed; the receipt repeats the first outcome's version.
    case duplicate = 3
    /// An EVALUATION_REPORT was recorded (reports are not merged).
    case recorded = 4

    public var description: String {
        switch self {
        case .merged: "merged"
        case .rejected: "rejected"
        case .duplicate: "duplicate"
        case .recorded: "recorded"
        }
    }
}

/// Why an update was not merged. The raw values are wire codes (docs/PROTOCOL.md).
public enum RejectReason: UInt8, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case none = 0
    /// Wrong frame count, truncated or oversized header fields, trailing bytes.
    case malformed = 1
    case unsupportedProtocolVersion = 2
    case unknownMessageType = 3
    /// Tensor names, shapes or dtype differ from the model's layout.
    case layoutMismatch = 4
    /// NaN or infinity in the payload.
    case nonFinite = 5
    /// Staleness above the configured maximum.
    case tooStale = 6
    /// The base version is not one of this run's versions (newer than the model, or another run).
    case unknownBase = 7
    /// (client id, client epoch, seq) already processed, or older than the dedup window.
    case duplicate = 8
    /// A frame over the size limit.
    case oversized = 9
    case unknownClient = 10
    /// Update norm over the configured bound.
    case normTooLarge = 11
    /// The payload's client id differs from the authenticated identity.
    case identityMismatch = 12
    case unsupportedCodec = 13
    /// The aggregator is shutting down or overloaded; resend later.
    case unavailable = 14
    /// A full model where the algorithm takes deltas (fedbuff), or a delta where it takes
    /// full models (fedasync, fedavg): header flag bit 1 against the snapshot config's algorithm.
    case wrongUpdateKind = 15
    /// The payload breaks its codec's rules: frame sizes, an int8 scale that is not finite,
    /// a top-k index out of range or repeated, top-k on a full model.
    case badEncoding = 16
    /// The seq is more than the dedup window ahead of the highest seq of its client epoch
    /// (PROTOCOL.md 4.1): refused and not recorded, so it cannot lock later seqs out.
    case seqOutOfRange = 17
    /// The aggregator requires local differential privacy (its snapshot config carries
    /// `local_dp`) and the update does not say it was privatized (header flag bit 3).
    case notPrivatized = 18
    /// FedAsync's anomaly filter (robust.anomaly.*) found the update's norm or its direction
    /// far outside those of recently accepted updates; nothing was merged.
    case anomalous = 19

    /// A stable snake_case name, used in logs and metrics labels.
    public var name: String {
        switch self {
        case .none: "none"
        case .malformed: "malformed"
        case .unsupportedProtocolVersion: "unsupported_protocol_version"
        case .unknownMessageType: "unknown_message_type"
        case .layoutMismatch: "layout_mismatch"
        case .nonFinite: "non_finite"
        case .tooStale: "too_stale"
        case .unknownBase: "unknown_base"
        case .duplicate: "duplicate"
        case .oversized: "oversized"
        case .unknownClient: "unknown_client"
        case .normTooLarge: "norm_too_large"
        case .identityMismatch: "identity_mismatch"
        case .unsupportedCodec: "unsupported_codec"
        case .unavailable: "unavailable"
        case .wrongUpdateKind: "wrong_update_kind"
        case .badEncoding: "bad_encoding"
        case .seqOutOfRange: "seq_out_of_range"
        case .notPrivatized: "not_privatized"
        case .anomalous: "anomalous"
        }
    }

    public var description: String { name }
}

/// What became of one update: the part of its receipt that the dedup table remembers (and
/// checkpoints), so that a resend is answered like the first time.
public struct UpdateOutcome: Sendable, Hashable, Codable {
    public var decision: Decision
    public var reason: RejectReason
    public var baseVersion: UInt64
    /// The model version after the merge (merged) or at the time of the decision.
    public var modelVersion: UInt64
    public var staleness: UInt64?
    public var mixingWeight: Double

    public init(decision: Decision, reason: RejectReason, baseVersion: UInt64, modelVersion: UInt64, staleness: UInt64?, mixingWeight: Double) {
        self.decision = decision
        self.reason = reason
        self.baseVersion = baseVersion
        self.modelVersion = modelVersion
        self.staleness = staleness
        self.mixingWeight = mixingWeight
    }
}
