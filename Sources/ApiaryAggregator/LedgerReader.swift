import Foundation
import GRDB

/// Read-only access to an existing ledger file, for tools (`apiary ledger`) and dashboards.
/// Never creates or modifies the file; safe to use while an aggregator is writing it (in
/// this or another process). Any thread; calls are serialized on one connection.
public final class LedgerReader: Sendable {
    public let path: String
    private let queue: DatabaseQueue

    /// Opens the ledger at `path` read-only.
    ///
    /// - Throws: `LedgerError.fileNotFound` when there is no file at `path`,
    ///   `LedgerError.notALedger` when it is not SQLite or has no `updates` table.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LedgerError.fileNotFound(path)
        }
        guard !isDirectory.boolValue else { throw LedgerError.notALedger(path: path, detail: "it is a directory") }
        var config = Configuration()
        config.readonly = true
        config.label = "apiary-ledger-reader"
        config.busyMode = .timeout(5)
        do {
            queue = try DatabaseQueue(path: path, configuration: config)
            let hasTable = try queue.read { try $0.tableExists(LedgerSchema.table) }
            guard hasTable else { throw LedgerError.notALedger(path: path, detail: "no '\(LedgerSchema.table)' table") }
        } catch let e as LedgerError {
            throw e
        } catch let e as DatabaseError {
            throw LedgerError.notALedger(path: path, detail: e.message ?? "\(e)", underlying: e)
        }
        self.path = path
    }

    /// The newest `limit` rows (by time, then insertion order), newest first; only those of
    /// `client` when given.
    public func recent(limit: Int, client: String? = nil) throws -> [LedgerRow] {
        try queue.read { try LedgerSchema.recent($0, limit: limit, client: client) }
    }

    /// Per-client totals, sorted by client id.
    public func totals() throws -> [ClientTotals] {
        try queue.read { try LedgerSchema.totals($0) }
    }

    /// Rows in the file.
    public func count() throws -> Int {
        try queue.read { try LedgerSchema.count($0) }
    }
}
