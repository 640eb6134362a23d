import ApiaryAggregator
import ApiaryCore
import Foundation
import Testing
import ApiaryTesting

/// The contribution ledger, on real SQLite files in a temporary directory.
@Suite struct LedgerTests {
    /// Runs `body` with a fresh temporary directory, removed afterwards.
    private func withTempDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-ledger-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    private static let t0 = Date(timeIntervalSince1970: 1_764_000_000)

    private func row(_ i: Int, client: String = "client-1", decision: Decision = .merged, reason: RejectReason = .none,
                     staleness: UInt64? = 1, time: Date? = nil) -> LedgerRow {
        LedgerRow(time: time ?? Self.t0.addingTimeInterval(Double(i) / 1000), clientID: client,
                  seq: 1_764_000_000_000_000 + UInt64(i), baseVersion: UInt64(i), staleness: staleness,
                  mixingWeight: decision == .merged ? 0.25 : 0, updateNorm: decision == .merged ? 1.5 : nil, sampleCount: 32,
                  decision: decision, reason: reason, modelVersion: UInt64(i) + 1, detail: reason == .none ? "" : "because \(i)")
    }

    @Test func appendWhileReadingThenFlushWritesEverything() throws {
        try withTempDirectory { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let rows = (0..<5_000).map { row($0) }
            let appended = DispatchSemaphore(value: 0)
            let appender = Thread {
                for r in rows { ledger.append(r) }
                appended.signal()
            }
            appender.start()
            var last = 0
            var reads = 0
            repeat {
                let n = try ledger.count()
                #expect(n >= last && n <= 5_000)
                last = n
                let recent = try ledger.recent(limit: 5)
                #expect(recent.count == min(5, n))
                reads += 1
            } while appended.wait(timeout: .now()) == .timedOut
            ledger.flush()
            #expect(try ledger.count() == 5_000)
            #expect(ledger.writtenRows == 5_000)
            #expect(ledger.pendingRows == 0)
            #expect(ledger.droppedRows == 0 && ledger.failedRows == 0)
            #expect(reads > 0)
            #expect(try ledger.recent(limit: 1).first == rows.last)
        }
    }

    @Test("the initialiser starts no thread: rows appended before start() wait, and close() without start() still writes them")
    func writerStartsOnlyWhenAsked() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let ledger = try Ledger(path: path, logger: quietLogger())
            ledger.append(contentsOf: (0..<3).map { row($0) })
            #expect(try ledger.count() == 0 && ledger.pendingRows == 3)
            ledger.close()
            #expect(try ledger.count() == 3)
            let idle = try Ledger(path: path, logger: quietLogger())
            idle.close()  // never started, nothing queued: the writer starts, finds nothing, stops
            #expect(try idle.count() == 3)
        }
    }

    @Test func rowsSurviveCloseAndReopen() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            var rows = (0..<200).map { row($0, client: $0 % 2 == 0 ? "a" : "bé 🐝") }
            rows[3].updateNorm = .infinity
            rows[4].staleness = nil
            rows[5].detail = "line one\nline 'two' \"quoted\""
            do {
                let ledger = try Ledger(path: path, logger: quietLogger())
                ledger.start()
                ledger.append(contentsOf: rows)
                ledger.close()
                ledger.close()  // idempotent
                ledger.append(row(999))
                #expect(ledger.droppedRows == 1)
                #expect(try ledger.count() == 200)  // readers keep working after close
            }
            let reopened = try Ledger(path: path, logger: quietLogger())
            reopened.start()
            defer { reopened.close() }
            #expect(try reopened.count() == 200)
            #expect(try reopened.recent(limit: 1_000) == Array(rows.reversed()))
            let reader = try LedgerReader(path: path)
            #expect(try reader.count() == 200)
            #expect(try reader.totals() == reopened.totals())
        }
    }

    @Test func totalsOfAHandMadeMix() throws {
        try withTempDirectory { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let rows = [
                row(0, client: "a", staleness: 1),
                row(1, client: "a", staleness: 2),
                row(2, client: "a", staleness: 6),
                row(3, client: "a", decision: .rejected, reason: .tooStale, staleness: 100),
                row(4, client: "a", decision: .rejected, reason: .tooStale, staleness: 101),
                row(5, client: "a", decision: .rejected, reason: .nonFinite, staleness: 0),
                row(6, client: "a", decision: .duplicate, reason: .duplicate, staleness: 1),
                row(7, client: "a", decision: .rejected, reason: .duplicate, staleness: nil),  // older than the dedup window
                row(8, client: "b", decision: .rejected, reason: .layoutMismatch, staleness: nil),
                row(9, client: "c", staleness: nil),  // merged without staleness: not in the mean
                row(10, client: "c", staleness: 4),
            ]
            ledger.append(contentsOf: rows.shuffled())
            ledger.flush()
            let totals = try ledger.totals()
            var expected = [
                ClientTotals(clientID: "a", received: 8, merged: 3, rejected: [.tooStale: 2, .nonFinite: 1, .duplicate: 1],
                             duplicates: 1, meanStaleness: 3, lastSeen: rows[7].time),
                ClientTotals(clientID: "b", received: 1, merged: 0, rejected: [.layoutMismatch: 1], duplicates: 0,
                             meanStaleness: nil, lastSeen: rows[8].time),
                ClientTotals(clientID: "c", received: 2, merged: 2, rejected: [:], duplicates: 0, meanStaleness: 4,
                             lastSeen: rows[10].time),
            ]
            // The mixing weights of the merged rows (0.25 each): each client's part of the model.
            expected[0].mixingWeight = 0.75
            expected[2].mixingWeight = 0.5
            #expect(totals == expected)
            #expect(totals[0].rejectedTotal == 4)
            #expect(try ledger.count() == rows.count)
        }
    }

    @Test func recentIsNewestFirstAndFiltersByClient() throws {
        try withTempDirectory { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let clients = ["a", "b", "c"]
            var rows = (0..<30).map { row($0, client: clients[$0 % 3]) }
            // Same millisecond: insertion order breaks the tie.
            rows.append(row(100, client: "b", time: Self.t0.addingTimeInterval(1)))
            rows.append(row(101, client: "b", time: Self.t0.addingTimeInterval(1)))
            // Appended last but older: ordering is by time, not insertion.
            let old = row(102, client: "a", time: Self.t0.addingTimeInterval(-10))
            rows.append(old)
            ledger.append(contentsOf: rows)
            ledger.flush()

            let newest = try ledger.recent(limit: 4)
            #expect(newest.map(\.seq) == [rows[31].seq, rows[30].seq, rows[29].seq, rows[28].seq])
            let b = try ledger.recent(limit: 3, client: "b")
            #expect(b.map(\.seq) == [rows[31].seq, rows[30].seq, rows[28].seq])
            #expect(b.allSatisfy { $0.clientID == "b" })
            let allA = try ledger.recent(limit: 1_000, client: "a")
            #expect(allA.count == 11)
            #expect(allA.last == old)
            #expect(zip(allA, allA.dropFirst()).allSatisfy { $0.time >= $1.time })
            #expect(try ledger.recent(limit: 0).isEmpty)
            #expect(try ledger.recent(limit: -3).isEmpty)
            #expect(try ledger.recent(limit: 10, client: "nobody").isEmpty)
            #expect(try ledger.recent(limit: 1_000).count == rows.count)
        }
    }

    @Test func appendDoesNotWaitForABlockedWriter() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let ledger = try Ledger(path: path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            // Another connection holds the write lock: the writer thread is stuck on disk.
            // The loop must still complete, with every row pending in memory.
            try Ledger.withWriteLockHeld(path: path) { () throws in
                for i in 0..<10_000 { ledger.append(row(i)) }
                #expect(ledger.pendingRows == 10_000)
                #expect(ledger.writtenRows == 0)
                #expect(try ledger.count() == 0)  // WAL: reading does not wait for the lock either
            }
            ledger.flush()
            #expect(try ledger.count() == 10_000)
            #expect(ledger.pendingRows == 0)
            #expect(ledger.droppedRows == 0 && ledger.failedRows == 0)
        }
    }

    @Test func boundedQueueDropsAndCounts() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let ledger = try Ledger(path: path, queueLimit: 10, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            // Rows taken by the blocked writer still count against the bound, so exactly 10
            // are kept whatever the writer managed to take.
            try Ledger.withWriteLockHeld(path: path) { () throws in
                for i in 0..<25 { ledger.append(row(i)) }
                #expect(ledger.pendingRows == 10)
                #expect(ledger.droppedRows == 15)
                ledger.append(contentsOf: (25..<30).map { row($0) })
                #expect(ledger.droppedRows == 20)
            }
            ledger.flush()
            #expect(try ledger.count() == 10)
            #expect(ledger.writtenRows == 10)
            #expect(try ledger.recent(limit: 100).map(\.seq).sorted() == (0..<10).map { row($0).seq })
            // Room again once written.
            ledger.append(row(30))
            ledger.flush()
            #expect(try ledger.count() == 11)
            #expect(ledger.droppedRows == 20)
        }
    }

    @Test func failedWritesAreCountedAndDoNotHangFlushOrClose() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let ledger = try Ledger(path: path, logger: quietLogger())
            ledger.start()
            ledger.append(row(0))
            ledger.flush()
            try Ledger.executeOnSeparateConnection(path: path, sql: "DROP TABLE updates")
            ledger.append(contentsOf: (1...3_000).map { row($0) })
            ledger.flush()
            #expect(ledger.failedRows == 3_000)
            #expect(ledger.writtenRows == 1)
            #expect(ledger.pendingRows == 0)
            ledger.append(row(3_001))
            ledger.close()
            #expect(ledger.failedRows == 3_001)
        }
    }

    @Test func databaseIsInWALMode() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let ledger = try Ledger(path: path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            #expect(try ledger.journalMode() == "wal")
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
        }
    }

    @Test func extremeValuesRoundTrip() throws {
        try withTempDirectory { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path, logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let huge = LedgerRow(time: Self.t0, clientID: "max", seq: .max, baseVersion: .max, staleness: .max, mixingWeight: 1,
                                 updateNorm: .greatestFiniteMagnitude, sampleCount: .max, decision: .merged, reason: .none,
                                 modelVersion: .max, detail: "")
            let edge = LedgerRow(time: Self.t0.addingTimeInterval(0.001), clientID: "edge", seq: UInt64(Int64.max) + 1,
                                 baseVersion: UInt64(Int64.max), staleness: 0, mixingWeight: 0, updateNorm: 0, sampleCount: 0,
                                 decision: .rejected, reason: .unavailable, modelVersion: 0, detail: "")
            // Out-of-range and sub-millisecond times are clamped or rounded, never trapped on.
            let farFuture = LedgerRow(time: Date(timeIntervalSince1970: 1e300), clientID: "future", seq: 1, baseVersion: 0,
                                      staleness: nil, mixingWeight: .nan, updateNorm: .nan, sampleCount: 1, decision: .rejected,
                                      reason: .malformed, modelVersion: 0, detail: "")
            let subMillisecond = LedgerRow(time: Self.t0.addingTimeInterval(0.0123456), clientID: "µs", seq: 2, baseVersion: 0,
                                           staleness: nil, mixingWeight: 0, updateNorm: nil, sampleCount: 0, decision: .rejected,
                                           reason: .malformed, modelVersion: 0, detail: "")
            #expect(subMillisecond.timeMilliseconds == 1_764_000_000_012)
            ledger.append(contentsOf: [huge, edge, farFuture, subMillisecond])
            ledger.flush()
            #expect(ledger.writtenRows == 4 && ledger.failedRows == 0)
            #expect(try ledger.recent(limit: 1, client: "max") == [huge])
            #expect(try ledger.recent(limit: 1, client: "edge") == [edge])
            #expect(try ledger.recent(limit: 1, client: "µs") == [subMillisecond])
            let future = try #require(try ledger.recent(limit: 1, client: "future").first)
            #expect(future.mixingWeight.isNaN && future.updateNorm == nil)
            let totals = try ledger.totals()
            let maxTotals = try #require(totals.first { $0.clientID == "max" })
            #expect(maxTotals.meanStaleness == Double(UInt64.max))
        }
    }

    @Test func readerRefusesMissingOrForeignFiles() throws {
        try withTempDirectory { dir in
            let missing = dir.appendingPathComponent("missing.sqlite").path
            #expect {
                _ = try LedgerReader(path: missing)
            } throws: { e in
                guard let e = e as? LedgerError else { return false }
                return e.code == .fileNotFound && e.reason.contains(missing)
            }
            #expect(!FileManager.default.fileExists(atPath: missing))

            let foreign = dir.appendingPathComponent("foreign.sqlite")
            try Data("not a database, just some text that is long enough to be a header".utf8).write(to: foreign)
            #expect {
                _ = try LedgerReader(path: foreign.path)
            } throws: { e in
                (e as? LedgerError)?.code == .notALedger
            }
            #expect(throws: LedgerError.self) { _ = try LedgerReader(path: dir.path) }
        }
    }

    @Test func flushAndCloseOnAnEmptyLedgerReturn() throws {
        try withTempDirectory { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path, logger: quietLogger())
            ledger.start()
            ledger.flush()
            ledger.close()
            ledger.flush()
            #expect(try ledger.count() == 0)
        }
    }
}
