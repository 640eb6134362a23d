import ApiaryCommandLine
import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import ArgumentParser
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// fleet: the most clients one aggregator process holds connected and serving updates, with
/// its RSS and merge rate at that size. Clients are lightweight raw socket pairs (SUB for the
/// receipts, PUSH for updates) in a few child processes (`apiary bench fleet-clients`), so
/// that this process holds only the aggregator and its 2 connections per client.
enum FleetBench {
    struct Case {
        var target: Int
        var parameters: Int
        var clientsPerProcess: Int
        var rateSeconds: Double
        var serveTimeout: Double
        var ioThreads: Int
    }

    static func run(_ c: Case, logger: Logger, progress: (String) -> Void) -> BenchResult {
        progress("fleet/\(c.target)")
        do {
            return try measure(c, logger: logger)
        } catch {
            return .failed("fleet/\(c.target)", group: "fleet", unit: "clients", boundUnit: "clients", error: "\(error)")
        }
    }

    static func measure(_ c: Case, logger: Logger) throws -> BenchResult {
        let limit = FileLimit.raiseToHard()
        let rssBefore = ProcStatus.rss()
        let layout = try BenchModel.layout(c.parameters)
        var config = BenchModel.aggregatorConfig()
        config.ioThreads = c.ioThreads
        let agg = try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0, count: c.parameters), logger: logger)
        let eps = try agg.start()
        defer { agg.stop() }

        // Client processes first (each holds 4 descriptors per client), then the budget.
        let processes = max(1, (c.target + c.clientsPerProcess - 1) / c.clientsPerProcess)
        var children: [BenchChild] = []
        defer { for ch in children { ch.stop(grace: 3) } }
        for _ in 0..<processes {
            children.append(try BenchChild(arguments: ["bench", "fleet-clients", "--model", eps.model, "--update", eps.update,
                                                       "--run-id", "\(agg.runID)", "--parameters", "\(c.parameters)"]))
        }
        for ch in children {
            guard ch.expect("ready", timeout: 30) != nil else { throw BenchError.failed("a fleet-clients process did not start") }
        }
        let baseFiles = ProcStatus.openFileCount()
        // Each client costs this process two accepted connections (PUB and PULL).
        let capacity = (limit.soft - baseFiles - 16) / 2
        let n = min(c.target, capacity)
        let perChild = (n + processes - 1) / processes
        var first = 0
        for ch in children {
            let count = min(perChild, n - first)
            ch.send("connect \(first) \(count)")
            first += count
        }
        var connected = 0
        var connectErrors: [String] = []
        for ch in children {
            guard let line = ch.expect("connected", timeout: 120) else { throw BenchError.failed("a fleet-clients process did not connect") }
            let parts = line.split(separator: " ", maxSplits: 2)
            connected += Int(parts[1]) ?? 0
            if parts.count > 2 { connectErrors.append(String(parts[2])) }
        }
        // Let the connections be accepted and the receipt subscriptions reach the PUB socket.
        let settle = benchNow()
        while ProcStatus.openFileCount() - baseFiles < 2 * connected && seconds(since: settle) < 30 { usleep(500_000) }
        usleep(500_000)
        let held = (ProcStatus.openFileCount() - baseFiles) / 2

        let serveStart = benchNow()
        for ch in children { ch.send("serve \(c.serveTimeout)") }
        var served = 0
        for ch in children {
            guard let line = ch.expect("served", timeout: c.serveTimeout + 60) else { throw BenchError.failed("a fleet-clients process did not finish serving") }
            served += Int(line.split(separator: " ")[1]) ?? 0
        }
        let serveSeconds = seconds(since: serveStart)
        let rssServed = ProcStatus.rss()

        let m0 = agg.stats.merged, t0 = benchNow()
        for ch in children { ch.send("rate \(c.rateSeconds)") }
        var rateReceipts = 0
        for ch in children {
            guard let line = ch.expect("rate", timeout: c.rateSeconds + 60) else { throw BenchError.failed("a fleet-clients process did not finish the rate phase") }
            rateReceipts += Int(line.split(separator: " ")[1]) ?? 0
        }
        let m1 = agg.stats.merged
        let mergeRate = Double(m1 - m0) / seconds(since: t0)
        let rssEnd = ProcStatus.rss()
        let rss = max(rssServed, rssEnd)
        let clientRSS = children.map { ProcStatus.rss(pid: $0.pid) }.reduce(0, +)
        // A gentle end: the aggregator drains what is in flight, the clients exit, and the
        // aggregator is stopped only once every connection is gone. (libzmq 4.3.4 aborted
        // here once, "!_io_error (stream_engine_base.cpp:331)", when the aggregator was
        // stopped with thousands of connections still open: its heartbeat timer calls
        // out_event on an engine whose input had already failed.)
        var lastReceived = agg.stats.received, quietSince = benchNow()
        let drainStart = benchNow()
        while seconds(since: quietSince) < 0.5 && seconds(since: drainStart) < 20 {
            usleep(50_000)
            let r = agg.stats.received
            if r != lastReceived { (lastReceived, quietSince) = (r, benchNow()) }
        }
        for ch in children { ch.send("quit") }
        for ch in children { ch.stop(grace: 10) }
        let closeStart = benchNow()
        while ProcStatus.openFileCount() - baseFiles > 16 && seconds(since: closeStart) < 30 { usleep(200_000) }

        var why: String?
        if n < c.target {
            why = "RLIMIT_NOFILE is \(limit.soft) (hard \(limit.hard), not raisable here); this process already had \(baseFiles) descriptors open and needs 2 per client, so at most \(capacity) clients fit"
        } else if served < n {
            why = "\(n - served) of \(n) clients got no receipt within \(c.serveTimeout) s"
        }
        if !connectErrors.isEmpty { why = (why.map { $0 + "; " } ?? "") + "client processes: " + connectErrors.joined(separator: "; ") }
        let goal = c.target >= 10_000
        return BenchResult(
            name: "fleet/\(c.target)", group: "fleet", figure: Double(served), unit: "clients (connected and served: got a receipt)",
            bound: Double(capacity), boundUnit: "clients (2 descriptors each within this process's RLIMIT_NOFILE)",
            ratio: Double(served) / Double(capacity), ratioMeaning: "figure / bound (1 = every client the descriptor limit allows)",
            goal: goal ? "figure >= 10000" : nil, met: goal ? served >= 10_000 : nil,
            params: ["target": .int(c.target), "attempted": .int(n), "connected": .int(connected), "held_connections": .int(held),
                     "aggregator_rss_mib": .double(mib(rss)), "aggregator_rss_growth_mib": .double(mib(rss - rssBefore)),
                     "aggregator_kib_per_client": .double(Double(rss - rssBefore) / 1024 / Double(max(1, served))),
                     "merge_rate_per_s": .double(mergeRate), "rate_phase_receipts": .int(rateReceipts),
                     "serve_seconds": .double(serveSeconds), "client_processes": .int(processes),
                     "client_processes_rss_mib": .double(mib(clientRSS)), "update_parameters": .int(c.parameters),
                     "open_file_limit": .int(limit.soft), "open_file_hard_limit": .int(limit.hard), "io_threads": .int(c.ioThreads)],
            note: why)
    }
}

/// `apiary bench fleet-clients`: holds a share of the fleet's raw client socket pairs and
/// drives them on commands read from stdin (connect FIRST COUNT, serve TIMEOUT, rate SECONDS,
/// quit), answering on stdout.
struct BenchFleetClientsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-clients", abstract: "Helper of `apiary bench`: a share of the fleet benchmark's clients.", shouldDisplay: false)

    @Option var model: String
    @Option var update: String
    @Option var runId: UInt64
    @Option var parameters: Int
    @Option var threads: Int = 2

    final class Shared: Sendable {
        let phase = Atomic<Int>(0)  // 1 connect, 2 serve, 3 rate, 4 quit
        let range = Mutex<(first: Int, count: Int)>((0, 0))
        let deadline = Atomic<UInt64>(0)
        let acks = BenchCounter()
        let created = BenchCounter()
        let receipted = BenchCounter()
        let rateReceipts = BenchCounter()
        let error = Mutex<String?>(nil)

        func wait(for p: Int) -> Bool {
            while phase.load(ordering: .acquiring) < p { usleep(2_000) }
            return phase.load(ordering: .acquiring) == p
        }
    }

    func run() throws {
        FileLimit.raiseToHard()
        _ = LogSetup.bootstrap(level: .error)
        let shared = Shared()
        let source = try IngestBench.UpdateSource(runID: runId, parameters: parameters)
        let (model, update, workers) = (self.model, self.update, max(1, threads))
        let pool = BenchThreads(workers, name: "fleet-worker") { w in
            Self.worker(w, of: workers, shared: shared, source: source, model: model, update: update)
        }
        let commands = BenchCommands()
        say("ready")
        func advance(_ p: Int) {
            shared.acks.store(0)
            shared.phase.store(p, ordering: .releasing)
            while shared.acks.load < workers { usleep(2_000) }
        }
        while let line = commands.next() {
            let parts = line.split(separator: " ")
            switch parts.first {
            case "connect":
                shared.range.withLock { $0 = (Int(parts[1])!, Int(parts[2])!) }
                advance(1)
                say("connected \(shared.created.load)" + (shared.error.withLock { $0 }.map { " \($0)" } ?? ""))
            case "serve":
                shared.deadline.store(benchNow() + UInt64(Double(parts[1])! * 1e9), ordering: .relaxed)
                advance(2)
                say("served \(shared.receipted.load)")
            case "rate":
                shared.deadline.store(benchNow() + UInt64(Double(parts[1])! * 1e9), ordering: .relaxed)
                advance(3)
                say("rate \(shared.rateReceipts.load)")
            default:
                shared.phase.store(4, ordering: .releasing)
                _ = pool.join(timeout: 10)
                return
            }
        }
        shared.phase.store(4, ordering: .releasing)
        _ = pool.join(timeout: 10)
    }

    static func worker(_ w: Int, of workers: Int, shared: Shared, source: IngestBench.UpdateSource, model: String, update: String) {
        guard shared.wait(for: 1) else { return }
        let (first, count) = shared.range.withLock { $0 }
        var subs: [Socket] = [], pushes: [Socket] = [], ids: [String] = []
        let poller = Poller()
        do {
            let context = try Context(ioThreads: 1)
            for i in stride(from: w, to: count, by: workers) {
                if shared.error.withLock({ $0 }) != nil { break }
                let id = "fleet-\(first + i)"
                let sub = try context.socket(.sub)
                try sub.set(.linger, 0)
                try sub.set(.subscribe, Topic.receipt(clientID: id))
                let push = try context.socket(.push)
                try push.set(.linger, 0)
                try push.set(.sendHighWaterMark, 4)
                try sub.connect(model)
                try push.connect(update)
                subs.append(sub)
                pushes.append(push)
                ids.append(id)
                poller.add(sub)
                shared.created.add()
                // Pace the connections (about 2,000 clients a second over all helper
                // threads): the listening sockets have libzmq's backlog of 100, and a client
                // whose connection overflows it waits out the 30 s handshake timeout.
                if ids.count % 5 == 0 { usleep(20_000) }
            }
        } catch {
            shared.error.withLock { if $0 == nil { $0 = "after \(shared.created.load) clients: \(error)" } }
        }
        shared.acks.add()
        defer {
            for s in subs { s.close() }
            for p in pushes { p.close() }
        }
        var seq = [UInt64](repeating: 1, count: ids.count)
        var got = [Bool](repeating: false, count: ids.count)
        var lastSend = [UInt64](repeating: 0, count: ids.count)

        func send(_ j: Int) {
            if (try? pushes[j].send(multipart: source.message(client: ids[j], seq: seq[j]), dontWait: true)) == true {
                lastSend[j] = benchNow()
            }
        }
        /// Reads every waiting receipt; calls `onReceipt(j)` for one that answers the current seq.
        func pump(_ onReceipt: (Int) -> Void) {
            guard (try? poller.poll(timeoutMilliseconds: 20)) ?? 0 > 0 else { return }
            for j in subs.indices where poller.isReadable(j) {
                while let m = try? subs[j].receiveMultipart(dontWait: true, maxFrames: 4) {
                    guard let r = try? m.withFrameBytes({ f throws(WireError) in try Codec.decodeReceipt(f) }) else { continue }
                    if r.seq == seq[j] { onReceipt(j) }
                }
            }
        }

        // Serve: every client pushes one update and waits for its receipt, resending (same
        // seq; the aggregator answers a duplicate with the first outcome) after 2 s.
        guard shared.wait(for: 2) else { return }
        for j in ids.indices { send(j) }
        var left = ids.count
        let deadline = shared.deadline.load(ordering: .relaxed)
        while left > 0 && benchNow() < deadline {
            pump { j in
                if !got[j] {
                    got[j] = true
                    left -= 1
                    shared.receipted.add()
                }
            }
            let now = benchNow()
            for j in ids.indices where !got[j] && now &- lastSend[j] > 2_000_000_000 { send(j) }
        }
        shared.acks.add()

        // Rate: each client keeps one update in flight; the next goes out on the receipt.
        guard shared.wait(for: 3) else { return }
        let end = shared.deadline.load(ordering: .relaxed)
        for j in ids.indices {
            seq[j] += 1
            send(j)
        }
        while benchNow() < end {
            pump { j in
                shared.rateReceipts.add()
                seq[j] += 1
                send(j)
            }
        }
        shared.acks.add()
        _ = shared.wait(for: 4)
    }
}
