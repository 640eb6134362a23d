import ApiaryCore
import ApiaryProtocol
import Foundation

/// What the aggregator's I/O counts, beside the merge path's `MergeStats`: the loop alone
/// writes these.
public struct ServingStats: Sendable, Hashable {
    public var snapshotsServed: UInt64 = 0
    public var broadcasts: UInt64 = 0
    /// Bytes of broadcasts, snapshot replies and receipts sent.
    public var bytesOut: UInt64 = 0
    /// Newest version on disk (with checkpoints).
    public var durableVersion: UInt64 = 0
    public var lastCheckpointAt: Date?

    public init() {}
}

/// Counters an aggregator keeps, as `Aggregator.stats` shows them: the merge path's and the
/// I/O's, each written by its owner, read together (`stats.merged`, `stats.broadcasts`).
@dynamicMemberLookup
public struct AggregatorStats: Sendable, Hashable {
    public var merge: MergeStats
    public var serving: ServingStats

    public init(merge: MergeStats = MergeStats(), serving: ServingStats = ServingStats()) {
        self.merge = merge
        self.serving = serving
    }

    public subscript<T>(dynamicMember path: KeyPath<MergeStats, T>) -> T { merge[keyPath: path] }
    public subscript<T>(dynamicMember path: KeyPath<ServingStats, T>) -> T { serving[keyPath: path] }
}

// MARK: Observability: client activity and swift-metrics instruments

/// One client as the aggregator saw it: when its last update arrived and what came of its
/// updates. Clients are known by their authenticated id (with CURVE) or the id in the update.
public struct ClientActivity: Sendable, Hashable, Codable {
    /// When the aggregator last received an update from this client.
    public var lastSeen: Date
    /// Updates received from this client that named it.
    public var received: UInt64 = 0
    /// Of those, merged (in sync mode: contributions to a closed round).
    public var merged: UInt64 = 0
    /// Of those, rejected or duplicate.
    public var rejected: UInt64 = 0
    /// The sum of the mixing weights of its merged updates (FedAsync: a_t; FedBuff and FedAvg:
    /// its share of the buffer or round it was merged in).
    public var mixingWeight: Double = 0

    /// Every update it sent was refused (at least `starvedAfter` of them): its data never
    /// reaches the model (with FedAsync, typically a slow client whose updates are all too stale).
    public var isStarved: Bool { merged == 0 && received >= Self.starvedAfter }
    public static let starvedAfter: UInt64 = 10

    public init(lastSeen: Date) { self.lastSeen = lastSeen }
}

/// What the aggregator thread collects beyond `AggregatorStats` and publishes about once a
/// second (so that the merge path never copies it): per-client activity and the
/// distribution of staleness over merged updates.
public struct AggregatorActivity: Sendable, Hashable {
    /// Slots of `stalenessCounts`: staleness 0 to 63, and one slot for 64 or more.
    public static let stalenessSlots = 65
    /// At most this many clients are remembered; beyond it the least recently seen half is forgotten.
    public static let maxClients = 10_000

    /// Activity by client id.
    public var clients: [String: ClientActivity] = [:]
    /// Merged updates by staleness: slot `s` counts updates of staleness `s`, the last slot
    /// those of staleness `stalenessSlots - 1` or more.
    public var stalenessCounts = [UInt64](repeating: 0, count: AggregatorActivity.stalenessSlots)
    /// When the aggregator thread published this copy.
    public var publishedAt = Date()

    public init() {}

    /// Records one receipted outcome (called on the aggregator thread).
    mutating func record(_ r: Receipt, at now: Date) {
        if clients[r.clientID] == nil && clients.count >= Self.maxClients {
            let keep = clients.sorted { $0.value.lastSeen > $1.value.lastSeen }.prefix(Self.maxClients / 2)
            clients = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
        clients[r.clientID, default: ClientActivity(lastSeen: now)].lastSeen = now
        clients[r.clientID]!.received += 1
        if r.decision == .merged {
            clients[r.clientID]!.merged += 1
            clients[r.clientID]!.mixingWeight += r.mixingWeight
            stalenessCounts[Int(min(r.staleness ?? 0, UInt64(Self.stalenessSlots - 1)))] += 1
        } else {
            clients[r.clientID]!.rejected += 1
        }
    }

    /// Merges and mixing weight over every client remembered (the denominators of the shares).
    public var totals: (merged: UInt64, mixingWeight: Double) {
        clients.values.reduce((0, 0)) { ($0.0 + $1.merged, $0.1 + $1.mixingWeight) }
    }

    /// Clients whose last update arrived within `window` before `now`.
    public func activeClients(within window: TimeInterval, now: Date = Date()) -> Int {
        clients.values.reduce(0) { $0 + (now.timeIntervalSince($1.lastSeen) <= window ? 1 : 0) }
    }
}

/// Names of the metrics the aggregator records through swift-metrics. The process chooses
/// the backend (`MetricsSystem.bootstrap`, or `AggregatorConfig.metricsFactory`); without
/// one, recording costs a call into a no-op handler.
public enum AggregatorMetricName {
    /// Counter: updates received, well-formed or not.
    public static let updatesReceived = "apiary_updates_received_total"
    /// Counter: updates merged into the global model.
    public static let updatesMerged = "apiary_updates_merged_total"
    /// Counter with a `reason` label (`too_stale`, `duplicate`, `malformed`, ...): updates not merged.
    public static let updatesRejected = "apiary_updates_rejected_total"
    /// Histogram: staleness (versions merged since the base model) of merged updates.
    public static let updateStaleness = "apiary_update_staleness"
    /// Histogram: the mixing weight `alpha * S(staleness)` of merged updates.
    public static let mixingWeight = "apiary_mixing_weight"
    /// Histogram (seconds): time to validate and merge one update.
    public static let mergeDuration = "apiary_merge_duration_seconds"
    /// Gauge: the global model's version.
    public static let modelVersion = "apiary_model_version"
    /// Counter: bytes of update messages received.
    public static let bytesReceived = "apiary_bytes_received_total"
    /// Counter: bytes sent (model broadcasts, snapshots, receipts).
    public static let bytesSent = "apiary_bytes_sent_total"
    /// Counter: snapshot requests answered.
    public static let snapshotsServed = "apiary_snapshots_served_total"
    /// Counter: model broadcasts on the PUB socket.
    public static let broadcasts = "apiary_model_broadcasts_total"
    /// Gauge: newest version in a durable checkpoint.
    public static let checkpointVersion = "apiary_checkpoint_version"
    /// Gauge: Unix time of the last durable checkpoint (0 before the first).
    public static let checkpointTimestamp = "apiary_checkpoint_timestamp_seconds"
    /// Counter with a `cause` label: peers whose ZMTP/CURVE handshake failed.
    /// `unauthorized_key` (the ZAP handler refused the key; the start-up self-test's probe is
    /// not counted), `cryptographic` (the peer encrypted to another server key: its
    /// `server_public_key_file` is wrong), `mechanism_mismatch` (CURVE on one side only),
    /// `protocol`, `no_detail` (from libzmq's socket monitor on the three sockets).
    public static let handshakeFailures = "apiary_handshake_failures_total"
}
