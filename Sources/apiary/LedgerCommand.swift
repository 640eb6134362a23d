import ApiaryAggregator
import ApiaryCore
import ArgumentParser
import Foundation

struct LedgerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Show the contribution ledger: the most recent updates and per-client totals.",
        discussion: """
            Reads the SQLite ledger an aggregator writes (ledger.path); safe while it runs. \
            Never creates or changes the file.

            Examples:
              apiary ledger --path ledger.sqlite
              apiary ledger --path ledger.sqlite --client client-3 --limit 50
              apiary ledger --path ledger.sqlite --json
            """
    )

    @Option(name: .long, help: "The ledger file.")
    var path: String

    @Option(name: .long, help: "Most recent rows to show.")
    var limit: Int = 20

    @Option(name: .long, help: "Only this client's recent rows (totals still cover every client).")
    var client: String?

    @Flag(name: .long, help: "Print one JSON object {\"recent\": [...], \"totals\": [...]}.")
    var json = false

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must not be negative") }
    }

    func run() throws {
        let ledger = try LedgerReader(path: path)
        let recent = try ledger.recent(limit: limit, client: client)
        let totals = try ledger.totals()
        if json {
            print(try LedgerJSON.encode(recent: recent, totals: totals))
        } else {
            print(LedgerText.recent(recent, client: client))
            print()
            print(LedgerText.totals(totals))
        }
    }
}

private func timestamp(_ date: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    f.timeZone = TimeZone(identifier: "UTC")
    return f.string(from: date)
}

private func number(_ v: Double, _ format: String) -> String {
    v.isFinite ? String(format: format, v) : "\(v)"
}

/// Each client's share of every merge the ledger counts and of their total mixing weight (its
/// data's part in the model), the totals summed once.
private struct LedgerShares {
    let merged: Int
    let weight: Double

    init(_ totals: [ClientTotals]) {
        merged = totals.reduce(0) { $0 + $1.merged }
        weight = totals.reduce(0) { $0 + $1.mixingWeight }
    }

    func merges(_ t: ClientTotals) -> Double { merged == 0 ? 0 : Double(t.merged) / Double(merged) }
    func weight(_ t: ClientTotals) -> Double { weight > 0 ? t.mixingWeight / weight : 0 }
}

/// The text report: aligned columns, numbers right-aligned.
private enum LedgerText {
    static func recent(_ rows: [LedgerRow], client: String?) -> String {
        let title = "Recent updates" + (client.map { " of \($0)" } ?? "") + " (newest first): \(rows.count)"
        guard !rows.isEmpty else { return title }
        let header = ["TIME", "CLIENT", "SEQ", "BASE", "STALENESS", "WEIGHT", "NORM", "DECISION", "REASON", "METRICS"]
        let body = rows.map { r in
            [timestamp(r.time), PeerText.escaped(r.clientID), "\(r.seq)", "\(r.baseVersion)", r.staleness.map { "\($0)" } ?? "-",
             number(r.mixingWeight, "%.4f"), r.updateNorm.map { number($0, "%.4g") } ?? "-",
             r.decision.description, r.reason == .none ? "-" : r.reason.name,
             r.metrics.isEmpty ? "-" : (r.decision == .recorded ? "\(PeerText.escaped(r.detail)): " : "")
                + r.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(number($0.value, "%.4g"))" }.joined(separator: " ")]
        }
        return title + "\n" + table(header, body, rightAligned: [2, 3, 4, 5, 6])
    }

    static func totals(_ totals: [ClientTotals]) -> String {
        let title = "Totals per client: \(totals.count)"
        guard !totals.isEmpty else { return title }
        let header = ["CLIENT", "RECEIVED", "MERGED", "MERGE_SHARE", "WEIGHT_SHARE", "REJECTED", "DUPLICATES", "MEAN_STALENESS", "LAST_SEEN",
                      "REJECTED_BY_REASON"]
        let shares = LedgerShares(totals)
        let body = totals.map { t in
            [PeerText.escaped(t.clientID), "\(t.received)", "\(t.merged)", number(100 * shares.merges(t), "%.1f") + " %",
             number(100 * shares.weight(t), "%.1f") + " %",
             "\(t.rejectedTotal)", "\(t.duplicates)",
             t.meanStaleness.map { number($0, "%.2f") } ?? "-", timestamp(t.lastSeen),
             t.rejected.isEmpty ? "-" : t.rejected.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.name)=\($0.value)" }
                .joined(separator: " ")]
        }
        return title + "\n" + table(header, body, rightAligned: [1, 2, 3, 4, 5, 6, 7])
    }


    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                if i == cells.count - 1 && !rightAligned.contains(i) { return c }  // no trailing blanks
                return rightAligned.contains(i) ? pad + c : c + pad
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}

/// The JSON report. Keys are snake_case; UInt64 values are JSON integers; non-finite
/// numbers are the strings "Infinity", "-Infinity" and "NaN".
private enum LedgerJSON {
    struct Report: Encodable {
        var recent: [RowJSON]
        var totals: [TotalsJSON]
    }

    struct RowJSON: Encodable {
        var time: String
        var timeMs: Int64
        var client: String
        var seq: UInt64
        var baseVersion: UInt64
        var staleness: UInt64?
        var mixingWeight: Double
        var updateNorm: Double?
        var sampleCount: UInt64
        var decision: String
        var reason: String
        var modelVersion: UInt64
        var detail: String
        var metrics: [String: Double]

        // Explicit so that nil values are written as null rather than left out.
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(time, forKey: .time)
            try c.encode(timeMs, forKey: .timeMs)
            try c.encode(client, forKey: .client)
            try c.encode(seq, forKey: .seq)
            try c.encode(baseVersion, forKey: .baseVersion)
            try c.encode(staleness, forKey: .staleness)
            try c.encode(mixingWeight, forKey: .mixingWeight)
            try c.encode(updateNorm, forKey: .updateNorm)
            try c.encode(sampleCount, forKey: .sampleCount)
            try c.encode(decision, forKey: .decision)
            try c.encode(reason, forKey: .reason)
            try c.encode(modelVersion, forKey: .modelVersion)
            try c.encode(detail, forKey: .detail)
            try c.encode(metrics, forKey: .metrics)
        }

        enum CodingKeys: String, CodingKey {
            case time, timeMs = "time_ms", client, seq, baseVersion = "base_version", staleness, mixingWeight = "mixing_weight"
            case updateNorm = "update_norm", sampleCount = "sample_count", decision, reason, modelVersion = "model_version", detail, metrics
        }
    }

    struct TotalsJSON: Encodable {
        var client: String
        var received: Int
        var merged: Int
        var mergeShare: Double
        var weightShare: Double
        var rejected: Int
        var rejectedByReason: [String: Int]
        var duplicates: Int
        var meanStaleness: Double?
        var lastSeen: String

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(client, forKey: .client)
            try c.encode(received, forKey: .received)
            try c.encode(merged, forKey: .merged)
            try c.encode(mergeShare, forKey: .mergeShare)
            try c.encode(weightShare, forKey: .weightShare)
            try c.encode(rejected, forKey: .rejected)
            try c.encode(rejectedByReason, forKey: .rejectedByReason)
            try c.encode(duplicates, forKey: .duplicates)
            try c.encode(meanStaleness, forKey: .meanStaleness)
            try c.encode(lastSeen, forKey: .lastSeen)
        }

        enum CodingKeys: String, CodingKey {
            case client, received, merged, mergeShare = "merge_share", weightShare = "weight_share", rejected, rejectedByReason = "rejected_by_reason", duplicates
            case meanStaleness = "mean_staleness", lastSeen = "last_seen"
        }
    }

    static func encode(recent: [LedgerRow], totals: [ClientTotals]) throws -> String {
        let report = Report(
            recent: recent.map { r in
                RowJSON(time: timestamp(r.time), timeMs: r.timeMilliseconds, client: r.clientID,
                        seq: r.seq, baseVersion: r.baseVersion, staleness: r.staleness, mixingWeight: r.mixingWeight,
                        updateNorm: r.updateNorm, sampleCount: r.sampleCount, decision: r.decision.description,
                        reason: r.reason.name, modelVersion: r.modelVersion, detail: r.detail, metrics: r.metrics)
            },
            totals: totals.map { [shares = LedgerShares(totals)] t in
                TotalsJSON(client: t.clientID, received: t.received, merged: t.merged, mergeShare: shares.merges(t), weightShare: shares.weight(t),
                           rejected: t.rejectedTotal,
                           rejectedByReason: Dictionary(uniqueKeysWithValues: t.rejected.map { ($0.key.name, $0.value) }),
                           duplicates: t.duplicates, meanStaleness: t.meanStaleness, lastSeen: timestamp(t.lastSeen))
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return String(decoding: try encoder.encode(report), as: UTF8.self)
    }
}
