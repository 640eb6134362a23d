import ApiaryObservability
import Foundation
import Testing
import ApiaryTesting

@Suite("Deploy files and operator docs agree with the metrics catalog")
struct DeployFilesTests {
    func read(_ path: String) throws -> String {
        try String(contentsOf: repositoryRoot.appendingPathComponent(path), encoding: .utf8)
    }

    @Test("the Grafana dashboard is valid JSON with a panel for every metric the catalog lists")
    func grafana() throws {
        let text = try read("Deploy/grafana-dashboard.json")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let panels = try #require(json["panels"] as? [[String: Any]])
        #expect(panels.count >= 8)
        var expressions: [String] = []
        for p in panels {
            #expect(p["title"] is String && p["type"] is String && p["gridPos"] is [String: Any])
            for t in (p["targets"] as? [[String: Any]]) ?? [] {
                if let e = t["expr"] as? String { expressions.append(e) }
            }
        }
        let all = expressions.joined(separator: "\n")
        for d in MetricCatalog.all where d.name != MetricCatalog.uptime && d.name != MetricCatalog.evaluations {
            #expect(all.contains(d.name), "a panel queries \(d.name)")
        }
        #expect(json["title"] as? String == "Apiary aggregator")
        #expect(json["uid"] as? String != nil)
    }

    @Test("the Prometheus scrape config scrapes /metrics on the default status port")
    func prometheus() throws {
        let text = try read("Deploy/prometheus.yml")
        #expect(text.contains("scrape_configs:"))
        #expect(text.contains("metrics_path: /metrics"))
        #expect(text.contains(":9464"))
    }

    @Test("docs/OBSERVABILITY.md explains every metric and endpoint")
    func docs() throws {
        let text = try read("docs/OBSERVABILITY.md")
        for d in MetricCatalog.all { #expect(text.contains("`\(d.name)`"), "\(d.name) is documented") }
        for endpoint in ["GET /status", "GET /history", "GET /metrics", "GET /"] { #expect(text.contains(endpoint)) }
    }
}
