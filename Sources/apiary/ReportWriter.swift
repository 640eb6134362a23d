import ApiaryObservability
import ApiaryProtocol
import ApiaryTesting
import Foundation

/// The report `apiary demo` leaves behind: a folder with
///
/// - `index.html`: the summaries and an inline SVG chart of test accuracy against wall-clock
///   time, one line per run (async, and sync with `--compare`), self-contained,
/// - `accuracy.svg`: the same chart as a file (the README's chart is one of these),
/// - `series.csv`: `algorithm,seconds,version,accuracy`, one row per evaluated version,
/// - `summary.json`: the summaries with their series.
enum DemoReport {
    /// `reports/demo-YYYYMMDD-HHMMSS` in the current directory (local time).
    static func defaultDirectory(now: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyyMMdd-HHmmss"
        return "reports/demo-\(f.string(from: now))"
    }

    /// Writes the report of `summaries` into `directory` (created if needed; a second run in
    /// the same second gets a `-2` suffix when `directory` is the default) and returns the
    /// path of its `index.html`.
    static func write(_ summaries: [FleetSummary], to directory: String, uniquing: Bool = false) throws -> String {
        let fm = FileManager.default
        var dir = directory
        if uniquing {
            var n = 2
            while fm.fileExists(atPath: dir) {
                dir = "\(directory)-\(n)"
                n += 1
            }
        }
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let url = URL(fileURLWithPath: dir)
        let svg = chart(summaries)
        try Data(svg.utf8).write(to: url.appendingPathComponent("accuracy.svg"), options: .atomic)
        try Data(csv(summaries).utf8).write(to: url.appendingPathComponent("series.csv"), options: .atomic)
        try json(summaries).write(to: url.appendingPathComponent("summary.json"), options: .atomic)
        try Data(html(summaries, chart: svg).utf8).write(to: url.appendingPathComponent("index.html"), options: .atomic)
        return (dir as NSString).appendingPathComponent("index.html")
    }

    /// How a run is named in the legend and tables.
    static func name(_ s: FleetSummary) -> String {
        Algorithm(rawValue: s.algorithm)?.title ?? s.algorithm
    }

    /// Test accuracy against wall-clock seconds, one line per summary, with the target dashed.
    static func chart(_ summaries: [FleetSummary]) -> String {
        let series = summaries.map { s in
            let reached = s.timeToTarget.map { String(format: ": %.2f in %.1f s", s.targetAccuracy, $0) } ?? ""
            // Start each line at t = 0 with the first accuracy measured, so the lines meet the axis.
            var points = s.series.map { ChartPoint(x: $0.0, y: $0.2) }
            if let first = points.first, first.x > 0 { points.insert(ChartPoint(x: 0, y: first.y), at: 0) }
            // The accuracy holds between versions: steps, not slopes.
            return ChartSeries(name: "\(name(s)), \(s.clients) clients\(reached)", points: points, steps: true)
        }
        let target = summaries.first?.targetAccuracy
        return LineChartSVG(title: "Test accuracy of the global model (digits, \(summaries.first?.clients ?? 0) clients)",
                            xLabel: "wall-clock seconds since every client joined", yLabel: "test accuracy",
                            yRange: 0...1,
                            references: target.map { [ChartReference(y: $0, label: String(format: "target %.2f", $0))] } ?? [])
            .render(series)
    }

    static func csv(_ summaries: [FleetSummary]) -> String {
        var out = "algorithm,seconds,version,accuracy\n"
        for s in summaries {
            for (t, v, a) in s.series { out += "\(s.algorithm),\(String(format: "%.4f", t)),\(v),\(String(format: "%.4f", a))\n" }
        }
        return out
    }

    /// A summary with its series: the keys of `apiary demo --json` (`FleetSummary.fields`),
    /// plus `series`.
    private struct Entry: Encodable {
        var summary: FleetSummary
        /// [seconds, version, accuracy]
        var series: [[Double]]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            for (key, value) in summary.fields { try c.encode(value, forKey: Key(stringValue: key)) }
            try c.encode(series, forKey: Key(stringValue: "series"))
        }
    }

    static func json(_ summaries: [FleetSummary]) throws -> Data {
        let entries = summaries.map { s in
            Entry(summary: s, series: s.series.map { [($0.0 * 1e4).rounded() / 1e4, Double($0.1), ($0.2 * 1e4).rounded() / 1e4] })
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try e.encode(entries)
    }

    static func html(_ summaries: [FleetSummary], chart svg: String, now: Date = Date()) -> String {
        func e(_ s: String) -> String { LineChartSVG.escape(s) }
        let stamp = ISO8601DateFormatter().string(from: now)
        var rows = ""
        for s in summaries {
            rows += "<tr><td>\(e(name(s)))</td><td>\(s.clients)</td>"
                + "<td>\(s.timeToTarget.map { String(format: "%.2f s", $0) } ?? "not reached")</td>"
                + "<td>\(String(format: "%.4f", s.finalAccuracy))</td><td>\(s.versions)</td><td>\(s.updatesMerged)</td>"
                + "<td>\(s.updatesRejected)</td><td>\(String(format: "%.2f", s.meanStaleness)) / \(s.maxStaleness)</td>"
                + "<td>\(String(format: "%.1f s", s.elapsed))</td></tr>\n"
        }
        var speedup = ""
        if summaries.count == 2, let a = summaries[0].timeToTarget, let b = summaries[1].timeToTarget, a > 0 {
            speedup = "<p class=\"speedup\">\(e(name(summaries[0]))) reached \(String(format: "%.2f", summaries[0].targetAccuracy)) "
                + "\(String(format: "%.1f", b / a))× as fast as \(e(name(summaries[1]))) "
                + "(\(String(format: "%.1f s vs %.1f s", a, b))).</p>\n"
        }
        return """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>Apiary demo report</title>
            <style>
              body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937; margin: 24px auto; max-width: 980px; padding: 0 16px; }
              h1 { font-size: 22px; margin-bottom: 4px; }
              .meta { color: #6b7280; margin-top: 0; }
              table { border-collapse: collapse; margin: 16px 0; font-variant-numeric: tabular-nums; }
              th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #e5e7eb; }
              th { color: #6b7280; font-weight: 500; font-size: 13px; }
              .speedup { font-weight: 600; }
              figure { margin: 16px 0; }
              svg { max-width: 100%; height: auto; border: 1px solid #e5e7eb; border-radius: 6px; }
            </style>
            </head>
            <body>
            <h1>Apiary demo report</h1>
            <p class="meta">Written \(e(stamp)) by <code>apiary demo</code>: the shared digits workload, clients with Dirichlet(0.5)
            label skew and simulated device delays, over real tcp loopback sockets. The clock starts once every client holds
            the first model; the global model's test accuracy is measured after every new version.</p>
            <table>
            <thead><tr><th>run</th><th>clients</th><th>time to target</th><th>final accuracy</th><th>versions</th><th>merged</th><th>rejected</th><th>staleness mean / max</th><th>elapsed</th></tr></thead>
            <tbody>
            \(rows)</tbody>
            </table>
            \(speedup)<figure>
            \(svg)</figure>
            <p>Files: <a href="accuracy.svg">accuracy.svg</a> (the chart), <a href="series.csv">series.csv</a>
            (<code>algorithm,seconds,version,accuracy</code>), <a href="summary.json">summary.json</a> (the summaries with their series).</p>
            </body>
            </html>

            """
    }
}
