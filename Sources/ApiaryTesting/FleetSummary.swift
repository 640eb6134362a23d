import ApiaryMerge
import ApiaryProtocol
import Foundation

/// What a run of an `InProcessFleet` came to (`apiary demo` prints it); the keys of
/// `jsonLine()` are a stable interface. Made by `InProcessFleet.run()`.
public struct FleetSummary: Sendable {
    /// The aggregation rule (`Algorithm.rawValue`: fedasync, fedbuff, fedavg).
    public var algorithm: String
    /// Clients in the fleet.
    public var clients: Int
    /// The evaluation of the last global model seen.
    public var finalAccuracy: Double
    /// Seconds from the start (every client holding the first model) to `targetAccuracy`;
    /// nil when it was not reached.
    public var timeToTarget: Double?
    public var targetAccuracy: Double
    /// Seconds to the lower milestone (`InProcessFleet.Options.lowerTarget`, 0.85 unless set).
    public var timeTo085: Double?
    /// The top tier's model version at the end, and its counters (the first shard's, when sharded).
    public var versions: UInt64
    public var updatesMerged: UInt64
    public var updatesRejected: UInt64
    public var meanStaleness: Double
    public var maxStaleness: UInt64
    /// Seconds from the start to the end of the run.
    public var elapsed: Double
    public var shards = 1
    public var gateways = 0
    /// (seconds, version, accuracy) after every evaluated version.
    public var series: [(Double, UInt64, Double)]
    /// The slowest delay tier's clients: their share of all merges, and of their own updates
    /// merged (nil when there are no delays, or behind gateways, where merges are pushes).
    public var slowestTier: (delay: Double, clients: Int, mergeShare: Double, mergedFraction: Double)? = nil
    /// The update codec and the bytes the aggregator received (updates, reports, all frames).
    public var codec = "float32"
    public var bytesReceived: UInt64 = 0
    /// Central DP: the privacy spent (nil without).
    public var privacy: PrivacyStatus? = nil
    /// The attack, when some clients attacked ("sign-flip 4/20", say).
    public var attack: String? = nil

    /// One summary value: an integer, a number (printed with 4 decimals on the JSON line;
    /// null when missing) or a string.
    public enum Field: Encodable {
        case int(UInt64), number(Double?), text(String)
        /// A number printed in full (a delta such as 1e-05), null when missing.
        case exact(Double?)

        public var json: String {
            switch self {
            case .int(let v): "\(v)"
            case .number(let d): d.map { String(format: "%.4f", $0) } ?? "null"
            case .exact(let d): d.map { "\($0)" } ?? "null"
            case .text(let t): "\"\(t)\""
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .int(let v): try c.encode(v)
            case .number(let d), .exact(let d): if let d { try c.encode(d) } else { try c.encodeNil() }
            case .text(let t): try c.encode(t)
            }
        }
    }

    /// The summary's keys and values, in the order of `apiary demo --json` (the report's
    /// summary.json has the same keys).
    public var fields: [(key: String, value: Field)] {
        [("algorithm", .text(algorithm)), ("clients", .int(UInt64(clients))), ("final_accuracy", .number(finalAccuracy)),
         ("time_to_target_s", .number(timeToTarget)), ("target_accuracy", .number(targetAccuracy)), ("time_to_0.85_s", .number(timeTo085)),
         ("versions", .int(versions)), ("updates_merged", .int(updatesMerged)), ("updates_rejected", .int(updatesRejected)),
         ("mean_staleness", .number(meanStaleness)), ("max_staleness", .int(maxStaleness)), ("elapsed_s", .number(elapsed)),
         ("shards", .int(UInt64(shards))), ("gateways", .int(UInt64(gateways))),
         ("slowest_tier_merge_share", .number(slowestTier?.mergeShare)), ("slowest_tier_merged_fraction", .number(slowestTier?.mergedFraction)),
         ("codec", .text(codec)), ("bytes_received", .int(bytesReceived)),
         ("epsilon", .number(privacy?.epsilon)), ("delta", .exact(privacy?.delta)), ("attack", .text(attack ?? "none"))]
    }

    public func jsonLine() -> String {
        "{" + fields.map { "\"\($0.key)\":\($0.value.json)" }.joined(separator: ",") + "}"
    }

    /// `{"async": {...}, "sync": {...}, "speedup_to_target": x}` for `--compare --json`.
    public static func comparisonJSON(_ s: [FleetSummary]) -> String {
        var parts = s.map { "\"\($0.algorithm == Algorithm.fedavg.rawValue ? "sync" : "async")\":\($0.jsonLine())" }
        if s.count == 2, let a = s[0].timeToTarget, let b = s[1].timeToTarget {
            parts.append(String(format: "\"speedup_to_target\":%.2f", b / a))
        } else {
            parts.append("\"speedup_to_target\":null")
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    public func text() -> String {
        let reached = timeToTarget.map { String(format: "reached %.2f in %.2f s", targetAccuracy, $0) }
            ?? String(format: "did not reach %.2f", targetAccuracy)
        let shape = (shards > 1 ? ", \(shards) shards" : "") + (gateways > 0 ? ", \(gateways) gateways (merges at the top are gateway pushes)" : "")
        return """
            \(algorithm): \(clients) clients\(shape)\(attack.map { " (attacking: \($0))" } ?? ""), \(reached); final accuracy \(String(format: "%.4f", finalAccuracy)) \
            after \(versions) versions (\(updatesMerged) merged, \(updatesRejected) rejected, \
            staleness mean \(String(format: "%.2f", meanStaleness)) max \(maxStaleness)), \(String(format: "%.1f", elapsed)) s; \
            updates in \(codec), \(String(format: "%.2f", Double(bytesReceived) / 1_048_576)) MiB received\
            \(updatesMerged > 0 ? String(format: " (%.0f bytes per merged update)", Double(bytesReceived) / Double(updatesMerged)) : "")
            """ + (privacy.map { p in
                "\n  central DP: epsilon \(String(format: "%.3f", p.epsilon)) at delta \(p.delta) after \(p.steps) noised steps "
                    + "(noise multiplier \(p.noiseMultiplier), clip \(String(format: "%.3g", p.clip)), \(p.samplingRate < 1 ? "Poisson q = \(p.samplingRate)" : "no sampling amplification"))"
            } ?? "") + (slowestTier.map { t in
                String(format: "\n  slowest tier (%d clients, %.1f s delay): %.1f %% of all merges, %.0f %% of its updates merged",
                       t.clients, t.delay, 100 * t.mergeShare, 100 * t.mergedFraction)
            } ?? "")
    }
}
