import ApiaryCore
import Foundation
import GRDB
import Logging
import Synchronization

/// The contribution ledger: an SQLite file (WAL mode, through a GRDB `DatabasePool`) with one
/// row per received update, written off the merge path.
///
/// Thread rules:
/// - `append(_:)` and `append(contentsOf:)` may be called from any thread, including the
///   aggregator thread: they take a short in-memory lock, never touch the disk and never wait
///   for the writer. Rows go to a bounded queue; beyond `queueLimit` pending rows they are
///   dropped and counted in `droppedRows` (with at most one warning log per 10 seconds), so a
///   slow or stuck disk can neither block the merge path nor grow memory without bound.
/// - A dedicated thread (`apiary-ledger`) writes the queue in batches, one transaction per
///   batch of at most `batchSize` rows, every `flushInterval` or as soon as `batchSize` rows
///   are queued. A batch that fails is retried twice, then given up and counted in `failedRows`
///   (errors are logged at most once per 10 seconds); while writes keep failing, what is
///   queued is given up after one attempt per wake-up, so `close()` cannot hang on a bad disk.
/// - `flush()` and `close()` block until the writer has caught up: call them at shutdown or
///   in tests, never on the aggregator thread while it merges.
/// - The readers (`recent`, `totals`, `count`) may be called from any thread, concurrently
///   with writing (WAL readers do not wait for the writer). They see written rows only, not
///   those still queued. Other processes may read the file at the same time (`LedgerReader`).
///
/// Call `close()` before the process exits; releasing the last reference without closing
/// lets the writer finish in the background, which an exiting process cuts short.
public final class Ledger: Sendable {
    /// The database file.
    public let path: String
    /// Most rows held in memory (queued or being written) before new ones are dropped.
    public let queueLimit: Int
    /// Most rows per transaction; queuing this many also wakes the writer early.
    public let batchSize: Int
    /// What is kept.
    public let retention: LedgerRetention
    private let pool: DatabasePool
    private let writer: LedgerWriter

    /// Opens (or creates) the ledger at `path` and migrates its schema; `start()` starts the
    /// writer thread (rows appended before wait for it; `flush()` and `close()` start it too).
    ///
    /// - Parameters:
    ///   - queueLimit: rows that may wait in memory (at least 1); appends beyond it are dropped and counted.
    ///   - batchSize: most rows per transaction (at least 1); this many queued rows wake the writer at once.
    ///   - flushInterval: the writer writes whatever is queued at least this often.
    /// - Throws: a GRDB `DatabaseError` when the file cannot be opened, created or migrated.
    ///   - retention: how many rows, or how old, are kept (`LedgerRetention`); the writer thread
    ///     deletes older rows in short transactions between batches, after adding them to the totals.
    public init(path: String, queueLimit: Int = 100_000, batchSize: Int = 1000, flushInterval: Duration = .milliseconds(100),
                retention: LedgerRetention = .default, logger: Logger) throws {
        let queueLimit = max(1, queueLimit)
        let batchSize = max(1, batchSize)
        var config = Configuration()
        config.label = "apiary-ledger"
        // Another process writing the file (or a long checkpoint) delays the writer thread,
        // never the merge path, so waiting is better than failing the batch.
        config.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: config)
        try LedgerSchema.migrator.migrate(pool)
        self.path = path
        self.queueLimit = queueLimit
        self.batchSize = batchSize
        self.pool = pool
        var l = logger
        l[metadataKey: "ledger"] = "\(path)"
        self.retention = retention
        writer = LedgerWriter(pool: pool, queueLimit: queueLimit, batchSize: batchSize, flushInterval: flushInterval,
                              retention: retention, logger: l)
    }

    /// Starts the writer thread. Idempotent.
    public func start() {
        writer.start()
    }

    deinit {
        // Not blocking here: the writer thread drains what is queued and exits on its own.
        writer.requestClose()
    }

    // MARK: Writing

    /// Queues one row for writing and returns at once (never blocks on disk). Dropped (and
    /// counted in `droppedRows`) when `queueLimit` rows are pending or the ledger is closed.
    public func append(_ row: LedgerRow) {
        writer.append(CollectionOfOne(row))
    }

    /// Queues rows for writing and returns at once, under one lock acquisition. Rows beyond
    /// the free room of the queue are dropped and counted in `droppedRows`.
    public func append(contentsOf rows: some Collection<LedgerRow>) {
        writer.append(rows)
    }

    /// Blocks until every row appended before the call is written (or given up, see
    /// `failedRows`). For shutdown and tests; not for the aggregator thread.
    public func flush() {
        writer.flush()
    }

    /// Writes what is queued, then stops the writer thread. Later appends are dropped and
    /// counted. Idempotent; concurrent callers all return once the writer has stopped. The
    /// readers keep working after `close()`.
    public func close() {
        writer.close()
    }

    /// Adds the merged rows a crash lost: for each merged outcome of a checkpoint's dedup table
    /// (`clientID`, `seq`, outcome) that has no merged row of that (client, seq, model
    /// version), a row with `LedgerRow.recoveredDetail` and time `time`. Rows retention already
    /// deleted are not added back. Synchronous: call it at start, before appending. Returns the
    /// rows added.
    @discardableResult
    public func catchUp(merged: [(clientID: String, seq: UInt64, outcome: UpdateOutcome)], time: Date) throws -> Int {
        try pool.write { try LedgerSchema.catchUp($0, merged: merged, time: time) }
    }

    /// Applies the retention now, on the calling thread (the writer thread does it by itself
    /// every few seconds). Returns the rows deleted. For tests and tools.
    @discardableResult
    public func applyRetention(now: Date = Date()) throws -> Int {
        try LedgerWriter.applyRetention(pool: pool, retention: retention, now: now)
    }

    /// Rows deleted by retention since the ledger opened.
    public var prunedRows: Int { writer.counters.pruned }

    /// Rows dropped: appended beyond `queueLimit` or after `close()`.
    public var droppedRows: Int { writer.counters.dropped }
    /// Rows written to the file so far.
    public var writtenRows: Int { writer.counters.written }
    /// Rows given up after failed write attempts (logged as errors).
    public var failedRows: Int { writer.counters.failed }
    /// Rows accepted but not yet written: queued or in the transaction under way.
    public var pendingRows: Int { writer.counters.pending }

    // MARK: Reading

    /// The newest `limit` rows (by time, then insertion order), newest first; only those of
    /// `client` when given. Any thread; does not wait for the writer.
    public func recent(limit: Int, client: String? = nil) throws -> [LedgerRow] {
        try pool.read { try LedgerSchema.recent($0, limit: limit, client: client) }
    }

    /// Per-client totals over the whole file, sorted by client id. Any thread.
    public func totals() throws -> [ClientTotals] {
        try pool.read { try LedgerSchema.totals($0) }
    }

    /// Rows in the file (queued rows not included). Any thread.
    public func count() throws -> Int {
        try pool.read { try LedgerSchema.count($0) }
    }

    /// SQLite's journal mode of the file: "wal".
    public func journalMode() throws -> String {
        try pool.read { try LedgerSchema.journalMode($0) }
    }
}

extension Ledger {
    /// Why the ledger at `path` could not be opened, in plain words: a missing or unwritable
    /// directory, an unwritable file or a directory in its place, else SQLite's message.
    public static func explainOpenFailure(path: String, error: any Error) -> String {
        let url = URL(fileURLWithPath: path)
        let parent = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            if isDir.boolValue { return "cannot open the ledger: \(path) is a directory, not an SQLite file" }
            if access(path, R_OK | W_OK) != 0 { return "cannot open the ledger file for writing: \(String(cString: strerror(errno)))" }
        } else if !FileManager.default.fileExists(atPath: parent, isDirectory: &isDir) {
            return "cannot create the ledger: its directory \(parent) does not exist"
        } else if !isDir.boolValue {
            return "cannot create the ledger: \(parent) is not a directory"
        } else if access(parent, W_OK | X_OK) != 0 {
            return "cannot create the ledger in \(parent): \(String(cString: strerror(errno)))"
        }
        if let e = error as? DatabaseError {
            return "cannot open the ledger: \(e.message ?? "SQLite error \(e.resultCode.rawValue)")"
        }
        return "cannot open the ledger: \(error)"
    }

    /// Test hook: runs `body` while a separate connection holds the write lock of the file at
    /// `path`, so that a ledger's writer thread blocks on disk as it would on a stuck disk.
    /// Keep `body` well under the writer's 10 s busy timeout.
    package static func withWriteLockHeld<T>(path: String, _ body: () throws -> T) throws -> T {
        let blocker = try DatabaseQueue(path: path)
        var result: T?
        try blocker.inTransaction(.immediate) { _ in
            result = try body()
            return .rollback
        }
        try blocker.close()
        return result!
    }

    /// Test hook: runs `sql` on a separate connection to the file at `path` (to break the
    /// schema under a running writer, for instance).
    package static func executeOnSeparateConnection(path: String, sql: String) throws {
        // Waits for a ledger that is closing (its last WAL checkpoint) instead of failing.
        var config = Configuration()
        config.busyMode = .timeout(5)
        let connection = try DatabaseQueue(path: path, configuration: config)
        try connection.write { try $0.execute(sql: sql) }
        try connection.close()
    }
}

/// The queue and the writer thread behind `Ledger`.
final class LedgerWriter: Sendable {
    struct Counters {
        var pruned = 0
        var dropped = 0
        var written = 0
        var failed = 0
        var pending = 0
    }

    private struct State {
        var queue: [LedgerRow] = []
        /// Rows taken by the writer and not yet written or given up.
        var inFlight = 0
        /// Rows ever accepted, and rows written or given up: flush waits for `done` to reach
        /// the `accepted` it saw.
        var accepted = 0
        var done = 0
        var written = 0
        var failed = 0
        var dropped = 0
        var pruned = 0
        var closing = false
        var finished = false
        var flushWaiters: [(target: Int, semaphore: DispatchSemaphore)] = []
        var closeWaiters: [DispatchSemaphore] = []
        var lastDropWarning: ContinuousClock.Instant?
    }

    private let pool: DatabasePool
    private let queueLimit: Int
    private let batchSize: Int
    private let flushInterval: Duration
    private let logger: Logger
    private let state = Mutex(State())
    /// Wakes the writer early (threshold reached, flush, close).
    private let wake = DispatchSemaphore(value: 0)
    private static let dropWarningInterval: Duration = .seconds(10)
    private static let attempts = 3

    private let retention: LedgerRetention
    /// Most rows deleted per transaction (a few milliseconds of write lock each).
    static let pruneBatch = 20_000

    init(pool: DatabasePool, queueLimit: Int, batchSize: Int, flushInterval: Duration, retention: LedgerRetention, logger: Logger) {
        self.retention = retention
        self.pool = pool
        self.queueLimit = queueLimit
        self.batchSize = batchSize
        self.flushInterval = flushInterval
        self.logger = logger
    }

    private let started = Atomic<Bool>(false)

    func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in run() }
        thread.name = "apiary-ledger"
        thread.start()
    }

    var counters: Counters {
        state.withLock { s in
            Counters(pruned: s.pruned, dropped: s.dropped, written: s.written, failed: s.failed, pending: s.queue.count + s.inFlight)
        }
    }

    // MARK: Producers (any thread, never block on disk)

    func append(_ rows: some Collection<LedgerRow>) {
        let (wakeWriter, warnDropped, closed): (Bool, Int?, Bool) = state.withLock { s in
            let room = s.closing ? 0 : max(0, queueLimit - s.queue.count - s.inFlight)
            let before = s.queue.count
            let taken = min(room, rows.count)
            if taken == rows.count {
                s.queue.append(contentsOf: rows)
            } else {
                s.queue.append(contentsOf: rows.prefix(taken))
            }
            s.accepted += taken
            let lost = rows.count - taken
            var warn: Int?
            if lost > 0 {
                s.dropped += lost
                let now = ContinuousClock.now
                if s.lastDropWarning.map({ now - $0 >= Self.dropWarningInterval }) ?? true {
                    s.lastDropWarning = now
                    warn = s.dropped
                }
            }
            return (before < batchSize && s.queue.count >= batchSize, warn, s.closing)
        }
        if wakeWriter { wake.signal() }
        if let warnDropped {
            logger.warning(closed ? "ledger closed: dropping rows" : "ledger queue full: dropping rows", metadata: [
                "dropped_total": "\(warnDropped)", "queue_limit": "\(queueLimit)",
            ])
        }
    }

    // MARK: Waiting (blocking)

    func flush() {
        start()
        let done = DispatchSemaphore(value: 0)
        let mustWait = state.withLock { s in
            guard s.done < s.accepted && !s.finished else { return false }
            s.flushWaiters.append((s.accepted, done))
            return true
        }
        guard mustWait else { return }
        wake.signal()
        done.wait()
    }

    func close() {
        start()
        let done = DispatchSemaphore(value: 0)
        let mustWait = state.withLock { s in
            guard !s.finished else { return false }
            s.closing = true
            s.closeWaiters.append(done)
            return true
        }
        guard mustWait else { return }
        wake.signal()
        done.wait()
    }

    /// Asks the writer to drain and stop, without waiting.
    func requestClose() {
        // A writer never started has nothing to drain unless rows were appended.
        if !started.load(ordering: .acquiring) && state.withLock({ $0.queue.isEmpty }) { return }
        start()
        state.withLock { $0.closing = true }
        wake.signal()
    }

    // MARK: The writer thread

    /// Deletes what `retention` no longer keeps, in transactions of at most `pruneBatch` rows.
    static func applyRetention(pool: DatabasePool, retention: LedgerRetention, now: Date) throws -> Int {
        guard !retention.isUnlimited else { return 0 }
        let nowMs = LedgerTime.milliseconds(now)
        let cut = try pool.read { try LedgerSchema.pruneCut($0, retention: retention, nowMs: nowMs) }
        var total = 0
        while true {
            let n = try pool.write { try LedgerSchema.prune($0, through: cut, limit: pruneBatch) }
            total += n
            if n < pruneBatch { return total }
        }
    }

    /// One retention pass between batches: rows queued meanwhile wait in memory (the merge
    /// path never does). Errors are logged, not fatal (the next pass retries).
    private func retain(log: inout ErrorLog) {
        do {
            let n = try Self.applyRetention(pool: pool, retention: retention, now: Date())
            if n > 0 { state.withLock { $0.pruned += n } }
        } catch {
            let now = ContinuousClock.now
            if log.last.map({ now - $0 >= Self.dropWarningInterval }) ?? true {
                logger.error("ledger retention failed", metadata: ["error": "\(error)"])
                log.last = now
            }
        }
    }

    private func run() {
        let interval = Double(flushInterval.components.seconds) + Double(flushInterval.components.attoseconds) / 1e18
        var failing = false
        var errorLog = ErrorLog()
        var retentionLog = ErrorLog()
        var lastRetention = ContinuousClock.now - retention.interval
        while true {
            _ = wake.wait(timeout: .now() + interval)
            // Take the whole queue at once (O(1) under the lock: producers never wait for a
            // copy), then write it in transactions of at most `batchSize` rows.
            let rows: [LedgerRow] = state.withLock { s in
                var taken: [LedgerRow] = []
                swap(&taken, &s.queue)
                s.inFlight = taken.count
                return taken
            }
            var start = 0
            while start < rows.count {
                let end = min(rows.count, start + batchSize)
                // After a batch was given up, one attempt per wake-up and, if it fails, the rest
                // of what was taken is given up too: a broken disk cannot stall close() for long.
                let ok = write(rows[start..<end], attempts: failing ? 1 : Self.attempts, log: &errorLog)
                let given = ok || !failing ? end - start : rows.count - start
                finished(given, ok: ok)
                failing = !ok
                start += given
            }
            if !retention.isUnlimited && ContinuousClock.now - lastRetention >= retention.interval {
                lastRetention = ContinuousClock.now
                retain(log: &retentionLog)
            }
            let closeWaiters: [DispatchSemaphore]? = state.withLock { s in
                guard s.closing && s.queue.isEmpty else { return nil }
                s.finished = true
                defer { s.closeWaiters = [] }
                return s.closeWaiters
            }
            if let closeWaiters {
                closeWaiters.forEach { $0.signal() }
                return
            }
        }
    }

    /// At most one error line per 10 s, with the number of failures not logged.
    private struct ErrorLog {
        var last: ContinuousClock.Instant?
        var suppressed = 0
    }

    private func write(_ rows: ArraySlice<LedgerRow>, attempts: Int, log: inout ErrorLog) -> Bool {
        for attempt in 1...attempts {
            do {
                try pool.write { db in try LedgerSchema.insert(rows, in: db) }
                return true
            } catch {
                let last = attempt == attempts
                let now = ContinuousClock.now
                if log.last.map({ now - $0 >= Self.dropWarningInterval }) ?? true {
                    logger.error(last ? "ledger write failed: rows lost" : "ledger write failed: retrying", metadata: [
                        "error": "\(error)", "rows": "\(rows.count)", "attempt": "\(attempt)", "suppressed": "\(log.suppressed)",
                    ])
                    log.last = now
                    log.suppressed = 0
                } else {
                    log.suppressed += 1
                }
                if !last { Thread.sleep(forTimeInterval: 0.2 * Double(attempt)) }
            }
        }
        return false
    }

    private func finished(_ n: Int, ok: Bool) {
        let ready: [DispatchSemaphore] = state.withLock { s in
            s.inFlight -= n
            s.done += n
            if ok { s.written += n } else { s.failed += n }
            var ready: [DispatchSemaphore] = []
            let done = s.done
            s.flushWaiters.removeAll { w in
                guard w.target <= done else { return false }
                ready.append(w.semaphore)
                return true
            }
            return ready
        }
        ready.forEach { $0.signal() }
    }
}
