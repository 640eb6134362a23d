import ApiaryCore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import ApiaryTesting

/// GET http://127.0.0.1:PORT/PATH; nil when nothing answers.
private func get(_ port: Int, _ path: String) async -> (status: Int, type: String, body: Data)? {
    let session = URLSession(configuration: .ephemeral)
    defer { session.finishTasksAndInvalidate() }
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.timeoutInterval = 5
    guard let (data, response) = try? await session.data(for: request), let http = response as? HTTPURLResponse else { return nil }
    return (http.statusCode, http.value(forHTTPHeaderField: "Content-Type") ?? "", data)
}

private func object(_ data: Data) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
}

@Suite("Observability of the apiary executable: status server and demo report", .serialized)
struct DashboardTests {
    @Test("apiary aggregator with http.port serves /status, /history, /metrics and the dashboard, and stops them on SIGTERM")
    func aggregatorStatusServer() async throws {
        let ports = try freePorts(4)
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-dash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let zmq = ["ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
                   "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "SECURITY_INSECURE": "true", "LOG_LEVEL": "info"]
        var aggEnv = zmq
        aggEnv.merge(["HTTP_PORT": "\(ports[3])", "CHECKPOINT_DIRECTORY": state, "PROGRESS_INTERVAL_S": "1",
                      "EVALUATION_EVERY_VERSIONS": "10", "EVALUATION_INTERVAL_S": "0.5"]) { $1 }
        let agg = try Child(["aggregator"], environment: aggEnv, name: "dash-aggregator")
        let clients = try (0..<2).map { k in
            try Child(["client", "--id", "web-\(k)", "--partition", "\(k * 7)", "--delay", "0.05"], environment: zmq, name: "web-\(k)")
        }
        let http = ports[3]

        // The fleet trains and the evaluator has measured the model.
        var status: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let s = await get(http, "/status"), let o = object(s.body) { status = o }
            let version = status["version"] as? Int ?? 0
            let evaluation = status["evaluation"] as? [String: Any]
            let clientCount = (status["clients"] as? [String: Any])?["active"] as? Int ?? 0
            if version >= 30, evaluation?["latest"] != nil, clientCount == 2 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect((status["version"] as? Int ?? 0) >= 30, "aggregator log:\n\(agg.log)")
        let evaluation = try #require(status["evaluation"] as? [String: Any])
        #expect(evaluation["enabled"] as? Bool == true)
        let latest = try #require(evaluation["latest"] as? [String: Any])
        #expect((latest["accuracy"] as? Double ?? 0) > 0.2, "the bundled digits test set evaluates the real model")
        let clientList = try #require((status["clients"] as? [String: Any])?["list"] as? [[String: Any]])
        #expect(Set(clientList.compactMap { $0["id"] as? String }) == ["web-0", "web-1"])
        let config = try #require(status["config"] as? [String: Any])
        #expect(config["checkpoint_directory"] as? String == state)
        #expect((config["endpoints"] as? [String: Any])?["update"] as? String == "tcp://127.0.0.1:\(ports[2])")

        let metrics = try #require(await get(http, "/metrics"))
        #expect(metrics.status == 200 && metrics.type.hasPrefix("text/plain; version=0.0.4"))
        let text = String(decoding: metrics.body, as: UTF8.self)
        for name in ["apiary_updates_received_total", "apiary_updates_merged_total", "apiary_updates_rejected_total{reason=\"too_stale\"}",
                     "apiary_update_staleness_bucket", "apiary_merge_duration_seconds_count", "apiary_model_version",
                     "apiary_connected_clients 2", "apiary_bytes_received_total", "apiary_checkpoint_age_seconds", "apiary_eval_accuracy"] {
            #expect(text.contains(name), "/metrics has \(name)")
        }
        let historyAnswer = try #require(await get(http, "/history"))
        let history = try #require(object(historyAnswer.body))
        #expect(((history["evaluations"] as? [Any])?.count ?? 0) >= 1)
        let page = try #require(await get(http, "/"))
        #expect(page.status == 200 && String(decoding: page.body, as: UTF8.self).contains("id=\"accuracy-chart\""),
                "the dashboard ships in the resource bundle next to the executable")

        for c in clients { #expect(await c.terminate() == 0) }
        #expect(await agg.terminate() == 0, "graceful shutdown on SIGTERM:\n\(agg.log)")
        #expect(agg.log.contains("status server listening") && agg.log.contains("aggregator stopped"))
        #expect(agg.log.contains("accuracy="), "progress lines carry the evaluator's accuracy")
        #expect(await get(http, "/status") == nil, "the status server is gone")
    }

    /// Runs `apiary ARGS` in `directory`; returns (status, stdout, stderr).
    func apiary(_ args: [String], in directory: String) async throws -> (Int32, String, String) {
        let r = try await Child.run(args, directory: URL(fileURLWithPath: directory), separateErrors: true, timeout: 300)
        return (r.status, r.output, r.errors)
    }

    @Test("apiary demo writes its report (HTML with an SVG chart, CSV, JSON) and names it last; with --json the JSON stays last")
    func demoReport() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-report-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let quick = ["demo", "--clients", "4", "--target", "0.5", "--time-limit", "30", "--delay-scale", "0.2", "--insecure"]

        // Text mode, default folder: reports/demo-<timestamp>/ in the current directory.
        let (status, out, err) = try await apiary(quick, in: dir)
        #expect(status == 0, "\(out)\n\(err)")
        let last = try #require(out.split(separator: "\n").last.map(String.init))
        #expect(last.hasPrefix("report: reports/demo-") && last.hasSuffix("/index.html"), "last line: \(last)")
        let index = URL(fileURLWithPath: dir).appendingPathComponent(String(last.dropFirst("report: ".count)))
        let html = try String(contentsOf: index, encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("<polyline") && html.contains("FedAsync"))
        #expect(!html.contains("<script") && !html.contains("https://"), "self-contained")
        let folder = index.deletingLastPathComponent()
        let csv = try String(contentsOf: folder.appendingPathComponent("series.csv"), encoding: .utf8).split(separator: "\n")
        #expect(csv.first == "algorithm,seconds,version,accuracy")
        #expect(csv.count >= 3 && csv.dropFirst().allSatisfy { $0.hasPrefix("fedasync,") && $0.split(separator: ",").count == 4 })
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("summary.json"))) as? [[String: Any]])
        #expect(summary.count == 1 && summary[0]["algorithm"] as? String == "fedasync")
        #expect((summary[0]["series"] as? [[Double]])?.count == csv.count - 1)
        let svg = try String(contentsOf: folder.appendingPathComponent("accuracy.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))

        // --json: the JSON summary is the last line of stdout; the report path goes to stderr.
        let chosen = URL(fileURLWithPath: dir).appendingPathComponent("mine").path
        let (status2, out2, err2) = try await apiary(quick + ["--json", "--report-dir", chosen], in: dir)
        #expect(status2 == 0, "\(out2)\n\(err2)")
        let lastOut = try #require(out2.split(separator: "\n").last.map(String.init))
        #expect(lastOut.hasPrefix("{\"algorithm\":\"fedasync\""))
        #expect(err2.split(separator: "\n").last.map(String.init) == "report: \(chosen)/index.html")
        #expect(FileManager.default.fileExists(atPath: "\(chosen)/index.html"))
    }

    @Test("apiary demo --dp runs fedbuff with central DP and states the epsilon spent; it refuses shapes it cannot run")
    func demoPrivate() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-demo-dp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["demo", "--dp", "--clients", "4", "--target", "0.3", "--time-limit", "20", "--delay-scale", "0.2", "--insecure", "--json", "--no-report"]
        let (status, out, err) = try await apiary(args, in: dir)
        #expect(status == 0, "\(out)\n\(err)")
        let last = try #require(out.split(separator: "\n").last.map(String.init))
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(summary["algorithm"] as? String == "fedbuff" && summary["delta"] as? Double == 1e-5)
        let versions = try #require(summary["versions"] as? Int)
        let epsilon = try #require(summary["epsilon"] as? Double)
        // Every version is one noised step of z = 1 without amplification.
        let expected = RDPAccountant.epsilon(noiseMultiplier: 1, samplingRate: 1, steps: UInt64(versions), delta: 1e-5)
        #expect(versions > 0 && abs(epsilon - expected) < 1e-3, "\(last)")
        #expect(err.contains("central DP clip=1.0 noise_multiplier=1.0") && err.contains("central DP: epsilon"), "\(err)")
        let (bad, _, badErr) = try await apiary(["demo", "--dp", "--shards", "2", "--no-report"], in: dir)
        #expect(bad != 0 && badErr.contains("--dp runs fedbuff on one aggregator"), "\(badErr)")
    }

    @Test("apiary demo --shards 2 --gateways 2: clients behind gateways in front of shards, CURVE on every hop, reach the target")
    func demoScaledOut() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-demo-scale-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["demo", "--clients", "6", "--shards", "2", "--gateways", "2", "--target", "0.6", "--time-limit", "60",
                    "--delay-scale", "0.2", "--json", "--no-report"]
        let (status, out, err) = try await apiary(args, in: dir)
        #expect(status == 0, "\(out)\n\(err)")
        let last = try #require(out.split(separator: "\n").last.map(String.init))
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(summary["shards"] as? Int == 2 && summary["gateways"] as? Int == 2)
        #expect((summary["final_accuracy"] as? Double ?? 0) >= 0.6, "\(last)\n\(err)")
        #expect(summary["time_to_target_s"] as? Double != nil)
        #expect(err.contains("2 parameter shards, 2 gateways") && err.contains("CURVE with generated keys"))
        // Bad shapes are refused before anything starts.
        let (bad, _, badErr) = try await apiary(["demo", "--gateways", "2", "--mode", "sync", "--no-report"], in: dir)
        #expect(bad != 0 && badErr.contains("gateways run FedAsync"))
    }
}
