import ApiaryCore
import ApiaryProtocol
import Foundation
import Metrics

/// The aggregator's swift-metrics instruments. Counters follow `AggregatorStats` by
/// difference (`sync`, once per turn of the loop), so the merge path itself records only
/// its three histograms. Used on the aggregator thread only.
final class AggregatorMetrics {
    private let factory: any MetricsFactory
    private let received, merged, bytesIn, bytesOut, snapshots, broadcasts: Counter
    private var rejected: [RejectReason: Counter] = [:]
    private let staleness, mixingWeight: Recorder
    private let mergeDuration: Metrics.Timer
    private let version, checkpointVersion, checkpointTime: Gauge
    private var last = AggregatorStats()
    private var handshakeFailures: [String: Counter] = [:]

    init(factory: (any MetricsFactory)?) {
        let f = factory ?? MetricsSystem.factory
        typealias N = AggregatorMetricName
        self.factory = f
        received = Counter(label: N.updatesReceived, factory: f)
        merged = Counter(label: N.updatesMerged, factory: f)
        bytesIn = Counter(label: N.bytesReceived, factory: f)
        bytesOut = Counter(label: N.bytesSent, factory: f)
        snapshots = Counter(label: N.snapshotsServed, factory: f)
        broadcasts = Counter(label: N.broadcasts, factory: f)
        staleness = Recorder(label: N.updateStaleness, aggregate: true, factory: f)
        mixingWeight = Recorder(label: N.mixingWeight, aggregate: true, factory: f)
        mergeDuration = Metrics.Timer(label: N.mergeDuration, factory: f)
        version = Gauge(label: N.modelVersion, factory: f)
        checkpointVersion = Gauge(label: N.checkpointVersion, factory: f)
        checkpointTime = Gauge(label: N.checkpointTimestamp, factory: f)
        // Every reason exists from the start (at zero), so rates and alerts need no special case.
        for reason in RejectReason.allCases where reason != .none {
            rejected[reason] = Counter(label: N.updatesRejected, dimensions: [("reason", reason.name)], factory: f)
        }
        // The usual causes exist from the start (at zero), like the reject reasons.
        for cause in ["unauthorized_key", "cryptographic", "mechanism_mismatch"] {
            handshakeFailures[cause] = Counter(label: N.handshakeFailures, dimensions: [("cause", cause)], factory: f)
        }
    }

    /// Counts failed handshakes; `cause` is a `HandshakeFailure.cause` label.
    func recordHandshakeFailures(cause: String, count: Int) {
        if handshakeFailures[cause] == nil {
            handshakeFailures[cause] = Counter(label: AggregatorMetricName.handshakeFailures, dimensions: [("cause", cause)], factory: factory)
        }
        handshakeFailures[cause]!.increment(by: count)
    }

    /// Records one merged update (or sync-mode contribution) and how long validating and merging it took.
    func recordMerge(nanoseconds: UInt64) {
        mergeDuration.recordNanoseconds(Int64(clamping: nanoseconds))
    }

    /// Records the staleness and mixing weight of a merged update's receipt.
    func recordMerged(_ r: Receipt) {
        staleness.record(Double(r.staleness ?? 0))
        mixingWeight.record(r.mixingWeight)
    }

    /// Brings the counters and gauges up to `s` (they only move forward).
    func sync(_ s: AggregatorStats) {
        func add(_ c: Counter, _ new: UInt64, _ old: UInt64) { if new > old { c.increment(by: new - old) } }
        add(received, s.received, last.received)
        add(merged, s.merged, last.merged)
        add(bytesIn, s.bytesIn, last.bytesIn)
        add(bytesOut, s.bytesOut, last.bytesOut)
        add(snapshots, s.snapshotsServed, last.snapshotsServed)
        add(broadcasts, s.broadcasts, last.broadcasts)
        if s.rejected != last.rejected {
            for (reason, n) in s.rejected where reason != .none {
                add(rejected[reason]!, n, last.rejected[reason] ?? 0)
            }
        }
        if s.version != last.version || last.received == 0 { version.record(Int64(clamping: s.version)) }
        if s.durableVersion != last.durableVersion { checkpointVersion.record(Int64(clamping: s.durableVersion)) }
        if s.lastCheckpointAt != last.lastCheckpointAt, let t = s.lastCheckpointAt { checkpointTime.record(t.timeIntervalSince1970) }
        last = s
    }
}
