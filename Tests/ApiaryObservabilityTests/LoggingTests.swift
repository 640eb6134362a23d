import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import Foundation
import Logging
import Synchronization
import Testing
import ZeroMQ
import ApiaryTesting

/// A log handler that keeps every line, for tests that count them.
final class CapturedLog: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let lines = Mutex([Line]())

    var all: [Line] { lines.withLock { $0 } }

    func logger(level: Logger.Level) -> Logger {
        var l = Logger(label: "captured") { _ in Handler(sink: self) }
        l.logLevel = level
        return l
    }

    fileprivate func append(_ line: Line) { lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let sink: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            sink.append(Line(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}

@Suite("Logs stay quiet per update at the default level")
struct LoggingTests {
    @Test("hundreds of updates, merged and duplicate, log a handful of lines at info; rejections carry client and version")
    func noLinePerUpdate() async throws {
        let log = CapturedLog()
        let aggregator = try makeAggregator(exporter: PrometheusExporter(), logger: log.logger(level: .info))
        let endpoints = try aggregator.start()
        let client = try RawClient(context: try Context(), endpoint: endpoints.update, clientID: "chatty")
        for i in 1...300 {
            try client.sendUpdate(to: aggregator, repeatSeq: i % 3 == 0)
            if i % 50 == 0 { try await eventually("update \(i)") { aggregator.stats.received == UInt64(i) } }
        }
        try await eventually("300 updates") { aggregator.stats.received == 300 }
        #expect(aggregator.stats.rejected[.duplicate] == 100)
        client.push.close()
        aggregator.stop()

        let lines = log.all
        // Start-up (INSECURE warning, "aggregator started"), "update rejected" for the
        // duplicates, "aggregator stopped": nothing per update. How often a reason may be
        // logged (once per 5 s, with the count suppressed since) is RateLimitedLogTests'
        // business, with given times; here, every duplicate is either logged or counted as
        // suppressed, and a line per duplicate (100) would take 500 s at that rate, longer
        // than this test's waits allow.
        let rejectionLines = lines.filter { $0.message == "update rejected" }
        let rejections = rejectionLines.count
        let suppressed = rejectionLines.compactMap { $0.metadata["suppressed"].flatMap { Int($0) } }.reduce(0, +)
        #expect(rejections >= 1 && rejections < 100)
        #expect(rejections + suppressed <= 100)
        #expect(lines.count <= 3 + rejections, "\(lines.map(\.message))")
        let rejected = try #require(lines.first { $0.message == "update rejected" })
        #expect(rejected.metadata["client"] == "chatty")
        #expect(rejected.metadata["reason"] == "duplicate")
        #expect(rejected.metadata["version"] != nil, "rejections name the model version")
        #expect(lines.contains { $0.message == "aggregator started" && $0.metadata["version"] == "0" })
    }

    @Test("the evaluator logs each evaluation at debug only")
    func evaluatorQuietAtInfo() async throws {
        let log = CapturedLog()
        let aggregator = try makeAggregator(exporter: PrometheusExporter())
        try aggregator.start()
        defer { aggregator.stop() }
        let evaluator = ModelEvaluator(aggregator: aggregator, metricsFactory: PrometheusExporter().factory, logger: log.logger(level: .info)) { _ in
            EvaluationResult(accuracy: 1, loss: 0)
        }
        await evaluator.evaluateNow()
        #expect(evaluator.history.count == 1)
        #expect(log.all.isEmpty)
        let verbose = CapturedLog()
        let debugEvaluator = ModelEvaluator(aggregator: aggregator, metricsFactory: PrometheusExporter().factory,
                                            logger: verbose.logger(level: .debug)) { _ in EvaluationResult(accuracy: 1, loss: 0) }
        await debugEvaluator.evaluateNow()
        #expect(verbose.all.map(\.message) == ["model evaluated"])
        #expect(verbose.all.first?.metadata["version"] == "0")
    }
}
