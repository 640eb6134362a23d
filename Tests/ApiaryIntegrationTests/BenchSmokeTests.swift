import Foundation
import Testing

/// `apiary bench --quick --json` runs every benchmark for a moment and prints one JSON object
/// as its last line. No timing is asserted: only that every benchmark reports a figure next
/// to its bound and their ratio.
@Suite("apiary bench --quick", .serialized)
struct BenchSmokeTests {
    /// Runs `apiary ARGS` to the end (at most `timeout` seconds) and returns its JSON line;
    /// nil (with an issue recorded) when it did not finish.
    func benchJSON(_ arguments: [String], timeout: Double = 150) throws -> [String: Any]? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try apiaryBinary())
        p.arguments = arguments
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
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if p.isRunning {
            p.terminate()
            Thread.sleep(forTimeInterval: 1)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            Issue.record("apiary \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s; stderr:\n\(errText.value)")
            return nil
        }
        err.fileHandleForReading.readabilityHandler = nil
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "stderr:\n\(errText.value)")
        let last = try #require(stdout.split(separator: "\n").last, "no output; stderr:\n\(errText.value)")
        return try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "last line is not a JSON object: \(last)")
    }

    @Test("every benchmark reports a figure, a bound and a ratio in the JSON line")
    func quickJSON() throws {
        guard let object = try benchJSON(["bench", "--quick", "--json"]) else { return }

        let machine = try #require(object["machine"] as? [String: Any])
        #expect((machine["cores"] as? Int ?? 0) >= 1)
        #expect(!((machine["cpu_model"] as? String) ?? "").isEmpty)

        let benchmarks = try #require(object["benchmarks"] as? [[String: Any]])
        let groups = Set(benchmarks.compactMap { $0["group"] as? String })
        #expect(groups == ["merge", "ingest", "shards", "broadcast", "fleet", "footprint", "time-to-accuracy"])
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

    @Test("shards: one aggregator process and two shard processes each report complete updates/s and their slices")
    func quickShards() throws {
        guard let object = try benchJSON(["bench", "--quick", "--only", "shards", "--json"], timeout: 90) else { return }
        let benchmarks = try #require(object["benchmarks"] as? [[String: Any]])
        #expect(benchmarks.map { $0["name"] as? String ?? "?" } == ["shards/100k-S1", "shards/100k-S2"], "\(benchmarks)")
        for b in benchmarks {
            let name = b["name"] as? String ?? "?"
            #expect(b["group"] as? String == "shards")
            #expect(b["status"] as? String == "measured", "\(name): \(b["note"] ?? "")")
            let figure = b["figure"] as? Double ?? 0, bound = b["bound"] as? Double ?? 0, ratio = b["ratio"] as? Double ?? -1
            #expect(figure > 0 && bound > 0 && ratio.isFinite && ratio > 0, "\(name): \(b)")
            let params = try #require(b["params"] as? [String: Any])
            // Both bounds of the same run: raw libzmq for every entry, one aggregator for S >= 2.
            #expect((params["raw_messages_per_s"] as? Double ?? 0) > 0, "\(name)")
            #expect(params["rejected"] as? Int == 0, "\(name): \(params)")
            let shards = params["shards"] as? Int ?? 0
            let slices = (params["slice_mib"] as? String ?? "").split(separator: "/")
            #expect(slices.count == shards, "\(name): \(params)")
            if shards > 1 {
                #expect(params["speedup_over_one"] is Double, "\(name)")
                #expect((params["largest_slice_mib"] as? Double ?? .infinity) < (params["model_mib"] as? Double ?? 0), "\(name): \(params)")
            }
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
