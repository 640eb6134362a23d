import ApiaryCore
import ApiaryProtocol
import Foundation
import GRDB

/// The ledger's SQLite schema and the queries shared by `Ledger` and `LedgerReader`.
///
/// Table `updates`, one row per received update:
///
/// | column        | type    | meaning                                                      |
/// |---------------|---------|--------------------------------------------------------------|
/// | id            | INTEGER | autoincrement primary key (insertion order)                  |
/// | time_ms       | INTEGER | decision time, Unix epoch milliseconds (UTC)                 |
/// | client_id     | TEXT    |                                                              |
/// | seq           | INTEGER | UInt64 stored as the Int64 with the same bit pattern         |
/// | base_version  | INTEGER | UInt64 bit pattern                                           |
/// | staleness     | INTEGER | UInt64 bit pattern; NULL when not computed                   |
/// | mixing_weight | REAL    | NULL only for NaN (SQLite stores NaN as NULL)                |
/// | update_norm   | REAL    | L2 norm of update - model; NULL when not computed (or NaN)   |
/// | sample_count  | INTEGER | UInt64 bit pattern                                           |
/// | decision      | TEXT    | `merged`, `rejected`, `duplicate` or `recorded`              |
/// | reason        | TEXT    | `RejectReason.name` (`none`, `too_stale`, ...)               |
/// | model_version | INTEGER | UInt64 bit pattern                                           |
/// | detail        | TEXT    | reject message (a report's dataset), may be empty            |
/// | metrics       | TEXT    | JSON object of the update's or report's metrics, or ''       |
///
/// Evaluation reports are rows too: decision `recorded`, `base_version` the version evaluated,
/// `sample_count` the examples evaluated on, `detail` the dataset.
///
/// Indexes: `updates_client_seq` on (client_id, seq), `updates_time` on (time_ms).
enum LedgerSchema {
    static let table = "updates"

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-updates") { db in
            try db.execute(sql: """
                CREATE TABLE updates (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    time_ms INTEGER NOT NULL,
                    client_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    base_version INTEGER NOT NULL,
                    staleness INTEGER,
                    mixing_weight REAL,
                    update_norm REAL,
                    sample_count INTEGER NOT NULL,
                    decision TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    model_version INTEGER NOT NULL,
                    detail TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX updates_client_seq ON updates(client_id, seq);
                CREATE INDEX updates_time ON updates(time_ms);
                """)
        }
        m.registerMigration("v2-metrics") { db in
            try db.execute(sql: "ALTER TABLE updates ADD COLUMN metrics TEXT NOT NULL DEFAULT ''")
        }
        m.registerMigration("v3-retention") { db in
            // What retention deleted, summed per (client, decision, reason), so that the
            // per-client totals cover every row ever written; and the highest merged model
            // version deleted (catch-up at start never re-adds a row retention removed).
            try db.execute(sql: """
                CREATE TABLE pruned_totals (
                    client_id TEXT NOT NULL,
                    decision TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    n INTEGER NOT NULL,
                    staleness_n INTEGER NOT NULL,
                    staleness_sum REAL NOT NULL,
                    last_ms INTEGER NOT NULL,
                    PRIMARY KEY (client_id, decision, reason)
                );
                CREATE TABLE ledger_state (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                """)
        }
        m.registerMigration("v4-weight-totals") { db in
            // The mixing weight of pruned merged rows, for each client's share of the total.
            try db.execute(sql: "ALTER TABLE pruned_totals ADD COLUMN weight_sum REAL NOT NULL DEFAULT 0")
        }
        return m
    }

    static let insertSQL = """
        INSERT INTO updates (time_ms, client_id, seq, base_version, staleness, mixing_weight, update_norm,
                             sample_count, decision, reason, model_version, detail, metrics)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let selectColumns = """
        id, time_ms, client_id, seq, base_version, staleness, mixing_weight, update_norm,
        sample_count, decision, reason, model_version, detail
        """

    /// `selectColumns` and the metrics column (an empty string from a ledger written before
    /// it, which a reader opens without migrating).
    static func columns(_ db: Database) throws -> String {
        let has = try db.columns(in: table).contains { $0.name == "metrics" }
        return selectColumns + (has ? ", metrics" : ", '' AS metrics")
    }

    /// Inserts `rows` with a cached statement; the caller provides the transaction.
    static func insert(_ rows: some Collection<LedgerRow>, in db: Database) throws {
        let statement = try db.cachedStatement(sql: insertSQL)
        for r in rows {
            let values: [(any DatabaseValueConvertible)?] = [
                LedgerTime.milliseconds(r.time), r.clientID, bits(r.seq), bits(r.baseVersion), r.staleness.map(bits),
                r.mixingWeight.isNaN ? nil : r.mixingWeight, r.updateNorm.flatMap { $0.isNaN ? nil : $0 },
                bits(r.sampleCount), r.decision.description, r.reason.name, bits(r.modelVersion), r.detail,
                r.metrics.isEmpty ? "" : String(decoding: Codec.encodeMetrics(r.metrics), as: UTF8.self),
            ]
            try statement.execute(arguments: StatementArguments(values))
        }
    }

    static func bits(_ v: UInt64) -> Int64 { Int64(bitPattern: v) }
    static func unbits(_ v: Int64) -> UInt64 { UInt64(bitPattern: v) }

    static let decisionsByName: [String: Decision] = Dictionary(
        uniqueKeysWithValues: [Decision.merged, .rejected, .duplicate, .recorded].map { ($0.description, $0) })
    static let reasonsByName: [String: RejectReason] = Dictionary(
        uniqueKeysWithValues: RejectReason.allCases.map { ($0.name, $0) })

    static func decision(_ name: String, id: Int64) throws -> Decision {
        guard let d = decisionsByName[name] else { throw LedgerError.unreadableRow(id: id, detail: "unknown decision '\(name)'") }
        return d
    }

    static func metrics(_ json: String, id: Int64) throws -> [String: Double] {
        guard !json.isEmpty else { return [:] }
        do {
            return try Array(json.utf8).withUnsafeBytes { b throws(WireError) in try Codec.decodeMetrics(b) }
        } catch {
            throw LedgerError.unreadableRow(id: id, detail: "metrics: \(error)", underlying: error)
        }
    }

    static func reason(_ name: String, id: Int64) throws -> RejectReason {
        guard let r = reasonsByName[name] else { throw LedgerError.unreadableRow(id: id, detail: "unknown reason '\(name)'") }
        return r
    }

    /// Decodes a row selected with `selectColumns`.
    static func decode(_ row: Row) throws -> LedgerRow {
        let id = try row.decode(Int64.self, atIndex: 0)
        return LedgerRow(
            time: LedgerTime.date(milliseconds: try row.decode(Int64.self, atIndex: 1)),
            clientID: try row.decode(String.self, atIndex: 2),
            seq: unbits(try row.decode(Int64.self, atIndex: 3)),
            baseVersion: unbits(try row.decode(Int64.self, atIndex: 4)),
            staleness: try row.decode(Int64?.self, atIndex: 5).map(unbits),
            mixingWeight: try row.decode(Double?.self, atIndex: 6) ?? .nan,
            updateNorm: try row.decode(Double?.self, atIndex: 7),
            sampleCount: unbits(try row.decode(Int64.self, atIndex: 8)),
            decision: try decision(try row.decode(String.self, atIndex: 9), id: id),
            reason: try reason(try row.decode(String.self, atIndex: 10), id: id),
            modelVersion: unbits(try row.decode(Int64.self, atIndex: 11)),
            detail: try row.decode(String.self, atIndex: 12),
            metrics: try metrics(try row.decode(String.self, atIndex: 13), id: id))
    }

    // MARK: Queries

    static func recent(_ db: Database, limit: Int, client: String?) throws -> [LedgerRow] {
        let limit = max(0, limit)
        let rows: [Row]
        if let client {
            rows = try Row.fetchAll(db, sql: "SELECT \(try columns(db)) FROM updates WHERE client_id = ? ORDER BY time_ms DESC, id DESC LIMIT ?",
                                    arguments: [client, limit])
        } else {
            rows = try Row.fetchAll(db, sql: "SELECT \(try columns(db)) FROM updates ORDER BY time_ms DESC, id DESC LIMIT ?",
                                    arguments: [limit])
        }
        return try rows.map(decode)
    }

    static func count(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM updates") ?? 0
    }

    /// Staleness is a UInt64 bit pattern: add 2^64 to negative values before summing (as
    /// REAL, so the sum cannot overflow).
    static let stalenessSumSQL = "TOTAL(CASE WHEN staleness < 0 THEN staleness + 18446744073709551616.0 ELSE staleness END)"

    static func totals(_ db: Database) throws -> [ClientTotals] {
        // The live rows, plus what retention pruned (a ledger written before retention has no
        // pruned_totals table; readers open it without migrating).
        let live = """
            SELECT client_id, decision, reason, COUNT(*) AS n, COUNT(staleness) AS sn, \(stalenessSumSQL) AS ss,
                   MAX(time_ms) AS last, MIN(id) AS first, TOTAL(mixing_weight) AS ws FROM updates GROUP BY client_id, decision, reason
            """
        var pruned = ""
        if try db.tableExists("pruned_totals") {
            // (A ledger from before v4 has no weight_sum: its pruned rows count no weight.)
            let weights = try db.columns(in: "pruned_totals").contains { $0.name == "weight_sum" } ? "weight_sum" : "0.0"
            pruned = " UNION ALL SELECT client_id, decision, reason, n, staleness_n, staleness_sum, last_ms, 0, \(weights) FROM pruned_totals"
        }
        let groups = try Row.fetchAll(db, sql: """
            SELECT client_id, decision, reason, SUM(n), SUM(sn), TOTAL(ss), MAX(last), MIN(first), TOTAL(ws)
            FROM (\(live)\(pruned)) GROUP BY client_id, decision, reason ORDER BY client_id
            """)
        var byClient: [String: ClientTotals] = [:]
        var stalenessSum: [String: (sum: Double, count: Int)] = [:]
        for g in groups {
            let client = try g.decode(String.self, atIndex: 0)
            let id = try g.decode(Int64.self, atIndex: 7)
            let decision = try decision(try g.decode(String.self, atIndex: 1), id: id)
            let reason = try reason(try g.decode(String.self, atIndex: 2), id: id)
            let n = try g.decode(Int.self, atIndex: 3)
            let last = LedgerTime.date(milliseconds: try g.decode(Int64.self, atIndex: 6))
            var t = byClient[client] ?? ClientTotals(clientID: client, received: 0, merged: 0, rejected: [:], duplicates: 0,
                                                     meanStaleness: nil, lastSeen: last)
            t.received += n
            t.lastSeen = max(t.lastSeen, last)
            switch decision {
            case .merged:
                t.merged += n
                t.mixingWeight += try g.decode(Double.self, atIndex: 8)
                let s = stalenessSum[client] ?? (0, 0)
                stalenessSum[client] = (s.sum + (try g.decode(Double.self, atIndex: 5)), s.count + (try g.decode(Int.self, atIndex: 4)))
            case .rejected:
                t.rejected[reason, default: 0] += n
            case .duplicate:
                t.duplicates += n
            case .recorded:
                t.evaluations += n
            }
            byClient[client] = t
        }
        for (client, s) in stalenessSum where s.count > 0 {
            byClient[client]?.meanStaleness = s.sum / Double(s.count)
        }
        return byClient.values.sorted { $0.clientID < $1.clientID }
    }

    // MARK: Retention and catch-up

    static let prunedMergedVersionKey = "pruned_max_merged_version"

    /// The id at or below which rows are due for deletion under `retention` (0: none).
    static func pruneCut(_ db: Database, retention: LedgerRetention, nowMs: Int64) throws -> Int64 {
        var cut: Int64 = 0
        if let maxRows = retention.maxRows {
            let maxID = try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM updates") ?? 0
            cut = max(cut, maxID - Int64(maxRows))
        }
        if let age = retention.maxAgeMilliseconds {
            let old = try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM updates WHERE time_ms < ?", arguments: [nowMs - age]) ?? 0
            cut = max(cut, old)
        }
        return cut
    }

    /// Deletes the oldest rows (by id) up to `cut`, at most `limit` of them, after adding them to
    /// `pruned_totals`; the caller provides the transaction. Returns the rows deleted.
    static func prune(_ db: Database, through cut: Int64, limit: Int) throws -> Int {
        guard let first = try Int64.fetchOne(db, sql: "SELECT MIN(id) FROM updates"), first <= cut else { return 0 }
        let upTo = min(cut, first + Int64(limit) - 1)
        try db.execute(sql: """
            INSERT INTO pruned_totals (client_id, decision, reason, n, staleness_n, staleness_sum, last_ms, weight_sum)
            SELECT client_id, decision, reason, COUNT(*), COUNT(staleness), \(stalenessSumSQL), MAX(time_ms), TOTAL(mixing_weight)
            FROM updates WHERE id <= ? GROUP BY client_id, decision, reason
            ON CONFLICT (client_id, decision, reason) DO UPDATE SET
                n = n + excluded.n, staleness_n = staleness_n + excluded.staleness_n,
                staleness_sum = staleness_sum + excluded.staleness_sum, last_ms = MAX(last_ms, excluded.last_ms),
                weight_sum = weight_sum + excluded.weight_sum
            """, arguments: [upTo])
        if let v = try Int64.fetchOne(db, sql: "SELECT MAX(model_version) FROM updates WHERE id <= ? AND decision = 'merged'", arguments: [upTo]) {
            try db.execute(sql: """
                INSERT INTO ledger_state (key, value) VALUES (?, ?)
                ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)
                """, arguments: [prunedMergedVersionKey, v])
        }
        try db.execute(sql: "DELETE FROM updates WHERE id <= ?", arguments: [upTo])
        return db.changesCount
    }

    /// Inserts a `merged` row for each of `merged` (from a checkpoint's dedup table) that the
    /// file lacks: no merged row of that (client, seq, model version), and a model version above
    /// the highest one retention pruned. The caller provides the transaction. Returns the rows added.
    static func catchUp(_ db: Database, merged: [(clientID: String, seq: UInt64, outcome: UpdateOutcome)], time: Date) throws -> Int {
        let pruned = try Int64.fetchOne(db, sql: "SELECT value FROM ledger_state WHERE key = ?", arguments: [prunedMergedVersionKey])
        let exists = try db.cachedStatement(sql: """
            SELECT 1 FROM updates WHERE client_id = ? AND seq = ? AND model_version = ? AND decision = 'merged' LIMIT 1
            """)
        var missing: [LedgerRow] = []
        for m in merged where m.outcome.decision == .merged {
            if let pruned, bits(m.outcome.modelVersion) <= pruned { continue }
            guard try Int.fetchOne(exists, arguments: [m.clientID, bits(m.seq), bits(m.outcome.modelVersion)]) == nil else { continue }
            missing.append(LedgerRow(time: time, clientID: m.clientID, seq: m.seq, baseVersion: m.outcome.baseVersion,
                                     staleness: m.outcome.staleness, mixingWeight: m.outcome.mixingWeight, updateNorm: nil,
                                     sampleCount: 0, decision: .merged, reason: m.outcome.reason, modelVersion: m.outcome.modelVersion,
                                     detail: LedgerRow.recoveredDetail))
        }
        missing.sort { $0.modelVersion < $1.modelVersion }
        try insert(missing, in: db)
        return missing.count
    }

    static func journalMode(_ db: Database) throws -> String {
        try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? ""
    }
}
