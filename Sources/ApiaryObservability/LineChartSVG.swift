import Foundation

/// One point of a chart series.
public struct ChartPoint: Sendable, Hashable {
    public var x: Double
    public var y: Double

    /// A point at (`x`, `y`).
    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }
}

/// One line of a `LineChartSVG`.
public struct ChartSeries: Sendable, Hashable {
    /// The legend entry.
    public var name: String
    /// Points in order of `x`.
    public var points: [ChartPoint]
    /// An SVG colour; nil takes the next colour of the palette.
    public var color: String?
    /// Draw steps (each value holds until the next point), for quantities that change only at
    /// the points, such as the accuracy of a model between versions; otherwise straight lines.
    public var steps: Bool

    /// A series called `name`.
    public init(name: String, points: [ChartPoint], color: String? = nil, steps: Bool = false) {
        self.name = name
        self.points = points
        self.color = color
        self.steps = steps
    }
}

/// A horizontal reference line (a target accuracy, say).
public struct ChartReference: Sendable, Hashable {
    public var y: Double
    public var label: String

    /// A dashed line at `y`, labelled `label`.
    public init(y: Double, label: String) {
        self.y = y
        self.label = label
    }
}

/// Draws line charts as standalone SVG (also valid inline in HTML): axes with round ticks,
/// a grid, one polyline per series, a legend, and reference lines. No scripts, no external
/// fonts or styles, so the file renders the same in a browser, on GitHub and in an image viewer.
public struct LineChartSVG: Sendable {
    /// Title above the plot.
    public var title: String
    /// Axis labels.
    public var xLabel: String
    public var yLabel: String
    /// Fixed y range; nil fits the data (from 0 when all values are positive).
    public var yRange: ClosedRange<Double>?
    /// Size in SVG units (pixels).
    public var width: Int
    public var height: Int
    /// Dashed horizontal lines.
    public var references: [ChartReference]
    /// A series with more points is thinned to about this many (its last point is kept).
    public var maxPointsPerSeries: Int

    /// The palette series take colours from, in order.
    public static let palette = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#dc2626", "#0891b2"]

    /// A chart with the given labels.
    public init(title: String, xLabel: String, yLabel: String, yRange: ClosedRange<Double>? = nil,
                width: Int = 800, height: Int = 450, references: [ChartReference] = [], maxPointsPerSeries: Int = 1500) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.yRange = yRange
        self.width = width
        self.height = height
        self.references = references
        self.maxPointsPerSeries = max(2, maxPointsPerSeries)
    }

    /// The SVG document for `series`.
    public func render(_ series: [ChartSeries]) -> String {
        let left = 64.0, right = 20.0, top = 56.0 + 18.0 * Double(max(0, series.count - 1)), bottom = 52.0
        let w = Double(width), h = Double(height)
        let all = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        var x0 = all.map(\.x).min() ?? 0, x1 = all.map(\.x).max() ?? 1
        x0 = min(x0, 0)
        if !(x1 > x0) { x1 = x0 + 1 }
        var y0: Double, y1: Double
        if let r = yRange {
            (y0, y1) = (r.lowerBound, r.upperBound)
        } else {
            y0 = min(0, all.map(\.y).min() ?? 0)
            y1 = max(references.map(\.y).max() ?? y0, all.map(\.y).max() ?? 1)
        }
        if !(y1 > y0) { y1 = y0 + 1 }
        let xTicks = Self.ticks(x0, x1, count: 8), yTicks = Self.ticks(y0, y1, count: 5)
        x1 = max(x1, xTicks.last ?? x1)
        if yRange == nil { y1 = max(y1, yTicks.last ?? y1) }
        func sx(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (w - left - right) }
        func sy(_ y: Double) -> Double { h - bottom - (min(max(y, y0), y1) - y0) / (y1 - y0) * (h - top - bottom) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" \
            font-family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif" font-size="12" role="img" aria-label="\(Self.escape(title))">

            """
        out += "<rect width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>\n"
        out += "<text x=\"\(f(left))\" y=\"22\" font-size=\"16\" font-weight=\"600\" fill=\"#111827\">\(Self.escape(title))</text>\n"
        for t in yTicks where t >= y0 && t <= y1 {
            out += "<line x1=\"\(f(left))\" x2=\"\(f(w - right))\" y1=\"\(f(sy(t)))\" y2=\"\(f(sy(t)))\" stroke=\"#e5e7eb\"/>\n"
            out += "<text x=\"\(f(left - 8))\" y=\"\(f(sy(t) + 4))\" text-anchor=\"end\" fill=\"#6b7280\">\(Self.label(t))</text>\n"
        }
        for t in xTicks where t >= x0 && t <= x1 {
            out += "<line x1=\"\(f(sx(t)))\" x2=\"\(f(sx(t)))\" y1=\"\(f(h - bottom))\" y2=\"\(f(h - bottom + 5))\" stroke=\"#9ca3af\"/>\n"
            out += "<text x=\"\(f(sx(t)))\" y=\"\(f(h - bottom + 19))\" text-anchor=\"middle\" fill=\"#6b7280\">\(Self.label(t))</text>\n"
        }
        out += "<line x1=\"\(f(left))\" x2=\"\(f(w - right))\" y1=\"\(f(h - bottom))\" y2=\"\(f(h - bottom))\" stroke=\"#9ca3af\"/>\n"
        out += "<line x1=\"\(f(left))\" x2=\"\(f(left))\" y1=\"\(f(top))\" y2=\"\(f(h - bottom))\" stroke=\"#9ca3af\"/>\n"
        out += "<text x=\"\(f((left + w - right) / 2))\" y=\"\(f(h - 12))\" text-anchor=\"middle\" fill=\"#374151\">\(Self.escape(xLabel))</text>\n"
        out += "<text transform=\"translate(16 \(f((top + h - bottom) / 2))) rotate(-90)\" text-anchor=\"middle\" fill=\"#374151\">\(Self.escape(yLabel))</text>\n"
        for r in references where r.y >= y0 && r.y <= y1 {
            out += "<line x1=\"\(f(left))\" x2=\"\(f(w - right))\" y1=\"\(f(sy(r.y)))\" y2=\"\(f(sy(r.y)))\" stroke=\"#6b7280\" stroke-dasharray=\"6 4\"/>\n"
            out += "<text x=\"\(f(w - right - 4))\" y=\"\(f(sy(r.y) - 5))\" text-anchor=\"end\" fill=\"#6b7280\">\(Self.escape(r.label))</text>\n"
        }
        for (i, s) in series.enumerated() {
            let color = s.color ?? Self.palette[i % Self.palette.count]
            let points = thinned(s.points.filter { $0.x.isFinite && $0.y.isFinite })
            if !points.isEmpty {
                var vertices: [ChartPoint] = []
                for p in points {
                    if s.steps, let last = vertices.last { vertices.append(ChartPoint(x: p.x, y: last.y)) }
                    vertices.append(p)
                }
                let coords = vertices.map { "\(f(sx($0.x))),\(f(sy($0.y)))" }.joined(separator: " ")
                out += "<polyline class=\"series\" data-name=\"\(Self.escape(s.name))\" data-points=\"\(points.count)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"\(coords)\"/>\n"
            }
            let ly = 40.0 + 18.0 * Double(i)
            out += "<rect x=\"\(f(left))\" y=\"\(f(ly - 5))\" width=\"16\" height=\"3\" fill=\"\(color)\"/>\n"
            out += "<text x=\"\(f(left + 22))\" y=\"\(f(ly))\" fill=\"#111827\">\(Self.escape(s.name))</text>\n"
        }
        out += "</svg>\n"
        return out
    }

    /// At most `maxPointsPerSeries` points, evenly spaced by index, always with the last.
    private func thinned(_ p: [ChartPoint]) -> [ChartPoint] {
        guard p.count > maxPointsPerSeries else { return p }
        let stride = Double(p.count - 1) / Double(maxPointsPerSeries - 1)
        return (0..<maxPointsPerSeries).map { p[min(p.count - 1, Int((Double($0) * stride).rounded()))] }
    }

    /// Round tick values covering [lo, hi] with about `count` intervals.
    static func ticks(_ lo: Double, _ hi: Double, count: Int) -> [Double] {
        guard hi > lo, count > 0 else { return [lo] }
        let raw = (hi - lo) / Double(count)
        let mag = pow(10, (log10(raw)).rounded(.down))
        let step = [1, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw * (1 - 1e-9) } ?? raw
        var out: [Double] = []
        var v = (lo / step).rounded(.up) * step
        while v <= hi + step * (1 - 1e-9) && out.count < 100 {
            out.append(abs(v) < step * 1e-9 ? 0 : v)
            v += step
        }
        return out
    }

    private static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e9 { return String(Int64(v)) }
        var s = String(format: "%.3f", v)
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }

    /// Escapes text for SVG/XML content and attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
