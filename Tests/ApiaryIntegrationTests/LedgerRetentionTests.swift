import ApiaryAggregator
import ApiaryCore
import Foundation
import Testing
import ApiaryTesting

/// Ledger retention (issue 15, item 5): bounded rows and age, totals that still count every row.
@Suite struct LedgerRetentionTests {
    private func withTempDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-retention-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    private static let t0 = Date(timeIntervalSince1970: 1_764_000_000)

    private func rows(_ n: Int, start: Int = 0, time: (Int) -> Date = { t0.addingTimeInterval(Double($0)) }) -> [LedgerRow] {
        (start..<(start + n)).map { i in
            let kind = i % 5
            let decision: Decision = kind < 3 ? .merged : (kind == 3 ? .rejected : .duplicate)
            let reason: RejectReason = kind < 3 ? .none : (kind == 3 ? .tooStale : .duplicate)
            return LedgerRow(time: time(i), clientID: "client-\(i % 3)", seq: UInt64(i), baseVersion: UInt64(i), staleness: UInt64(i % 7),
                             mixingWeight: decision == .merged ? 0.5 : 0, updateNorm: 1, sampleCount: 10, decision: decision,
                             reason: reason, modelVersion: UInt64(i + 1))
        }
    }

    @Test("a row bound keeps the newest rows; per-client totals still count the pruned ones")
    func rowBound() throws {
        try withTempDirectory { dir in
            let path = dir.appendingPathComponent("l.sqlite").path
            let unbounded = try Ledger(path: dir.appendingPathComponent("all.sqlite").path, retention: .unlimited, logger: quietLogger())
            unbounded.start()
            let ledger = try Ledger(path: path, retention: LedgerRetention(maxRows: 100, maxAge: nil), logger: quietLogger())
            ledger.start()
            defer { ledger.close(); unbounded.close() }
            for batch in 0..<7 {
                let r = rows(50, start: batch * 50)
                ledger.append(contentsOf: r)
                unbounded.append(contentsOf: r)
                ledger.flush()
                try ledger.applyRetention()
            }
            unbounded.flush()
            #expect(try ledger.count() == 100)
            #expect(try ledger.recent(limit: 1000).map(\.seq).min() == 250)
            #expect(try ledger.totals() == unbounded.totals())
            #expect(try LedgerReader(path: path).totals() == unbounded.totals())
        }
    }

    @Test("an age bound deletes rows older than it, and the writer applies retention by itself")
    func ageBound() async throws {
        try await withTempDirectoryAsync { dir in
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path,
                                    retention: LedgerRetention(maxRows: nil, maxAge: .seconds(3600)), logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let now = Date()
            ledger.append(contentsOf: rows(30, time: { _ in now.addingTimeInterval(-7200) }))
            ledger.append(contentsOf: rows(20, start: 30, time: { _ in now }))
            ledger.flush()
            // The writer thread's first pass comes right after its first batch.
            try await eventually("retention to delete the old rows", within: 20) { try ledger.count() == 20 }
            #expect(ledger.prunedRows == 30)
            #expect(try ledger.totals().map(\.received).reduce(0, +) == 50)
        }
    }

    private func withTempDirectoryAsync(_ body: (URL) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-retention-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try await body(dir)
    }

    @Test("catch-up adds only missing merged rows, and never re-adds rows retention deleted")
    func catchUpRespectsRetention() throws {
        try withTempDirectory { dir in
            // The writer's own retention passes after its first would race the catch-up checked
            // here (a pass 5 s later deleted the caught-up rows on a loaded machine): hourly.
            let ledger = try Ledger(path: dir.appendingPathComponent("l.sqlite").path,
                                    retention: LedgerRetention(maxRows: 10, maxAge: nil, interval: .seconds(3600)), logger: quietLogger())
            ledger.start()
            defer { ledger.close() }
            let written = rows(40)
            ledger.append(contentsOf: written)
            ledger.flush()
            try ledger.applyRetention()
            #expect(try ledger.count() == 10)
            func outcome(_ r: LedgerRow) -> UpdateOutcome {
                UpdateOutcome(decision: r.decision, reason: r.reason, baseVersion: r.baseVersion, modelVersion: r.modelVersion,
                              staleness: r.staleness, mixingWeight: r.mixingWeight)
            }
            // The dedup table holds every merged outcome, old and new, and two the file lacks.
            var merged = written.filter { $0.decision == .merged }.map { (clientID: $0.clientID, seq: $0.seq, outcome: outcome($0)) }
            let lost = rows(10, start: 40).filter { $0.decision == .merged }
            merged += lost.map { (clientID: $0.clientID, seq: $0.seq, outcome: outcome($0)) }
            #expect(try ledger.catchUp(merged: merged, time: Date()) == lost.count)
            #expect(try ledger.catchUp(merged: merged, time: Date()) == 0)
            #expect(try ledger.count() == 10 + lost.count)
        }
    }
}

/// The disk a ledger needs per million updates (docs/OPERATIONS.md), measured on demand:
/// `APIARY_MEASURE_LEDGER=1 swift test --skip-build --filter LedgerSizeMeasurement`.
@Suite struct LedgerSizeMeasurement {
    @Test("bytes per row of a ledger of one million merged updates, and the size under the default retention",
          .enabled(if: ProcessInfo.processInfo.environment["APIARY_MEASURE_LEDGER"] != nil))
    func measure() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-ledger-size-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("l.sqlite").path
        func size() -> Int {
            ["", "-wal", "-shm"].reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: path + $1)[.size] as? Int) ?? 0) ?? 0 }
        }
        let n = 1_000_000, clients = 500
        let t0 = Date()
        // Twice the default bound: the file stops growing at the bound.
        let ledger = try Ledger(path: path, logger: quietLogger())
        ledger.start()
        var version: UInt64 = 0
        for start in stride(from: 0, to: 2 * n, by: 10_000) {
            ledger.append(contentsOf: (start..<(start + 10_000)).map { i in
                version += 1
                return LedgerRow(time: t0.addingTimeInterval(Double(i) / 1000), clientID: "device-\(String(format: "%05d", i % clients))",
                                 seq: 1_764_000_000_000_000 + UInt64(i), baseVersion: version &- 3, staleness: 3, mixingWeight: 0.3,
                                 updateNorm: 1.2345, sampleCount: 64, decision: .merged, reason: .none, modelVersion: version)
            })
            ledger.flush()
            if start + 10_000 == n { print("ledger size after \(n) rows: \(size()) bytes (\(size() / n) bytes per row)") }
        }
        try ledger.applyRetention()
        ledger.close()
        print("ledger size after \(2 * n) rows with the default retention (\(LedgerRetention.default.maxRows!) rows kept): \(size()) bytes, \(try ledger.count()) rows, \(Date().timeIntervalSince(t0)) s")
    }
}
