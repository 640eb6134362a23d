import Foundation
import Testing

/// `apiary bench --quick --json` runs every benchmark for a moment and prints one JSON object
/// as its last line. No timing is asserted: only that every benchmark reports a figure next
/// to its bound and their ratio (the time-to-accuracy stub excepted, which says so).
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
        for b in benchmarks {
            let name = b["name"] as? String ?? "?"
            for key in ["figure", "unit", "bound", "bound_unit", "ratio", "goal", "met", "params"] {
                #expect(b.keys.contains(key), "\(name) has no \(key)")
            }
            if b["status"] as? String == "not_measured" {
                // Only the stub waits for the synchronous baseline; it must not fake numbers.
                #expect(b["group"] as? String == "time-to-accuracy", "\(name) is not measured")
                #expect(b["figure"] is NSNull && b["ratio"] is NSNull, "\(name) is a stub but has numbers")
                continue
            }
            #expect(b["status"] as? String == "measured", "\(name): \(b["note"] ?? "")")
            let figure = b["figure"] as? Double
            let bound = b["bound"] as? Double
            let ratio = b["ratio"] as? Double
            #expect(figure.map { $0.isFinite && $0 >= 0 } == true, "\(name) figure")
            #expect(bound.map { $0.isFinite && $0 > 0 } == true, "\(name) bound")
            #expect(ratio.map { $0.isFinite && $0 >= 0 } == true, "\(name) ratio")
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
