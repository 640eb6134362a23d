import ApiaryCore
import Foundation

/// One row of the contribution ledger: what the aggregator did with one received update.
///
/// Stored in the `updates` table (see `Ledger`). `UInt64` fields are stored as the `Int64`
/// with the same bit pattern, so every value round-trips, including those above `Int64.max`
/// (they read as negative numbers in raw SQL; seqs based on Unix microseconds and versions
/// never get there). `time` is kept at millisecond precision.
public struct LedgerRow: Sendable, Hashable {
    /// When the aggregator decided, at millisecond precision (the initializer rounds to it).
    public var time: Date
    public var clientID: String
    /// The client's sequence number of the update.
    public var seq: UInt64
    /// The model version the client trained from.
    public var baseVersion: UInt64
    /// Model version minus base version; nil when the update was rejected before it was computed.
    public var staleness: UInt64?
    /// The FedAsync mixing weight applied (0 when not merged).
    public var mixingWeight: Double
    /// L2 norm of (update - model); nil when not computed. A NaN is stored as NULL and reads back as nil.
    public var updateNorm: Double?
    /// Training samples the client reports for the update.
    public var sampleCount: UInt64
    public var decision: Decision
    /// `.none` for merged updates.
    public var reason: RejectReason
    /// The model version after the merge (merged) or at the time of the decision.
    public var modelVersion: UInt64
    /// Human-readable detail (the reject message; an evaluation report's dataset); may be empty.
    public var detail: String
    /// The metrics the update carried, or the evaluation report's; empty when none.
    public var metrics: [String: Double]

    public init(time: Date, clientID: String, seq: UInt64, baseVersion: UInt64, staleness: UInt64?, mixingWeight: Double,
                updateNorm: Double?, sampleCount: UInt64, decision: Decision, reason: RejectReason, modelVersion: UInt64,
                detail: String = "", metrics: [String: Double] = [:]) {
        self.time = LedgerTime.date(milliseconds: LedgerTime.milliseconds(time))
        self.clientID = clientID
        self.seq = seq
        self.baseVersion = baseVersion
        self.staleness = staleness
        self.mixingWeight = mixingWeight
        self.updateNorm = updateNorm
        self.sampleCount = sampleCount
        self.decision = decision
        self.reason = reason
        self.modelVersion = modelVersion
        self.detail = detail
        self.metrics = metrics
    }

    /// `time` as stored: Unix epoch milliseconds (clamped to the Int64 range).
    public var timeMilliseconds: Int64 { LedgerTime.milliseconds(time) }
}

/// Per-client summary of the ledger (see `Ledger.totals()`).
public struct ClientTotals: Sendable, Hashable {
    public var clientID: String
    /// Rows for this client, whatever the decision.
    public var received: Int
    /// Rows with decision `.merged`.
    public var merged: Int
    /// Rows with decision `.rejected`, by reason. Resends older than the dedup window are
    /// rejected with reason `.duplicate` and counted here, not in `duplicates`.
    public var rejected: [RejectReason: Int]
    /// Rows with decision `.duplicate` (a resend answered with the first outcome).
    public var duplicates: Int
    /// Rows with decision `.recorded` (evaluation reports).
    public var evaluations: Int = 0
    /// Mean staleness of the merged rows; nil when none was merged.
    public var meanStaleness: Double?
    /// Sum of the mixing weights of the merged rows (the client's part of the model).
    public var mixingWeight: Double = 0
    /// Time of the newest row.
    public var lastSeen: Date

    public init(clientID: String, received: Int, merged: Int, rejected: [RejectReason: Int], duplicates: Int,
                meanStaleness: Double?, lastSeen: Date) {
        self.clientID = clientID
        self.received = received
        self.merged = merged
        self.rejected = rejected
        self.duplicates = duplicates
        self.meanStaleness = meanStaleness
        self.lastSeen = lastSeen
    }

    /// All rejections, whatever the reason.
    public var rejectedTotal: Int { rejected.values.reduce(0, +) }
}

/// Errors of the ledger API.
/// Why a ledger could not be read (`ApiaryError`'s shape: a code, the reason naming the file
/// or row, the underlying error, where).
public typealias LedgerError = ApiaryError<LedgerErrors>

/// The domain of `LedgerError`.
public enum LedgerErrors: ApiaryErrorDomain {}

extension ApiaryError.Code where Domain == LedgerErrors {
    /// `LedgerReader` was pointed at a path where there is no file.
    public static let fileNotFound = Self("file not found")
    /// The file exists but is not a ledger (not SQLite, or no `updates` table).
    public static let notALedger = Self("not a ledger")
    /// A stored row has a value this version cannot read (e.g. an unknown decision name).
    public static let unreadableRow = Self("unreadable row")
}

extension ApiaryError where Domain == LedgerErrors {
    public static func fileNotFound(_ path: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.fileNotFound, "no ledger file at \(path)", file: file, line: line)
    }

    public static func notALedger(path: String, detail: String, underlying: (any Error)? = nil, file: String = #fileID, line: Int = #line) -> Self {
        Self(.notALedger, "\(path) is not an Apiary ledger: \(detail)", underlying: underlying, file: file, line: line)
    }

    public static func unreadableRow(id: Int64, detail: String, underlying: (any Error)? = nil, file: String = #fileID, line: Int = #line) -> Self {
        Self(.unreadableRow, "ledger row \(id) is unreadable: \(detail)", underlying: underlying, file: file, line: line)
    }
}

/// Millisecond timestamps as stored in the `time_ms` column (Unix epoch, UTC).
enum LedgerTime {
    /// Rounds to the nearest millisecond; clamps to the Int64 range, NaN gives 0 (never traps).
    static func milliseconds(_ date: Date) -> Int64 {
        let ms = (date.timeIntervalSince1970 * 1000).rounded()
        if ms.isNaN { return 0 }
        if ms >= 9_223_372_036_854_775_807.0 { return .max }  // 2^63 as a Double
        if ms <= -9_223_372_036_854_775_808.0 { return .min }
        return Int64(ms)
    }

    static func date(milliseconds ms: Int64) -> Date {
        Date(timeIntervalSince1970: Double(ms) / 1000)
    }
}

extension LedgerRow {
    /// The `detail` of a merged row added at start from the checkpoint's dedup table: the
    /// merge was durable and receipted, but its row was still queued when the process died.
    /// Such a row has the checkpoint's time, sample count 0 and no update norm (the
    /// checkpoint does not keep them).
    public static let recoveredDetail = "recovered at start from the checkpoint's dedup table (row lost in a crash)"
}

/// How much of the ledger is kept: rows beyond `maxRows` (the oldest first) and rows older
/// than `maxAge` are deleted by the writer thread, after their counts were added to the
/// per-client totals (`Ledger.totals()` keeps counting them). Nil: no bound of that kind.
public struct LedgerRetention: Sendable, Hashable {
    public var maxRows: Int?
    public var maxAge: Duration?
    /// How often the writer thread applies it by itself (first right after its first batch).
    public var interval: Duration = .seconds(5)

    /// One million rows (about 150 MB of SQLite file, measured: docs/OPERATIONS.md), no age limit.
    public static let `default` = LedgerRetention(maxRows: 1_000_000, maxAge: nil)
    /// Keeps everything.
    public static let unlimited = LedgerRetention(maxRows: nil, maxAge: nil)

    public init(maxRows: Int?, maxAge: Duration?, interval: Duration = .seconds(5)) {
        self.maxRows = maxRows
        self.maxAge = maxAge
        self.interval = interval
    }

    var maxAgeMilliseconds: Int64? {
        maxAge.map { $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000 }
    }

    var isUnlimited: Bool { maxRows == nil && maxAge == nil }
}
