import Foundation
import Testing

/// `apiary bench --quick --json` runs every benchmark for a moment and prints one JSON object
/// as its last line. No timing is asserted: only that every benchmark reports a figure next
/// to its bound and their ratio.
@Suite("apiary bench --quick", .serialized)
struct BenchSmokeTests {
    @Test("every benchmark reports a figure, a bound and a ratio in the JSON line")
    func quickJSON() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try apiaryBinary())
        p.arguments = ["bench", "--quick", "--json"]
        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        // Drain stderr as it comes, so a chatty child never blocks on a full pipe.
        let errText = LockedText()
        err.fileHandleForReading.readabilityHandler = { h in errText.append(h.availableData) }
        try p.run()
        let deadline = Date().addingTimeInterval(150)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if p.isRunning {
            p.terminate()
            Thread.sleep(forTimeInterval: 1)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            Issue.record("apiary bench --quick did not finish within 150 s; stderr:\n\(errText.value)")
            return
        }
        err.fileHandleForReading.readabilityHandler = nil
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "stderr:\n\(errText.value)")
        let last = try #require(stdout.split(separator: "\n").last, "no output; stderr:\n\(errText.value)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "last line is not a JSON object: \(last)")

        let machine = try #require(object["machine"] as? [String: Any])
        #expect((machine["cores"] as? Int ?? 0) >= 1)
        #expect(!((machine["cpu_model"] as? String) ?? "").isEmpty)

        let benchmarks = try #require(object["benchmarks"] as? [[String: Any]])
        let groups = Set(benchmarks.compactMap { $0["group"] as? String })
        #expect(groups == ["merge", "ingest", "broadcast", "fleet", "footprint", "time-to-accuracy"])
        func numbers(_ b: [String: Any]) -> Bool {
            guard let f = b["figure"] as? Double, let bd = b["bound"] as? Double, let r = b["ratio"] as? Double else { return false }
            return f.isFinite && f >= 0 && bd.isFinite && bd > 0 && r.isFinite && r >= 0
        }
        for b in benchmarks {
            let name = b["name"] as? String ?? "?"
            for key in ["status", "figure", "unit", "bound", "bound_unit", "ratio", "goal", "met", "params"] {
                #expect(b.keys.contains(key), "\(name) has no \(key)")
            }
            if b["status"] as? String == "not_measured" {
                // A stub must not fake numbers.
                #expect(b["figure"] is NSNull && b["ratio"] is NSNull, "\(name) is a stub but has numbers")
                continue
            }
            // Time to accuracy depends on learning within a short quick run: whether a target
            // was reached is not this test's business (see the group check below).
            if b["group"] as? String == "time-to-accuracy" { continue }
            #expect(b["status"] as? String == "measured", "\(name): \(b["note"] ?? "")")
            #expect(numbers(b), "\(name) lacks a figure, a bound or a ratio: \(b)")
        }
        // Every group shows at least one figure with its bound and ratio, unless it is a stub.
        for g in groups {
            let entries = benchmarks.filter { $0["group"] as? String == g }
            if entries.allSatisfy({ $0["status"] as? String == "not_measured" }) { continue }
            #expect(entries.contains(where: numbers), "no entry of \(g) has a figure, a bound and a ratio")
        }
    }
}

/// Text collected from another thread.
final class LockedText: @unchecked Sendable {
    // @unchecked Sendable: every access holds `lock`.
    private let lock = NSLock()
    private var data = Data()

    func append(_ d: Data) { lock.withLock { data.append(d) } }
    var value: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}
