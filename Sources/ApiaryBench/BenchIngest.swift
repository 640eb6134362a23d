import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// ingest: end-to-end updates/s from K raw PUSH clients over tcp loopback into an in-process
/// Aggregator (receive, decode, validate, merge, receipt), against raw libzmq PUSH -> PULL of
/// the same messages (same frames, same chunking, same high-water marks, same I/O threads)
/// measured in the same run.
enum IngestBench {
    struct Case {
        var label: String
        var parameters: Int
        var pushers: Int
        var ioThreads: Int
        var seconds: Double
        var goal: Bool
    }

    static let chunkParameters = 262_144  // 1 MiB frames, as the aggregator's default

    /// Receive high-water mark (messages, per connection) used on both sides: about 64 MiB
    /// of queued updates per connection, at least 4 messages. The aggregator's default (256
    /// messages) would let 4 connections queue 40 GB of 10M-parameter updates.
    static func queueLimit(_ parameters: Int) -> Int32 {
        Int32(max(4, min(256, (64 << 20) / max(1, parameters * 4))))
    }

    /// The update every pusher sends: fresh (client id, seq) per message, base version 0, the
    /// same payload buffer (zero-copy) for all.
    struct UpdateSource: Sendable {
        let runID: UInt64
        let layoutFrame: [UInt8]
        let payload: BenchBuffer

        init(runID: UInt64, parameters n: Int) throws {
            self.runID = runID
            layoutFrame = Codec.encodeLayout(try BenchModel.layout(n))
            payload = BenchBuffer(floats: n, value: 0.5)
        }

        func message(client: String, seq: UInt64, base: UInt64 = 0) -> [Message] {
            let header = Codec.encode(UpdateHeader(runID: runID, baseVersion: base, seq: seq, sampleCount: 1, clientID: client))
            return [Message(header), Message(layoutFrame)] + payload.frames(chunkParameters: chunkParameters)
        }

        /// A tiny update that is rejected (payload too short) but receipted: a ping.
        func ping(client: String, seq: UInt64) -> [Message] {
            let header = Codec.encode(UpdateHeader(runID: runID, baseVersion: 0, seq: seq, sampleCount: 1, clientID: client))
            return [Message(header), Message(layoutFrame), Message([0, 0, 0, 0])]
        }
    }

    /// K pusher threads, each with its own PUSH socket.
    ///
    /// Stopping takes two steps: `stopSending()`, then, once the receiver has drained what
    /// was queued, `close()`. libzmq 4.3.4 aborts (session_base.cpp:260) when a PUSH socket
    /// is closed while its connection is torn down in the middle of a multipart message, so
    /// the sockets are closed only when nothing is in flight.
    final class Pushers: Sendable {
        private let sending = BenchFlag()
        private let closing = BenchFlag()
        let sent = BenchCounter()
        private let threads: BenchThreads

        init(_ k: Int, context: Context, endpoint: String, source: UpdateSource, prefix: String) {
            let (sending, closing, sent) = (self.sending, self.closing, self.sent)
            threads = BenchThreads(k, name: "bench-push") { i in
                do {
                    let push = try context.socket(.push)
                    defer { push.close() }
                    try push.set(.sendHighWaterMark, 2)
                    try push.set(.sendTimeout, 50)
                    try push.connect(endpoint)
                    var seq: UInt64 = 0
                    var pending: [Message]?
                    while !sending.isSet {
                        if pending == nil {
                            seq += 1
                            pending = source.message(client: "\(prefix)-\(i)", seq: seq)
                        }
                        if try push.send(multipart: pending!) {
                            pending = nil
                            sent.add()
                        }
                    }
                    while !closing.isSet { usleep(5_000) }
                } catch {
                    FileHandle.standardError.write(Data("bench pusher \(i): \(error)\n".utf8))
                }
            }
        }

        func stopSending() { sending.set() }

        /// Closes the sockets once `count()` has not moved for `quiet` seconds (the receiver
        /// took everything that was queued).
        func close(after count: () -> Int, quiet: Double = 0.3, timeout: Double = 30) {
            stopSending()
            waitUntilQuiet(count, quiet: quiet, timeout: timeout)
            closing.set()
            threads.join()
        }
    }

    /// Measures the rate of `count()` over `seconds` after it first reaches `warmup`.
    static func rate(over duration: Double, warmup: Int, timeout: Double = 30, _ count: () -> Int) -> (rate: Double, total: Int)? {
        let start = benchNow()
        while count() < warmup {
            if seconds(since: start) > timeout { return nil }
            usleep(2_000)
        }
        let c0 = count(), t0 = benchNow()
        usleep(UInt32(duration * 1e6))
        let c1 = count()
        return (Double(c1 - c0) / seconds(since: t0), c1)
    }

    /// Raw libzmq: the same pushers into a PULL socket whose thread only receives.
    static func raw(_ c: Case) throws -> (rate: Double, total: Int) {
        let source = try UpdateSource(runID: 1, parameters: c.parameters)
        let stop = BenchFlag(), received = BenchCounter()
        let endpoint = Mutex<String?>(nil)
        let failure = Mutex<String?>(nil)
        let receiverContext = try Context(ioThreads: c.ioThreads)
        let receiver = BenchThreads(1, name: "bench-pull") { _ in
            do {
                let pull = try receiverContext.socket(.pull)
                defer { pull.close() }
                try pull.set(.linger, 0)
                try pull.set(.maxMessageSize, 16 << 20)
                try pull.set(.receiveHighWaterMark, queueLimit(c.parameters))
                try pull.set(.receiveTimeout, 50)
                try pull.bind("tcp://127.0.0.1:*")
                let e = try pull.lastEndpoint
                endpoint.withLock { $0 = e }
                while !stop.isSet {
                    if try pull.receiveMultipart(maxFrames: 1 << 16) != nil { received.add() }
                }
            } catch {
                failure.withLock { $0 = "\(error)" }
                endpoint.withLock { $0 = "" }
            }
        }
        var e: String?
        while e == nil { e = endpoint.withLock { $0 }; usleep(1_000) }
        guard let ep = e, !ep.isEmpty else { throw BenchError.failed(failure.withLock { $0 } ?? "PULL failed") }
        let pusherContext = try Context(ioThreads: c.ioThreads)
        let pushers = Pushers(c.pushers, context: pusherContext, endpoint: ep, source: source, prefix: "raw")
        let r = rate(over: c.seconds, warmup: c.pushers) { received.load }
        pushers.close(after: { received.load })
        stop.set()
        receiver.join()
        guard let r else { throw BenchError.failed("raw PUSH->PULL moved no message") }
        return r
    }

    /// The aggregator: every update validated and merged, a receipt published for each.
    static func aggregator(_ c: Case, publishInterval: Duration = .seconds(1), logger: Logger) throws
        -> (rate: Double, total: Int, rejected: UInt64)
    {
        let layout = try BenchModel.layout(c.parameters)
        var config = BenchModel.aggregatorConfig()
        config.publishInterval = publishInterval
        config.heartbeatInterval = .zero
        config.chunkParameters = chunkParameters
        config.updateQueueLimit = queueLimit(c.parameters)
        config.ioThreads = c.ioThreads
        config.dedupWindow = 256
        let agg = try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0, count: c.parameters), logger: logger)
        let eps = try agg.start()
        defer { agg.stop() }
        let source = try UpdateSource(runID: agg.runID, parameters: c.parameters)
        // Merged receipts, counted as they arrive (the aggregator publishes its stats only
        // once per batch of updates: too coarse for a short window on large updates).
        let receipts = try ReceiptCounters(models: [eps.model], name: "bench-receipts")
        defer { receipts.stop() }
        let merged = receipts.merged[0]
        usleep(200_000)  // the receipt subscription reaches the PUB socket
        let pusherContext = try Context(ioThreads: c.ioThreads)
        let pushers = Pushers(c.pushers, context: pusherContext, endpoint: eps.update, source: source, prefix: "agg")
        let r = rate(over: c.seconds, warmup: c.pushers) { merged.load }
        pushers.close(after: { Int(agg.stats.received) })
        let stats = agg.stats
        guard let r else { throw BenchError.failed("the aggregator merged nothing (rejected: \(stats.rejected))") }
        return (r.rate, r.total, stats.rejectedTotal)
    }

    static func run(_ cases: [Case], logger: Logger, progress: (String) -> Void) -> [BenchResult] {
        cases.map { c in
            let name = "ingest/\(c.label)"
            progress(name)
            do {
                // Raw, aggregator, raw, aggregator: each side keeps its better run, so that a
                // burst of load from elsewhere on the machine hurts neither side alone.
                let raw1 = try raw(c)
                let agg1 = try aggregator(c, logger: logger)
                let raw2 = try raw(c)
                let agg2 = try aggregator(c, logger: logger)
                let agg = agg1.rate >= agg2.rate ? agg1 : agg2
                let bound = max(raw1.rate, raw2.rate)
                let ratio = agg.rate / bound
                let mb = Double(c.parameters * 4) / 1e6
                return BenchResult(
                    name: name, group: "ingest", figure: agg.rate, unit: "updates/s",
                    bound: bound, boundUnit: "messages/s (raw libzmq PUSH->PULL, same frames)",
                    ratio: ratio, ratioMeaning: "figure / bound (1 = as fast as raw libzmq)",
                    goal: c.goal ? "ratio >= 0.8" : nil, met: c.goal ? ratio >= 0.8 : nil,
                    params: ["parameters": .int(c.parameters), "update_mb": .double(mb), "pushers": .int(c.pushers),
                             "io_threads": .int(c.ioThreads), "chunk_parameters": .int(chunkParameters),
                             "queue_limit": .int(Int(queueLimit(c.parameters))), "seconds": .double(c.seconds),
                             "figure_gb_per_s": .double(agg.rate * mb / 1e3), "bound_gb_per_s": .double(bound * mb / 1e3),
                             "raw_runs": .string("\(BenchResult.short(raw1.rate)) / \(BenchResult.short(raw2.rate))"),
                             "aggregator_runs": .string("\(BenchResult.short(agg1.rate)) / \(BenchResult.short(agg2.rate))"),
                             "rejected": .int(Int(agg1.rejected + agg2.rejected))])
            } catch {
                return .failed(name, group: "ingest", unit: "updates/s", boundUnit: "messages/s", error: "\(error)")
            }
        }
    }
}

enum BenchError: Error, CustomStringConvertible {
    case failed(String)
    var description: String {
        switch self {
        case .failed(let s): s
        }
    }
}
