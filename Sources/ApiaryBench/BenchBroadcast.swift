import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// broadcast: how long a new model takes to reach every one of S subscribers (SUB sockets in
/// this process, each putting all chunks back together), against raw PUB -> SUB of the same
/// messages (same chunks, zero-copy from one buffer, same socket options) in the same run.
enum BroadcastBench {
    struct Case {
        var label: String
        var parameters: Int
        var subscribers: Int
        var ioThreads: Int
        var repetitions: Int
    }

    static let chunkParameters = IngestBench.chunkParameters
    static let client = "bench-bc"

    /// What every subscriber reports: the newest version it holds whole, and since when.
    final class Board: Sendable {
        let ready = BenchCounter()
        private let done: Mutex<[(version: UInt64, at: UInt64)]>

        init(count: Int) { done = Mutex(Array(repeating: (0, 0), count: count)) }

        func complete(_ i: Int, version: UInt64, at t: UInt64) {
            done.withLock { if version > $0[i].version { $0[i] = (version, t) } }
        }

        /// When every subscriber holds `version` (or newer): the last arrival; nil if not yet.
        func allHold(_ version: UInt64) -> UInt64? {
            done.withLock { d in
                var last: UInt64 = 0
                for e in d {
                    guard e.version >= version else { return nil }
                    last = max(last, e.at)
                }
                return last
            }
        }

        func holding(_ version: UInt64) -> Int { done.withLock { $0.filter { $0.version >= version }.count } }
    }

    /// S SUB sockets over a few threads; each assembles every chunk into its thread's buffer.
    final class Subscribers: Sendable {
        let board: Board
        let stop = BenchFlag()
        private let threads: BenchThreads
        let context: Context

        init(count: Int, endpoint: String, parameters: Int) throws {
            let board = Board(count: count)
            self.board = board
            let context = try Context(ioThreads: 2)
            self.context = context
            let stop = self.stop
            let nThreads = min(2, count)
            threads = BenchThreads(nThreads, name: "bench-sub") { t in
                let mine = Array(stride(from: t, to: count, by: nThreads))
                do {
                    let poller = Poller()
                    var subs: [Socket] = []
                    for _ in mine {
                        let s = try context.socket(.sub)
                        try s.set(.linger, 0)
                        try s.set(.receiveHighWaterMark, 4)
                        try s.set(.subscribe, Topic.model)
                        try s.set(.subscribe, Topic.receipt(clientID: client))
                        try s.connect(endpoint)
                        poller.add(s)
                        subs.append(s)
                    }
                    let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(4, parameters * 4), alignment: 64)
                    defer { scratch.deallocate() }
                    var version = [UInt64](repeating: 0, count: mine.count)
                    var remaining = [Int](repeating: 0, count: mine.count)
                    var seen = [[Bool]](repeating: [], count: mine.count)
                    var ready = [Bool](repeating: false, count: mine.count)
                    while !stop.isSet {
                        guard try poller.poll(timeoutMilliseconds: 20) > 0 else { continue }
                        for j in subs.indices where poller.isReadable(j) {
                            while let m = try subs[j].receiveMultipart(dontWait: true, maxFrames: 4) {
                                if !ready[j] {
                                    ready[j] = true
                                    board.ready.add()
                                }
                                let chunk = try? m.withFrameBytes { f throws(WireError) -> ModelChunkHeader? in
                                    guard f.count == 3, f[0].elementsEqual(Topic.model) else { return nil }
                                    let (h, p) = try Codec.decodeModelChunk(f)
                                    if p.count > 0 { (scratch + Int(h.chunkOffset) * 4).copyMemory(from: p.baseAddress!, byteCount: p.count) }
                                    return h
                                }
                                guard let h = chunk ?? nil else { continue }
                                if h.version != version[j] {
                                    guard h.version > version[j] else { continue }
                                    version[j] = h.version
                                    seen[j] = [Bool](repeating: false, count: Int(h.chunkCount))
                                    remaining[j] = Int(h.chunkCount)
                                }
                                let k = Int(h.chunkIndex)
                                guard k < seen[j].count, !seen[j][k] else { continue }
                                seen[j][k] = true
                                remaining[j] -= 1
                                if remaining[j] == 0 { board.complete(mine[j], version: h.version, at: benchNow()) }
                            }
                        }
                    }
                    for s in subs { s.close() }
                } catch let e as ZMQError where e.isContextTerminated {
                    return
                } catch {
                    FileHandle.standardError.write(Data("bench subscriber thread \(t): \(error)\n".utf8))
                }
            }
        }

        /// Calls `ping` every 100 ms until every subscriber got something (its subscription
        /// reached the publisher). False on timeout.
        func waitReady(count: Int, timeout: Double, ping: () throws -> Void) rethrows -> Bool {
            let start = benchNow()
            while board.ready.load < count {
                if seconds(since: start) > timeout { return false }
                try ping()
                usleep(100_000)
            }
            return true
        }

        /// Waits until every subscriber holds `version`; returns when the last got it.
        func waitAll(_ version: UInt64, timeout: Double) -> UInt64? {
            let start = benchNow()
            while seconds(since: start) < timeout {
                if let t = board.allHold(version) { return t }
                usleep(500)
            }
            return nil
        }

        func close() {
            stop.set()
            threads.join()
        }
    }

    static func layout(_ n: Int) throws -> ParameterLayout { try BenchModel.layout(n) }

    static func timeout(_ c: Case) -> Double { 60 + Double(c.parameters) * Double(c.subscribers) * 4 / 0.3e9 }

    /// Raw PUB -> SUB: the model's chunks sent zero-copy from one buffer, as the aggregator does.
    static func raw(_ c: Case) throws -> [Double] {
        let l = try layout(c.parameters)
        let model = BenchBuffer(floats: c.parameters, value: 0.25)
        let context = try Context(ioThreads: c.ioThreads)
        let pub = try context.socket(.pub)
        defer { pub.close() }
        let chunks = (c.parameters + chunkParameters - 1) / chunkParameters
        try pub.set(.linger, 0)
        try pub.set(.sendHighWaterMark, Int32(2 * chunks + 1000))
        try pub.bind("tcp://127.0.0.1:*")
        let subs = try Subscribers(count: c.subscribers, endpoint: try pub.lastEndpoint, parameters: c.parameters)
        defer { subs.close() }
        let ok = try subs.waitReady(count: c.subscribers, timeout: 60) {
            try pub.send(multipart: [Message(Topic.receipt(clientID: client)), Message(string: "ping")], dontWait: true)
        }
        guard ok else { throw BenchError.failed("only \(subs.board.ready.load) of \(c.subscribers) subscribers connected") }
        var times: [Double] = []
        for v in 1...UInt64(c.repetitions) {
            usleep(50_000)
            let t0 = benchNow()
            let frames = model.frames(chunkParameters: chunkParameters)
            for (i, payload) in frames.enumerated() {
                let h = ModelChunkHeader(runID: 1, version: v, layoutFingerprint: l.fingerprint, parameterCount: UInt64(c.parameters),
                                         chunkOffset: UInt64(i * chunkParameters), chunkIndex: UInt32(i), chunkCount: UInt32(chunks))
                try pub.send(multipart: [Message(Topic.model), Message(Codec.encode(h)), payload], dontWait: true)
            }
            guard let t1 = subs.waitAll(v, timeout: timeout(c)) else {
                throw BenchError.failed("raw: \(subs.board.holding(v)) of \(c.subscribers) subscribers got version \(v)")
            }
            times.append(Double(t1 - t0) / 1e9)
        }
        return times
    }

    /// The aggregator: an update is merged (its receipt is published first, then the new
    /// version's chunks); timed from the receipt's arrival to the last subscriber's last chunk.
    static func aggregator(_ c: Case, logger: Logger) throws -> (times: [Double], fromSend: [Double]) {
        let l = try layout(c.parameters)
        var config = BenchModel.aggregatorConfig()
        config.heartbeatInterval = .zero
        config.chunkParameters = chunkParameters
        config.updateQueueLimit = 4
        config.ioThreads = c.ioThreads
        let agg = try Aggregator(config: config, layout: l, initialParameters: [Float](repeating: 0, count: c.parameters), logger: logger)
        let eps = try agg.start()
        defer { agg.stop() }
        let source = try IngestBench.UpdateSource(runID: agg.runID, parameters: c.parameters)
        let context = try Context(ioThreads: 1)
        let push = try context.socket(.push)
        let receipts = try context.socket(.sub)
        defer {
            push.close()
            receipts.close()
        }
        try push.set(.linger, 0)
        try push.connect(eps.update)
        try receipts.set(.linger, 0)
        try receipts.set(.subscribe, Topic.receipt(clientID: client))
        try receipts.connect(eps.model)
        let subs = try Subscribers(count: c.subscribers, endpoint: eps.model, parameters: c.parameters)
        defer { subs.close() }
        var seq: UInt64 = 0
        var mainReady = false
        // Pings: updates with a short payload are rejected (no merge, no broadcast) but
        // receipted, on the topic every subscriber also listens to.
        let ok = try subs.waitReady(count: c.subscribers, timeout: 60) {
            seq += 1
            _ = try push.send(multipart: source.ping(client: client, seq: seq), dontWait: true)
            while try receipts.receiveMultipart(dontWait: true) != nil { mainReady = true }
        }
        while !mainReady {
            seq += 1
            _ = try push.send(multipart: source.ping(client: client, seq: seq), dontWait: true)
            usleep(100_000)
            while try receipts.receiveMultipart(dontWait: true) != nil { mainReady = true }
        }
        guard ok else { throw BenchError.failed("only \(subs.board.ready.load) of \(c.subscribers) subscribers connected") }
        usleep(100_000)
        while try receipts.receiveMultipart(dontWait: true) != nil {}
        try receipts.set(.receiveTimeout, 30_000)
        var times: [Double] = [], fromSend: [Double] = []
        for _ in 0..<c.repetitions {
            usleep(50_000)  // more than the publish interval since the last broadcast
            seq += 1
            let tSend = benchNow()
            try push.send(multipart: source.message(client: client, seq: seq))
            var merged: Receipt?
            while merged == nil {
                guard let m = try receipts.receiveMultipart() else { throw BenchError.failed("no receipt for the update") }
                let t = benchNow()
                let r = try m.withFrameBytes { f throws(WireError) in try Codec.decodeReceipt(f) }
                if r.seq == seq {
                    guard r.decision == .merged else { throw BenchError.failed("update not merged: \(r.reason) \(r.message)") }
                    merged = r
                    guard let t1 = subs.waitAll(r.modelVersion, timeout: timeout(c)) else {
                        throw BenchError.failed("aggregator: \(subs.board.holding(r.modelVersion)) of \(c.subscribers) subscribers got version \(r.modelVersion)")
                    }
                    times.append(Double(t1 &- t) / 1e9)
                    fromSend.append(Double(t1 &- tSend) / 1e9)
                }
            }
        }
        return (times, fromSend)
    }

    static func run(_ cases: [Case], logger: Logger, progress: (String) -> Void) -> [BenchResult] {
        cases.map { c in
            let name = "broadcast/\(c.label)"
            progress(name)
            do {
                // Raw, aggregator, and for the smaller cases once more each: both sides keep
                // their best time, so that load from elsewhere on the machine hurts neither alone.
                var rawTimes = try raw(c)
                var agg = try aggregator(c, logger: logger)
                let rounds = Double(c.parameters) * 4 * Double(c.subscribers) < 1e9 ? 2 : 1
                for _ in 1..<rounds {
                    rawTimes += try raw(c)
                    let more = try aggregator(c, logger: logger)
                    agg.times += more.times
                    agg.fromSend += more.fromSend
                }
                let figure = agg.times.min()!
                let bound = rawTimes.min()!
                let gb = Double(c.parameters) * 4 * Double(c.subscribers) / 1e9
                return BenchResult(
                    name: name, group: "broadcast", figure: figure * 1e3, unit: "ms (until every subscriber holds the new model)",
                    bound: bound * 1e3, boundUnit: "ms (raw libzmq PUB->SUB of the same chunks)",
                    ratio: bound / figure, ratioMeaning: "bound / figure (1 = as fast as raw libzmq)",
                    params: ["parameters": .int(c.parameters), "subscribers": .int(c.subscribers), "io_threads": .int(c.ioThreads),
                             "chunk_parameters": .int(chunkParameters), "repetitions": .int(c.repetitions * rounds),
                             "delivered_gb": .double(gb), "figure_gb_per_s": .double(gb / figure), "bound_gb_per_s": .double(gb / bound),
                             "from_update_send_ms": .double(agg.fromSend.min()! * 1e3)],
                    note: "timed from the merge receipt's arrival (the receipt is published just before the chunks)")
            } catch {
                return .failed(name, group: "broadcast", unit: "ms", boundUnit: "ms", error: "\(error)")
            }
        }
    }
}
