import ApiaryObservability
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import ApiaryTesting

@Suite("SVG line charts (the demo report's accuracy chart)")
struct ReportChartTests {
    /// Parses `svg` as XML and collects the elements by name.
    final class Elements: NSObject, XMLParserDelegate {
        var names: [String] = []
        var attributes: [[String: String]] = []
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            names.append(name)
            self.attributes.append(attributes)
        }
    }

    func parse(_ svg: String) throws -> Elements {
        let parser = XMLParser(data: Data(svg.utf8))
        let e = Elements()
        parser.delegate = e
        #expect(parser.parse(), "well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
        return e
    }

    @Test("two series on the same axes: one polyline each, with their points, a legend, and the target line")
    func twoSeries() throws {
        let async = ChartSeries(name: "FedAsync <async> & co", points: (0...50).map { ChartPoint(x: Double($0) * 0.2, y: Double($0) / 55) })
        let sync = ChartSeries(name: "FedAvg", points: (0...10).map { ChartPoint(x: Double($0) * 3, y: Double($0) / 11) })
        let svg = LineChartSVG(title: "Test accuracy", xLabel: "seconds", yLabel: "accuracy", yRange: 0...1,
                               references: [ChartReference(y: 0.9, label: "target 0.90")]).render([async, sync])
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        let e = try parse(svg)
        let lines = e.attributes.enumerated().filter { e.names[$0.offset] == "polyline" }.map(\.element)
        #expect(lines.count == 2)
        #expect(lines.map { $0["data-points"] } == ["51", "11"])
        #expect(lines.map { $0["points"]!.split(separator: " ").count } == [51, 11])
        #expect(lines[0]["stroke"] != lines[1]["stroke"], "each series has its own colour")
        #expect(lines[0]["data-name"] == "FedAsync <async> & co", "names are escaped, and read back intact")
        #expect(svg.contains("FedAsync &lt;async&gt; &amp; co"))
        #expect(svg.contains("target 0.90") && svg.contains("stroke-dasharray"))
        #expect(!svg.contains("<script"), "a chart is a picture, not a program")
        // x runs to the last round tick at or after the data: 30 s here.
        #expect(svg.contains(">30</text>"))
    }

    @Test("a long series is thinned to the limit and keeps its last point")
    func thinning() throws {
        let points = (0..<10_000).map { ChartPoint(x: Double($0), y: Double($0) / 10_000) }
        let chart = LineChartSVG(title: "t", xLabel: "x", yLabel: "y", yRange: 0...1, maxPointsPerSeries: 500)
        let svg = chart.render([ChartSeries(name: "long", points: points)])
        let e = try parse(svg)
        let line = try #require(e.attributes[e.names.firstIndex(of: "polyline")!]["points"])
        let coords = line.split(separator: " ")
        #expect(coords.count == 500)
        let full = chart.render([ChartSeries(name: "long", points: [points.first!, points.last!])])
        let last = try parse(full).attributes.first { $0["points"] != nil }!["points"]!.split(separator: " ").last!
        #expect(coords.last == last, "the last point survives thinning")
    }

    @Test("a step series holds each value until the next point")
    func steps() throws {
        let points = [ChartPoint(x: 0, y: 0.1), ChartPoint(x: 10, y: 0.5), ChartPoint(x: 20, y: 0.9)]
        let chart = LineChartSVG(title: "t", xLabel: "x", yLabel: "y", yRange: 0...1, width: 1000, height: 1000)
        let e = try parse(chart.render([ChartSeries(name: "rounds", points: points, steps: true)]))
        let line = try #require(e.attributes.first { $0["points"] != nil })
        #expect(line["data-points"] == "3")
        let ys = line["points"]!.split(separator: " ").map { $0.split(separator: ",")[1] }
        // (0, .1) (10, .1) (10, .5) (20, .5) (20, .9): five vertices, each level held to the next x.
        #expect(ys.count == 5 && ys[0] == ys[1] && ys[2] == ys[3] && ys[1] != ys[2])
    }

    @Test("no data still renders a valid, empty chart")
    func empty() throws {
        let svg = LineChartSVG(title: "nothing", xLabel: "x", yLabel: "y").render([ChartSeries(name: "none", points: [])])
        let e = try parse(svg)
        #expect(!e.names.contains("polyline"))
        #expect(e.names.first == "svg")
    }
}
