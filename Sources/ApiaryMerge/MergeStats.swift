import ApiaryCore
import ApiaryProtocol
import Foundation

/// The merge path's counters: what the engine counts as it takes updates and reports. The
/// engine alone writes them; what the aggregator's I/O counts (broadcasts, snapshots, bytes
/// out, durability) is the aggregator's (`ServingStats` in ApiaryAggregator), and the two
/// meet in `AggregatorStats`.
public struct MergeStats: Sendable, Hashable {
    public var version: UInt64 = 0
    /// Updates received (well-formed or not).
    public var received: UInt64 = 0
    public var merged: UInt64 = 0
    /// Rejections by reason (duplicates included under `.duplicate`).
    public var rejected: [RejectReason: UInt64] = [:]
    /// Sum and maximum of the staleness of merged updates.
    public var stalenessSum: UInt64 = 0
    public var maxStaleness: UInt64 = 0
    /// Bytes of the updates and reports received.
    public var bytesIn: UInt64 = 0
    /// Relay mode (a gateway): merges since the local progress was last taken upstream, and
    /// the training examples behind them.
    public var unsentMerges: UInt64 = 0
    public var unsentSamples: UInt64 = 0
    /// Relay mode: times the model was rebased onto a newer upstream model.
    public var rebases: UInt64 = 0
    /// Relay mode: pushes the tier above did not merge, whose progress was kept for the next one.
    public var restoredPushes: UInt64 = 0
    /// EVALUATION_REPORT messages received, recorded and rejected (not counted as updates).
    public var reportsReceived: UInt64 = 0
    public var reportsRecorded: UInt64 = 0
    public var reportsRejected: UInt64 = 0
    /// Central DP (fedbuff with privacy.mode central): the privacy spent; nil otherwise.
    public var privacy: PrivacyStatus? = nil
    /// Local DP (privacy.mode local): what clients must do, and their epsilon per update; nil otherwise.
    public var localPrivacy: LocalPrivacyStatus? = nil

    public init() {}

    public var rejectedTotal: UInt64 { rejected.values.reduce(0, +) }

    /// Mean staleness of merged updates (0 before the first merge).
    public var meanStaleness: Double { merged == 0 ? 0 : Double(stalenessSum) / Double(merged) }
}

/// A gateway's local progress (`Aggregator.takeProgress()`): the model to push upstream and
/// what is behind it.
public struct RelayProgress: Sendable {
    public var parameters: [Float]
    /// The local version it was taken at.
    public var version: UInt64
    /// Local merges, and their training examples, since the progress was last taken.
    public var merges: UInt64
    public var samples: UInt64
    /// `parameters - anchor`: the progress this push carries beyond the upstream model it
    /// was rebased on (nil after a resume, before the first rebase). Handed back with
    /// `Aggregator.restore(progress:in:)` when the tier above does not merge the push.
    public var delta: [Float]?
}
