import ApiaryAggregator
import ApiaryCore
import Foundation

/// The body of `GET /status`: where the run is now. Encoded with snake_case keys and dates
/// as Unix seconds (`StatusJSON.encoder`); the keys are a stable interface (docs/OBSERVABILITY.md).
public struct StatusReport: Sendable, Codable, Hashable {
    /// Update counts since the aggregator started.
    public struct Updates: Sendable, Codable, Hashable {
        public var received: UInt64
        public var merged: UInt64
        public var rejected: UInt64
        /// Rejections by reason name (`too_stale`, `duplicate`, ...), only reasons seen.
        public var rejectedByReason: [String: UInt64]
    }

    /// Rates over the last `windowSeconds` (a minute once the monitor has run that long).
    public struct Rates: Sendable, Codable, Hashable {
        public var windowSeconds: Double
        public var receivedPerSecond: Double
        public var mergedPerSecond: Double
        public var rejectedPerSecond: Double
    }

    /// Staleness of merged updates.
    public struct Staleness: Sendable, Codable, Hashable {
        public var mean: Double
        public var max: UInt64
        /// `counts[s]` merged updates had staleness `s`; the slot at `overflowFrom` counts all
        /// of at least that. Trailing zero slots are left out.
        public var counts: [UInt64]
        public var overflowFrom: Int
    }

    /// One client as last seen.
    public struct Client: Sendable, Codable, Hashable {
        public var id: String
        public var lastSeenSecondsAgo: Double
        public var active: Bool
        public var received: UInt64
        public var merged: UInt64
        public var rejected: UInt64
        /// Its merges over all clients' merges, and its mixing weight over all clients' (0 to 1).
        public var mergeShare: Double = 0
        public var weightShare: Double = 0
        /// Every update it sent (at least 10) was refused: its data never reaches the model.
        public var starved: Bool = false
    }

    /// Clients: distinct senders seen, and those seen within the window.
    public struct Clients: Sendable, Codable, Hashable {
        public var active: Int
        public var known: Int
        public var windowSeconds: Double
        /// The most recently seen clients first (at most `StatusReport.clientListLimit`).
        public var list: [Client]
    }

    /// Durability.
    public struct Checkpoint: Sendable, Codable, Hashable {
        /// nil: checkpoints are off.
        public var directory: String?
        public var durableVersion: UInt64
        /// Seconds since the last durable checkpoint; nil before the first or without checkpoints.
        public var ageSeconds: Double?
    }

    /// Bytes and messages moved.
    public struct Traffic: Sendable, Codable, Hashable {
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        public var snapshotsServed: UInt64
        public var broadcasts: UInt64
    }

    /// The bound endpoints.
    public struct Endpoints: Sendable, Codable, Hashable {
        public var model: String
        public var snapshot: String
        public var update: String
    }

    /// What the aggregator was configured with.
    public struct ConfigSummary: Sendable, Codable, Hashable {
        /// `fedasync` or `fedavg` (synchronous rounds).
        public var rule: String
        public var alpha: Double
        public var stalenessFunction: String
        public var maxStaleness: UInt64
        public var endpoints: Endpoints
        public var checkpointDirectory: String?
        public var ledgerPath: String?
        public var curve: Bool
        public var publishIntervalSeconds: Double
        public var parameters: Int
        /// This aggregator's place among parameter shards (nil: it holds the whole model).
        public var shard: Shard? = nil
        /// Relay mode (a gateway): rebases onto upstream models and unsent local merges.
        public var relay: Relay? = nil
    }

    public struct Shard: Sendable, Codable, Hashable {
        public var index: Int
        public var count: Int
        public var start: Int
        public var end: Int
    }

    public struct Relay: Sendable, Codable, Hashable {
        public var rebases: UInt64
        public var unsentMerges: UInt64
        /// Pushes the tier above did not merge, whose progress went into a later push.
        public var restoredPushes: UInt64
    }

    /// The aggregator's own (in-process) evaluator, when one is configured.
    public struct Evaluation: Sendable, Codable, Hashable {
        public var enabled: Bool
        public var count: Int
        public var latest: EvaluationPoint?
        /// What it evaluates on (nil without one).
        public var dataset: String? = nil
    }

    /// What the fleet says about the model: metrics with updates, evaluators' reports.
    public struct Fleet: Sendable, Codable, Hashable {
        /// Client metrics averaged over the window of recent merged updates.
        public var clientMetrics: ClientMetricsSummary
        /// The latest report of each (evaluator, dataset).
        public var evaluators: [EvaluationRecord]
        /// Reports recorded since the start.
        public var reportsRecorded: UInt64
    }

    /// Central differential privacy (fedbuff with privacy.mode central): the privacy spent,
    /// as the merge engine reports it.
    public typealias Privacy = PrivacyStatus

    /// At most this many clients are listed.
    public static let clientListLimit = 200

    public var version: UInt64
    public var runId: String
    public var time: Date
    public var uptimeSeconds: Double
    public var updates: Updates
    public var rates: Rates
    public var staleness: Staleness
    public var clients: Clients
    public var checkpoint: Checkpoint
    public var traffic: Traffic
    public var config: ConfigSummary
    public var evaluation: Evaluation
    public var fleet: Fleet
    /// nil without central DP.
    public var privacy: Privacy? = nil
    /// nil without local DP (privacy.mode local).
    public var localPrivacy: LocalPrivacyStatus? = nil
}

/// The body of `GET /history`: time series for the dashboard's charts.
public struct HistoryReport: Sendable, Codable, Hashable {
    /// One sample of the aggregator, taken every second.
    public struct Sample: Sendable, Codable, Hashable {
        /// Seconds since `start`.
        public var t: Double
        public var version: UInt64
        /// Rates since the previous sample.
        public var mergedPerSecond: Double
        public var rejectedPerSecond: Double
        public var activeClients: Int
        /// The client metrics of the window at that time (empty before any came).
        public var clientMetrics: [String: Double] = [:]
    }

    /// One evaluator report.
    public struct Report: Sendable, Codable, Hashable {
        /// Seconds since `start` (negative for reports before the monitor started).
        public var t: Double
        public var evaluator: String
        public var dataset: String
        public var version: UInt64
        public var metrics: [String: Double]
    }

    /// One evaluation.
    public struct Evaluation: Sendable, Codable, Hashable {
        /// Seconds since `start` (negative for evaluations before the monitor started).
        public var t: Double
        public var version: UInt64
        public var accuracy: Double?
        public var loss: Double?
    }

    /// When the monitor started (Unix seconds); `t` values count from here.
    public var start: Date
    /// Now, by the server's clock.
    public var now: Date
    /// Oldest first.
    public var samples: [Sample]
    /// Oldest first; empty without an evaluator.
    public var evaluations: [Evaluation]
    /// What the in-process evaluator evaluates on (nil without one).
    public var evaluationDataset: String? = nil
    /// Evaluator reports kept, oldest first.
    public var reports: [Report] = []
}

/// The JSON encoding of the status endpoints.
public enum StatusJSON {
    /// snake_case keys, dates as Unix seconds, sorted keys.
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .secondsSince1970
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }

    /// The decoder that reads what `encoder` wrote.
    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .secondsSince1970
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return d
    }
}
