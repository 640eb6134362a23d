import Foundation
import Testing
import ApiaryTesting

/// `apiary bench --quick --json` runs every benchmark for a moment and prints one JSON object
/// as its last line. No timing is asserted: only that every benchmark reports a figure next
/// to its bound and their ratio.
@Suite("apiary bench --quick", .serialized)
struct BenchSmokeTests {
    /// Runs `apiary ARGS` to the end (at most `timeout` seconds) and returns its JSON line;
    /// nil (with an issue recorded) when it did not finish.
    func benchJSON(_ arguments: [String], timeout: Double = 150) async throws -> [String: Any]? {
        let p = try Child(arguments, environment: ["SWIFT_BACKTRACE": "enable=no"], name: "bench", separateErrors: true)
        guard let status = await p.exit(within: timeout) else {
            await p.terminate(grace: 1)
            Issue.record("apiary \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s; stderr:\n\(p.errorLog)")
            return nil
        }
        #expect(status == 0, "stderr:\n\(p.errorLog)")
        let last = try #require(p.log.split(separator: "\n").last, "no output; stderr:\n\(p.errorLog)")
        return try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "last line is not a JSON object: \(last)")
    }

    @Test("every benchmark reports a figure, a bound and a ratio in the JSON line")
    func quickJSON() async throws {
        guard let object = try await benchJSON(["bench", "--quick", "--json"]) else { return }

        let machine = try #require(object["machine"] as? [String: Any])
        #expect((machine["cores"] as? Int ?? 0) >= 1)
        #expect(!((machine["cpu_model"] as? String) ?? "").isEmpty)

        let benchmarks = try #require(object["benchmarks"] as? [[String: Any]])
        let groups = Set(benchmarks.compactMap { $0["group"] as? String })
        #expect(groups == ["merge", "ingest", "shards", "broadcast", "fleet", "footprint", "time-to-accuracy", "algorithms"])
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
            // Algorithm rows compare times to a target, which a quick run may not reach.
            if (b["name"] as? String ?? "").hasPrefix("algorithms/"), !(b["name"] as? String ?? "").contains("codec") { continue }
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
    func quickShards() async throws {
        guard let object = try await benchJSON(["bench", "--quick", "--only", "shards", "--json"], timeout: 90) else { return }
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
