import ApiaryCommandLine
import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import ArgumentParser
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// shards: complete updates/s of large updates into S parameter shards, each an aggregator in
/// its own child process (`apiary bench shard-server`), against one aggregator process (S = 1)
/// and raw libzmq PUSH -> PULL of the whole update, both measured in the same run.
///
/// The pushers (raw sockets in this process, like ingest's) split every update as a client
/// does (docs/PROTOCOL.md 4.4): to shard k the slice `[start_k, end_k)` of the flat vector,
/// with shard k's run id, the same seq and the same layout frame. An update counts once every
/// shard merged its slice: the figure is the rate of the smallest per-shard merged count.
enum ShardsBench {
    struct Case {
        var label: String
        var parameters: Int
        /// Shard counts to run; 1 is one unsharded aggregator (the baseline).
        var shardCounts: [Int]
        var pushers: Int
        var seconds: Double
        /// Rounds of (raw, S = 1, S = 2, ...); each keeps its best.
        var rounds: Int
    }

    static let chunkParameters = IngestBench.chunkParameters

    /// One shard as the pushers see it.
    struct Shard: Sendable {
        var runID: UInt64
        var range: Range<Int>
        var model: String
        var update: String
    }

    /// Every pusher's update: one payload buffer for the whole vector, sent zero-copy as S
    /// slices; a fresh (client id, seq) per update, base version 0.
    struct SliceSource: Sendable {
        let layoutFrame: [UInt8]
        let payload: BenchBuffer
        let shards: [Shard]

        init(parameters n: Int, shards: [Shard]) throws {
            layoutFrame = Codec.encodeLayout(try BenchModel.layout(n))
            payload = BenchBuffer(floats: n, value: 0.5)
            self.shards = shards
        }

        func message(shard k: Int, client: String, seq: UInt64) -> [Message] {
            let s = shards[k]
            let header = Codec.encode(UpdateHeader(runID: s.runID, baseVersion: 0, seq: seq, sampleCount: 1, clientID: client))
            var frames = [Message(header), Message(layoutFrame)]
            var off = s.range.lowerBound
            while off < s.range.upperBound {
                let c = min(chunkParameters, s.range.upperBound - off)
                frames.append(Message(noCopy: UnsafeRawPointer(payload.base + off * 4), count: c * 4, owner: payload))
                off += c
            }
            return frames
        }
    }

    /// K pusher threads, each with one PUSH socket per shard; every update goes out as S
    /// slices, shard by shard. Closed in two steps like ingest's (libzmq 4.3.4 aborts when a
    /// PUSH socket is closed while its connection breaks in the middle of a multipart message).
    final class Pushers: Sendable {
        private let sending = BenchFlag()
        private let closing = BenchFlag()
        let sent = BenchCounter()
        private let threads: BenchThreads

        init(_ k: Int, context: Context, source: SliceSource) {
            let (sending, closing, sent) = (self.sending, self.closing, self.sent)
            threads = BenchThreads(k, name: "bench-shard-push") { i in
                var sockets: [Socket] = []
                defer { for s in sockets { s.close() } }
                do {
                    for s in source.shards {
                        let push = try context.socket(.push)
                        sockets.append(push)
                        try push.set(.sendHighWaterMark, 2)
                        try push.set(.sendTimeout, 50)
                        try push.connect(s.update)
                    }
                    var seq: UInt64 = 0
                    outer: while !sending.isSet {
                        seq += 1
                        for k in sockets.indices {
                            let m = source.message(shard: k, client: "shards-\(i)", seq: seq)
                            while !(try sockets[k].send(multipart: m)) {
                                if sending.isSet { break outer }
                            }
                        }
                        sent.add()
                    }
                    while !closing.isSet { usleep(5_000) }
                } catch {
                    FileHandle.standardError.write(Data("bench shard pusher \(i): \(error)\n".utf8))
                    while !closing.isSet { usleep(5_000) }
                }
            }
        }

        /// Stops sending, waits until `count()` has not moved for `quiet` seconds (the shards
        /// took everything queued), then closes the sockets.
        func close(after count: () -> Int, quiet: Double = 0.3, timeout: Double = 30) {
            sending.set()
            waitUntilQuiet(count, quiet: quiet, timeout: timeout)
            closing.set()
            threads.join()
        }
    }

    /// CPU seconds (user + system) a process has used so far; self when pid is nil.
    static func cpuSeconds(pid: Int32? = nil) -> Double {
        cpuSeconds(path: pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat")
    }

    static func cpuSeconds(path: String) -> Double {
        guard let s = try? String(contentsOfFile: path, encoding: .utf8), let close = s.lastIndex(of: ")") else { return 0 }
        // After "pid (comm) ": state is field 3, utime field 14, stime field 15.
        let f = s[s.index(after: close)...].split(separator: " ")
        guard f.count > 12, let u = Double(f[11]), let k = Double(f[12]) else { return 0 }
        return (u + k) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU seconds of a process's threads, split into libzmq's I/O threads (`ZMQbg/IO/n`)
    /// and the others (in a shard process: the aggregator thread, nearly all of the rest).
    static func threadCPUSeconds(pid: Int32) -> (io: Double, other: Double) {
        let dir = "/proc/\(pid)/task"
        var io = 0.0, other = 0.0
        for t in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let tid = Int32(t) else { continue }
            let comm = (try? String(contentsOfFile: "\(dir)/\(t)/comm", encoding: .utf8)) ?? ""
            let cpu = cpuSeconds(path: "\(dir)/\(tid)/stat")
            if comm.hasPrefix("ZMQbg/IO") { io += cpu } else { other += cpu }
        }
        return (io, other)
    }

    /// VmRSS of a shard process holding a 1,024-parameter model: the process floor that the
    /// shards' idle RSS is compared with.
    static func floorRSS() -> Int {
        guard let ch = try? BenchChild(arguments: ["bench", "shard-server", "--parameters", "1024"]),
              ch.expect("ready", timeout: 60) != nil else { return 0 }
        usleep(300_000)
        let rss = ProcStatus.rss(pid: ch.pid)
        ch.send("quit")
        ch.stop(grace: 5)
        return rss
    }

    /// What one run of S shard processes gave.
    struct Run {
        var shards: Int
        /// Complete updates/s (every shard merged its slice).
        var rate: Double
        /// Merged slices/s per shard.
        var perShard: [Double]
        var sliceBytes: [Int]
        /// VmRSS of each shard process once started, before any update, and its peak.
        var rssIdle: [Int]
        var rssPeak: [Int]
        /// Cores used during the measured window: by each shard process, and by this one
        /// (the pushers, their I/O thread and the receipt readers).
        var shardCores: [Double]
        /// Of `shardCores`: libzmq I/O threads, and the other threads (the aggregator thread).
        var shardIOCores: [Double]
        var shardMergeCores: [Double]
        var pusherCores: Double
        var rejected: UInt64
    }

    /// S child processes, one aggregator (shard) each, fed by the pushers for `c.seconds`.
    static func sharded(_ c: Case, shards s: Int) throws -> Run {
        var children: [BenchChild] = []
        defer {
            for ch in children { ch.send("quit") }
            for ch in children { ch.stop(grace: 5) }
        }
        for i in 0..<s {
            children.append(try BenchChild(arguments: ["bench", "shard-server", "--parameters", "\(c.parameters)",
                                                       "--shards", "\(s)", "--index", "\(i)"]))
        }
        var shards: [Shard] = []
        for ch in children {
            // ready MODEL UPDATE RUN_ID START END
            guard let line = ch.expect("ready", timeout: 60) else { throw BenchError.failed("shard process \(shards.count) of \(s) did not start") }
            let p = line.split(separator: " ").map(String.init)
            guard p.count == 6, let run = UInt64(p[3]), let lo = Int(p[4]), let hi = Int(p[5]) else {
                throw BenchError.failed("shard process said '\(line)'")
            }
            shards.append(Shard(runID: run, range: lo..<hi, model: p[1], update: p[2]))
        }
        guard shards.first?.range.lowerBound == 0, shards.last?.range.upperBound == c.parameters,
              zip(shards, shards.dropFirst()).allSatisfy({ $0.range.upperBound == $1.range.lowerBound }) else {
            throw BenchError.failed("the shards' ranges do not tile the vector: \(shards.map(\.range))")
        }

        // Receipts of every shard, counted as they arrive (merged, and all of them).
        let counters = try ReceiptCounters(models: shards.map(\.model), name: "bench-shard-receipts")
        defer { counters.stop() }
        let (merged, receipts) = (counters.merged, counters.all)
        usleep(300_000)  // the subscriptions reach the PUB sockets
        let rssIdle = children.map { ProcStatus.rss(pid: $0.pid) }

        let source = try SliceSource(parameters: c.parameters, shards: shards)
        let pusherContext = try Context(ioThreads: 1)
        let pushers = Pushers(c.pushers, context: pusherContext, source: source)
        var closed = false
        defer { if !closed { pushers.close(after: { receipts.load }) } }

        func complete() -> Int { merged.map(\.load).min() ?? 0 }
        let start = benchNow()
        while complete() < c.pushers {
            if seconds(since: start) > 60 { throw BenchError.failed("the shards merged no complete update within 60 s (merged per shard: \(merged.map(\.load)))") }
            usleep(2_000)
        }
        let c0 = merged.map(\.load), t0 = benchNow()
        let cpu0 = children.map { cpuSeconds(pid: $0.pid) }, own0 = cpuSeconds()
        let threads0 = children.map { threadCPUSeconds(pid: $0.pid) }
        usleep(UInt32(c.seconds * 1e6))
        let c1 = merged.map(\.load), dt = seconds(since: t0)
        let cpu1 = children.map { cpuSeconds(pid: $0.pid) }, own1 = cpuSeconds()
        let threads1 = children.map { threadCPUSeconds(pid: $0.pid) }
        pushers.close(after: { receipts.load })
        closed = true

        let rssPeak = children.map { ProcStatus.bytes("VmHWM", pid: $0.pid) ?? 0 }
        var rejected: UInt64 = 0
        for (k, ch) in children.enumerated() {
            ch.send("stats")
            guard let line = ch.expect("stats", timeout: 10) else { throw BenchError.failed("shard process \(k) did not report its stats") }
            rejected += line.split(separator: " ").dropFirst(3).first.flatMap { UInt64($0) } ?? 0
        }
        let perShard = zip(c0, c1).map { Double($1 - $0) / dt }
        let completeRate = Double((c1.min() ?? 0) - (c0.min() ?? 0)) / dt
        return Run(shards: s, rate: completeRate, perShard: perShard, sliceBytes: shards.map { $0.range.count * 4 },
                   rssIdle: rssIdle, rssPeak: rssPeak, shardCores: zip(cpu0, cpu1).map { ($1 - $0) / dt },
                   shardIOCores: zip(threads0, threads1).map { ($1.io - $0.io) / dt },
                   shardMergeCores: zip(threads0, threads1).map { ($1.other - $0.other) / dt },
                   pusherCores: (own1 - own0) / dt, rejected: rejected)
    }

    static func run(_ cases: [Case], progress: (String) -> Void, say: (String) -> Void) -> [BenchResult] {
        var results: [BenchResult] = []
        let floor = cases.isEmpty ? 0 : floorRSS()
        for c in cases {
            progress("shards/\(c.label) (S = \(c.shardCounts.map(String.init).joined(separator: ", ")), one process per shard)")
            do {
                let rawCase = IngestBench.Case(label: c.label, parameters: c.parameters, pushers: c.pushers, ioThreads: 1,
                                               seconds: c.seconds, goal: false)
                var raws: [Double] = []
                var runs: [Int: [Run]] = [:]
                // Raw, S = 1, S = 2, ..., again: each keeps its best run, so that a burst of
                // load from elsewhere on the machine hurts no configuration alone.
                for _ in 0..<max(1, c.rounds) {
                    raws.append(try IngestBench.raw(rawCase).rate)
                    for s in c.shardCounts { runs[s, default: []].append(try sharded(c, shards: s)) }
                }
                let raw = raws.max() ?? 0
                let best = runs.mapValues { $0.max { $0.rate < $1.rate }! }
                let one = best[1]
                let mb = Double(c.parameters * 4) / 1e6
                var summary = "  shards/\(c.label): \(String(format: "%.2f", mb)) MB per update; raw PUSH->PULL \(BenchResult.short(raw)) msg/s"
                func cores(_ r: Run) -> String { String(format: "%.1f", r.shardCores.reduce(0, +) + r.pusherCores) }
                for s in c.shardCounts {
                    let r = best[s]!
                    func mibs(_ v: [Int]) -> String { v.map { String(format: "%.1f", mib($0)) }.joined(separator: " / ") }
                    let toRaw = r.rate / raw
                    var params: [String: BenchValue] = [
                        "parameters": .int(c.parameters), "update_mb": .double(mb), "shards": .int(s), "pushers": .int(c.pushers),
                        "seconds": .double(c.seconds), "chunk_parameters": .int(chunkParameters), "io_threads": 1,
                        "processes": .string(s == 1 ? "one aggregator process" : "one aggregator process per shard"),
                        "figure_gb_per_s": .double(r.rate * mb / 1e3),
                        "raw_messages_per_s": .double(raw), "raw_gb_per_s": .double(raw * mb / 1e3), "ratio_to_raw": .double(toRaw),
                        "runs": .string(runs[s]!.map { BenchResult.short($0.rate) }.joined(separator: " / ")),
                        "raw_runs": .string(raws.map { BenchResult.short($0) }.joined(separator: " / ")),
                        "per_shard_merged_per_s": .string(r.perShard.map { BenchResult.short($0) }.joined(separator: " / ")),
                        "model_mib": .double(mib(c.parameters * 4)),
                        "slice_mib": .string(mibs(r.sliceBytes)), "largest_slice_mib": .double(mib(r.sliceBytes.max() ?? 0)),
                        "shard_rss_idle_mib": .string(mibs(r.rssIdle)), "shard_rss_peak_mib": .string(mibs(r.rssPeak)),
                        "process_floor_rss_mib": .double(mib(floor)),
                        "shard_rss_above_floor_mib": .string(mibs(r.rssIdle.map { $0 - floor })),
                        "shard_cores": .string(r.shardCores.map { String(format: "%.2f", $0) }.joined(separator: " / ")),
                        "shard_io_thread_cores": .string(r.shardIOCores.map { String(format: "%.2f", $0) }.joined(separator: " / ")),
                        "shard_other_thread_cores": .string(r.shardMergeCores.map { String(format: "%.2f", $0) }.joined(separator: " / ")),
                        "pusher_process_cores": .double(r.pusherCores),
                        "total_cores": .double(r.shardCores.reduce(0, +) + r.pusherCores),
                        "queue_limit": .int(Int(IngestBench.queueLimit(r.sliceBytes.max()! / 4))),
                        "rejected": .int(Int(runs[s]!.map(\.rejected).reduce(0, +))),
                    ]
                    let name = "shards/\(c.label)-S\(s)"
                    if s == 1 || one == nil {
                        results.append(BenchResult(
                            name: name, group: "shards", figure: r.rate, unit: "complete updates/s",
                            bound: raw, boundUnit: "messages/s (raw libzmq PUSH->PULL, the whole update as one message)",
                            ratio: toRaw, ratioMeaning: "figure / bound (1 = as fast as raw libzmq)",
                            goal: nil, met: nil, params: params))
                        summary += "; S=\(s) \(BenchResult.short(r.rate))/s (\(String(format: "%.2f", toRaw)) of raw, \(cores(r)) cores busy)"
                    } else {
                        let speedup = r.rate / one!.rate
                        params["speedup_over_one"] = .double(speedup)
                        results.append(BenchResult(
                            name: name, group: "shards", figure: r.rate, unit: "complete updates/s (every shard merged its slice)",
                            bound: one!.rate, boundUnit: "updates/s (one aggregator process, same run)",
                            ratio: speedup, ratioMeaning: "figure / bound (speed-up over one aggregator; > 1: sharding helps)",
                            goal: nil, met: nil, params: params))
                        summary += "; S=\(s) \(BenchResult.short(r.rate))/s (\(String(format: "%.2f", speedup))x S=1, \(String(format: "%.2f", toRaw)) of raw, \(String(format: "%.1f", mib(r.sliceBytes.max()!))) MiB slices, \(cores(r)) cores busy)"
                    }
                }
                say(summary)
            } catch {
                results.append(.failed("shards/\(c.label)", group: "shards", unit: "complete updates/s", boundUnit: "updates/s", error: "\(error)"))
            }
        }
        return results
    }
}

/// `apiary bench shard-server`: one aggregator of the shards benchmark, shard INDEX of SHARDS
/// (or, with --shards 1, one unsharded aggregator) for a one-tensor model of PARAMETERS
/// float32. Says `ready MODEL UPDATE RUN_ID START END` once bound; answers `stats` with
/// `stats MERGED RECEIVED REJECTED`; stops on `quit` or when stdin closes.
struct BenchShardServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard-server", abstract: "Helper of `apiary bench`: one aggregator (shard) of the shards benchmark.", shouldDisplay: false)

    @Option var parameters: Int
    @Option var shards: Int = 1
    @Option var index: Int = 0
    @Option var ioThreads: Int = 1

    func run() throws {
        let logger = LogSetup.bootstrap(level: .error)
        let layout = try BenchModel.layout(parameters)
        var config = BenchModel.aggregatorConfig()
        config.publishInterval = .seconds(1)
        config.heartbeatInterval = .zero
        config.chunkParameters = ShardsBench.chunkParameters
        config.ioThreads = ioThreads
        config.dedupWindow = 256
        var slice = parameters
        if shards > 1 {
            // The map is what clients would be told; the benchmark's pushers address the
            // shards directly, so its endpoints are names only.
            let map = (0..<shards).map { i in
                ShardConfig.Endpoints(model: "tcp://shard-\(i):5557", snapshot: "tcp://shard-\(i):5556", update: "tcp://shard-\(i):5558")
            }
            config.shard = ShardConfig(index: index, map: map)
            let b = ShardEntry.evenBoundaries(parameterCount: parameters, shards: shards)
            slice = b[index + 1] - b[index]
        }
        config.updateQueueLimit = IngestBench.queueLimit(slice)
        // Only the slice: a shard never needs the whole model.
        let agg = try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0, count: slice), logger: logger)
        let eps = try agg.start()
        let commands = BenchCommands()
        say("ready \(eps.model) \(eps.update) \(agg.runID) \(agg.range.lowerBound) \(agg.range.upperBound)")
        while let line = commands.next() {
            if line == "stats" {
                let s = agg.stats
                say("stats \(s.merged) \(s.received) \(s.rejectedTotal)")
            } else {
                break
            }
        }
        agg.stop()
    }
}
