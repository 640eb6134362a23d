import ApiaryCore
import Foundation

/// Counters an aggregator keeps; a copy is readable from any thread.
public struct AggregatorStats: Sendable, Hashable {
    public var version: UInt64 = 0
    /// Updates received (well-formed or not).
    public var received: UInt64 = 0
    public var merged: UInt64 = 0
    /// Rejections by reason (duplicates included under `.duplicate`).
    public var rejected: [RejectReason: UInt64] = [:]
    /// Sum and maximum of the staleness of merged updates.
    public var stalenessSum: UInt64 = 0
    public var maxStaleness: UInt64 = 0
    public var snapshotsServed: UInt64 = 0
    public var broadcasts: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Newest version on disk (with checkpoints).
    public var durableVersion: UInt64 = 0
    public var lastCheckpointAt: Date?

    public init() {}

    public var rejectedTotal: UInt64 { rejected.values.reduce(0, +) }

    /// Mean staleness of merged updates (0 before the first merge).
    public var meanStaleness: Double { merged == 0 ? 0 : Double(stalenessSum) / Double(merged) }
}
