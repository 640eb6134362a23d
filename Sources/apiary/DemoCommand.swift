import ApiaryCommandLine
import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import ApiaryGateway
import ApiaryLearning
import ArgumentParser
import Foundation
import Logging
import Synchronization
import ZeroMQ

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Train the digits model with an aggregator and N clients in one process, over real tcp loopback sockets.",
        discussion: """
            Uses the shared workload: 20 clients with Dirichlet(0.5) label skew and per-client delays \
            (70 % 0.2 s, 20 % 1.0 s, 10 % 5.0 s). Shows live progress; stops at the target accuracy \
            or the time limit. The clock starts once every client holds the first model.
            """
    )

    @Option(name: .long, help: "YAML config file (see Configs/demo.yaml); environment variables override it.")
    var config: String?

    @Option(name: .long, help: "Number of clients (1-20, the first N partitions of the workload); overrides demo.clients.")
    var clients: Int?

    @Option(name: .long, help: "Stop at this test accuracy; overrides demo.target_accuracy.")
    var target: Double?

    @Option(name: .long, help: "Stop after this many seconds; overrides demo.time_limit_s.")
    var timeLimit: Double?

    @Option(name: .long, help: "Multiply every client's delay by this factor (0 = no delays); overrides demo.delay_scale.")
    var delayScale: Double?

    @Flag(name: .long, help: "Print a one-line JSON summary as the last line of stdout (progress goes to stderr).")
    var json = false

    @Flag(name: .long, help: "Run without CURVE (by default the demo makes keys for the aggregator and every client in memory).")
    var insecure = false

    @Option(name: .long, help: "async (FedAsync, the default), fedbuff (buffered asynchronous: fedbuff.* and server_optimizer.* keys) or sync (synchronous FedAvg rounds, the baseline); overrides demo.mode.")
    var mode: DemoMode?

    @Option(name: .long, help: "fedasync, fedbuff or fedavg: the same as --mode async, fedbuff or sync.")
    var algorithm: Algorithm?

    /// `--mode`, or `--algorithm` in its words.
    var chosenMode: DemoMode? {
        mode ?? algorithm.map { a in
            switch a {
            case .fedasync: .async
            case .fedbuff: .fedbuff
            case .fedavg: .sync
            }
        }
    }

    @Flag(name: .long, help: "Run async, then sync, on the same workload and compare them.")
    var compare = false

    @Option(name: .long, help: "The update codec the aggregator asks clients for: float32 (default), float16, bfloat16, int8 or topk (with --algorithm fedbuff); overrides compression.codec.")
    var codec: PayloadCodec?

    @Option(name: .long, help: "Split the model across this many parameter shards (aggregators), 1 = one aggregator; overrides demo.shards.")
    var shards: Int?

    @Option(name: .long, help: "Put the clients behind this many gateways (round-robin), 0 = clients talk to the aggregator; overrides demo.gateways.")
    var gateways: Int?

    @Option(name: .long, help: "Folder for the report (index.html with the accuracy chart, series.csv, summary.json); overrides demo.report_dir (default reports/demo-<timestamp>).")
    var reportDir: String?

    @Flag(name: .long, help: "Write no report.")
    var noReport = false

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let logger = LogSetup.bootstrap(level: try Settings.logLevel(reader, default: .warning))
        var aggConfig = try Settings.aggregator(reader)
        aggConfig.training.extra = try Settings.trainingExtra(file: config)
        // The demo binds where the kernel finds room unless the config says otherwise.
        aggConfig.modelEndpoint = reader.string(forKey: "endpoints.model", default: "tcp://127.0.0.1:*")
        aggConfig.snapshotEndpoint = reader.string(forKey: "endpoints.snapshot", default: "tcp://127.0.0.1:*")
        aggConfig.updateEndpoint = reader.string(forKey: "endpoints.update", default: "tcp://127.0.0.1:*")
        aggConfig.compression = try Settings.compression(reader, codec: codec)
        let chosenCodec = aggConfig.compression.codec
        let workload = try DigitsModel.workload()
        let n = clients ?? reader.int(forKey: "demo.clients", default: workload.clientCount)
        guard (1...workload.clientCount).contains(n) else { throw ValidationError("clients must be in 1...\(workload.clientCount)") }
        let options = DemoOptions(
            clients: n,
            target: target ?? reader.double(forKey: "demo.target_accuracy", default: 0.90),
            timeLimit: timeLimit ?? reader.double(forKey: "demo.time_limit_s", default: 120),
            delayScale: delayScale ?? reader.double(forKey: "demo.delay_scale", default: 1),
            shuffleSeed: UInt64(reader.int(forKey: "data.shuffle_seed", default: 0)),
            progressEvery: reader.double(forKey: "demo.progress_interval_s", default: 0.5),
            secure: !(insecure || reader.bool(forKey: "security.insecure", default: false)),
            shards: shards ?? reader.int(forKey: "demo.shards", default: 1),
            gateways: gateways ?? reader.int(forKey: "demo.gateways", default: 0)
        )
        guard (1...16).contains(options.shards) else { throw ValidationError("shards must be in 1...16") }
        guard (0...n).contains(options.gateways) else { throw ValidationError("gateways must be in 0...\(n) (the number of clients)") }
        if options.gateways > 0 {
            guard !compare, (chosenMode ?? .async) == .async else { throw ValidationError("gateways run FedAsync: leave out --compare and --mode") }
        }
        if options.shards > 1 {
            guard !compare, (chosenMode ?? .async) != .sync else { throw ValidationError("shards run FedAsync or FedBuff (each shard flushes its own buffer): leave out --compare and --mode sync") }
        }
        let toStderr = json
        let out: @Sendable (String) -> Void = { line in
            if toStderr {
                FileHandle.standardError.write(Data((line + "\n").utf8))
            } else {
                print(line)
                FileHandle.standardOutput.synchronizeFile()
            }
        }
        let chosen = chosenMode ?? DemoMode(rawValue: reader.string(forKey: "demo.mode", default: "async")) ?? .async
        var summaries: [DemoSummary] = []
        if chosenCodec.isSparse && (compare || chosen != .fedbuff) {
            throw ValidationError("--codec topk sends sparse deltas: use it with --algorithm fedbuff (and without --compare)")
        }
        for m in compare ? [DemoMode.async, .sync] : [chosen] {
            var c = aggConfig
            var o = options
            if m == .fedbuff {
                c.buffer = try Settings.fedBuff(reader)
            }
            if m == .sync {
                c.sync = FedAvgConfig(expectedClients: n, minClients: reader.int(forKey: "sync.min_clients", default: n),
                                      roundTimeout: Settings.duration(reader, "sync.round_timeout_s", seconds: 60),
                                      optimizer: try Settings.serverOptimizer(reader))
                // Synchronous rounds wait for the slowest device: give them the workload's 60 rounds.
                o.timeLimit = timeLimit ?? reader.double(forKey: "demo.sync_time_limit_s", default: 600)
                o.maxVersions = UInt64(reader.int(forKey: "sync.max_rounds", default: 60))
            }
            summaries.append(try await FleetDemo(config: c, workload: workload, options: o, logger: logger, say: out).run())
        }
        for s in summaries { out(s.text()) }
        if summaries.count == 2, let a = summaries[0].timeToTarget, let b = summaries[1].timeToTarget {
            out(String(format: "async reached %.2f %.1fx faster than sync (%.1f s vs %.1f s)", options.target, b / a, a, b))
        }
        if !noReport {
            // Every run (async, and sync with --compare) goes on the same axes. The path is the
            // last human-readable line; with --json it goes to stderr, before the JSON line.
            let configured = reportDir ?? reader.string(forKey: "demo.report_dir").flatMap { $0.isEmpty ? nil : $0 }
            let index = try DemoReport.write(summaries, to: configured ?? DemoReport.defaultDirectory(), uniquing: configured == nil)
            out("report: \(index)")
        }
        if json {
            print(summaries.count == 1 ? summaries[0].jsonLine() : DemoSummary.comparisonJSON(summaries))
        } else if !toStderr {
            // The summaries were printed above.
        }
    }
}

enum DemoMode: String, ExpressibleByArgument, Sendable {
    case async, sync, fedbuff
}

struct DemoOptions: Sendable {
    var clients: Int
    var target: Double
    var timeLimit: Double
    var delayScale: Double
    var shuffleSeed: UInt64
    var progressEvery: Double
    var secure: Bool
    /// Parameter shards at the top (1: one aggregator) and gateways in front of the clients (0: none).
    var shards = 1
    var gateways = 0
    /// Stop after this many versions (the workload's 60 rounds for sync); nil: no limit.
    var maxVersions: UInt64? = nil
    /// Stop once the target is reached (otherwise run to the time limit, recording when it was).
    var stopAtTarget = true
    /// The lower milestone whose time is recorded too (`time_to_0.85_s` in the summary).
    var lowerTarget = 0.85
}

/// What a demo run came to; the keys of `jsonLine()` are a stable interface.
struct DemoSummary: Sendable {
    var algorithm: String
    var clients: Int
    var finalAccuracy: Double
    var timeToTarget: Double?
    var targetAccuracy: Double
    var timeTo085: Double?
    var versions: UInt64
    var updatesMerged: UInt64
    var updatesRejected: UInt64
    var meanStaleness: Double
    var maxStaleness: UInt64
    var elapsed: Double
    var shards = 1
    var gateways = 0
    /// (seconds, version, accuracy) after every evaluated version.
    var series: [(Double, UInt64, Double)]
    /// The slowest delay tier's clients: their share of all merges, and of their own updates
    /// merged (nil when there are no delays, or behind gateways, where merges are pushes).
    var slowestTier: (delay: Double, clients: Int, mergeShare: Double, mergedFraction: Double)? = nil
    /// The update codec and the bytes the aggregator received (updates, reports, all frames).
    var codec = "float32"
    var bytesReceived: UInt64 = 0

    /// One summary value: an integer, a number (printed with 4 decimals on the JSON line;
    /// null when missing) or a string.
    enum Field: Encodable {
        case int(UInt64), number(Double?), text(String)

        var json: String {
            switch self {
            case .int(let v): "\(v)"
            case .number(let d): d.map { String(format: "%.4f", $0) } ?? "null"
            case .text(let t): "\"\(t)\""
            }
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .int(let v): try c.encode(v)
            case .number(let d): if let d { try c.encode(d) } else { try c.encodeNil() }
            case .text(let t): try c.encode(t)
            }
        }
    }

    /// The summary's keys and values, in the order of `apiary demo --json` (the report's
    /// summary.json has the same keys).
    var fields: [(key: String, value: Field)] {
        [("algorithm", .text(algorithm)), ("clients", .int(UInt64(clients))), ("final_accuracy", .number(finalAccuracy)),
         ("time_to_target_s", .number(timeToTarget)), ("target_accuracy", .number(targetAccuracy)), ("time_to_0.85_s", .number(timeTo085)),
         ("versions", .int(versions)), ("updates_merged", .int(updatesMerged)), ("updates_rejected", .int(updatesRejected)),
         ("mean_staleness", .number(meanStaleness)), ("max_staleness", .int(maxStaleness)), ("elapsed_s", .number(elapsed)),
         ("shards", .int(UInt64(shards))), ("gateways", .int(UInt64(gateways))),
         ("slowest_tier_merge_share", .number(slowestTier?.mergeShare)), ("slowest_tier_merged_fraction", .number(slowestTier?.mergedFraction)),
         ("codec", .text(codec)), ("bytes_received", .int(bytesReceived))]
    }

    func jsonLine() -> String {
        "{" + fields.map { "\"\($0.key)\":\($0.value.json)" }.joined(separator: ",") + "}"
    }

    /// `{"async": {...}, "sync": {...}, "speedup_to_target": x}` for `--compare --json`.
    static func comparisonJSON(_ s: [DemoSummary]) -> String {
        var parts = s.map { "\"\($0.algorithm == Algorithm.fedavg.rawValue ? "sync" : "async")\":\($0.jsonLine())" }
        if s.count == 2, let a = s[0].timeToTarget, let b = s[1].timeToTarget {
            parts.append(String(format: "\"speedup_to_target\":%.2f", b / a))
        } else {
            parts.append("\"speedup_to_target\":null")
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    func text() -> String {
        let reached = timeToTarget.map { String(format: "reached %.2f in %.2f s", targetAccuracy, $0) }
            ?? String(format: "did not reach %.2f", targetAccuracy)
        let shape = (shards > 1 ? ", \(shards) shards" : "") + (gateways > 0 ? ", \(gateways) gateways (merges at the top are gateway pushes)" : "")
        return """
            \(algorithm): \(clients) clients\(shape), \(reached); final accuracy \(String(format: "%.4f", finalAccuracy)) \
            after \(versions) versions (\(updatesMerged) merged, \(updatesRejected) rejected, \
            staleness mean \(String(format: "%.2f", meanStaleness)) max \(maxStaleness)), \(String(format: "%.1f", elapsed)) s; \
            updates in \(codec), \(String(format: "%.2f", Double(bytesReceived) / 1_048_576)) MiB received\
            \(updatesMerged > 0 ? String(format: " (%.0f bytes per merged update)", Double(bytesReceived) / Double(updatesMerged)) : "")
            """ + (slowestTier.map { t in
                String(format: "\n  slowest tier (%d clients, %.1f s delay): %.1f %% of all merges, %.0f %% of its updates merged",
                       t.clients, t.delay, 100 * t.mergeShare, 100 * t.mergedFraction)
            } ?? "")
    }
}

/// One demo run: an aggregator (FedAsync, or FedAvg rounds when `config.sync` is set) and N
/// clients over tcp loopback in this process.
struct FleetDemo {
    let config: AggregatorConfig
    let workload: Workload
    let options: DemoOptions
    let logger: Logger
    let say: @Sendable (String) -> Void

    func run() async throws -> DemoSummary {
        var config = self.config
        let g = options.gateways
        // Softmax regression on the workload's features and classes, from zero (the digits
        // model on the shared workload).
        let layout = SoftmaxRegression.layout(featureCount: workload.dataset.featureCount, classCount: workload.dataset.classCount)
        let initial = [Float](repeating: 0, count: layout.parameterCount)
        // The demo's own keys, all in memory: one pair for the top tier (shared by its shards),
        // one per gateway (its server key toward its devices, and its client key upward), one
        // per client.
        var clientKeys: [CurveKeyPair] = []
        var gatewayKeys: [CurveKeyPair] = []
        config.insecure = !options.secure
        if options.secure {
            clientKeys = try (0..<options.clients).map { _ in try CurveKeyPair.generate() }
            gatewayKeys = try (0..<g).map { _ in try CurveKeyPair.generate() }
            var allow = AuthorizedKeys()
            if g == 0 {
                for (k, pair) in clientKeys.enumerated() { allow.authorize(key: pair.publicKey, clientID: "client-\(k)") }
            } else {
                for (i, pair) in gatewayKeys.enumerated() { allow.authorize(key: pair.publicKey, clientID: "gateway-\(i)") }
            }
            config.curve = CurveServerConfig(keyPair: try CurveKeyPair.generate(), authorizedKeys: allow)
        }

        // The top tier: one aggregator, or S shards on ipc endpoints in a temporary folder.
        var scratch: URL?
        var top: [Aggregator] = []
        if options.shards > 1 {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-demo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            scratch = dir
            let map = (0..<options.shards).map { i in
                ShardConfig.Endpoints(model: "ipc://\(dir.path)/s\(i)-model", snapshot: "ipc://\(dir.path)/s\(i)-snap", update: "ipc://\(dir.path)/s\(i)-upd")
            }
            for i in 0..<options.shards {
                var c = config
                (c.modelEndpoint, c.snapshotEndpoint, c.updateEndpoint) = (map[i].model, map[i].snapshot, map[i].update)
                c.shard = ShardConfig(index: i, map: map)
                top.append(try Aggregator(config: c, layout: layout, initialParameters: initial, logger: logger))
            }
        } else {
            top = [try Aggregator(config: config, layout: layout, initialParameters: initial, logger: logger)]
        }
        let topEndpoints = try top.map { try $0.start() }
        defer {
            top.forEach { $0.stop() }
            if let scratch { try? FileManager.default.removeItem(at: scratch) }
        }
        let aggregator = top[0]
        let context = try Context()

        // Gateways: each an aggregator for its clients and one client of the top tier (shard 0).
        var gatewayList: [Gateway] = []
        var gatewayEndpoints: [Aggregator.Endpoints] = []
        for i in 0..<g {
            var down = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                        rule: config.rule, training: config.training, publishInterval: config.publishInterval,
                                        insecure: config.curve == nil)
            var up = ClientConfig(clientID: "gateway-\(i)", modelEndpoint: topEndpoints[0].model, snapshotEndpoint: topEndpoints[0].snapshot,
                                  updateEndpoint: topEndpoints[0].update, newModelWait: .milliseconds(100), insecure: config.curve == nil)
            if let curve = config.curve {
                var allow = AuthorizedKeys()
                for k in stride(from: i, to: options.clients, by: g) { allow.authorize(key: clientKeys[k].publicKey, clientID: "client-\(k)") }
                down.curve = CurveServerConfig(keyPair: gatewayKeys[i], authorizedKeys: allow)
                up.curve = CurveClientConfig(keyPair: gatewayKeys[i], serverPublicKey: curve.keyPair.publicKey)
            }
            let gw = try Gateway(config: GatewayConfig(downstream: down, upstream: up, pushEveryMerges: 10, pushInterval: .milliseconds(500)),
                                 layout: layout, initialParameters: initial, logger: logger)
            gatewayEndpoints.append(try gw.startDownstream())
            gatewayList.append(gw)
        }
        let gatewaysRunning = gatewayList.map { gw in Task { try await gw.run() } }
        defer {
            gatewayList.forEach { $0.stop() }
            gatewaysRunning.forEach { $0.cancel() }
        }

        let joined = Atomic<Int>(0)
        var runtimes: [ClientRuntime] = []
        for k in 0..<options.clients {
            let delay = workload.delaySeconds(client: k) * options.delayScale
            let trainer = SoftmaxRegression(dataset: workload.trainSet(client: k), clientID: k, shuffleSeed: options.shuffleSeed,
                                            delay: delay > 0 ? .milliseconds(Int64(delay * 1000)) : nil)
            let (endpoints, serverKey) = g == 0 ? (topEndpoints[0], config.curve?.keyPair.publicKey)
                                                : (gatewayEndpoints[k % g], gatewayKeys.isEmpty ? nil : gatewayKeys[k % g].publicKey)
            let curve = serverKey.map { CurveClientConfig(keyPair: clientKeys[k], serverPublicKey: $0) }
            let cc = ClientConfig(clientID: "client-\(k)", modelEndpoint: endpoints.model, snapshotEndpoint: endpoints.snapshot,
                                  updateEndpoint: endpoints.update, curve: curve, insecure: curve == nil)
            runtimes.append(try ClientRuntime(config: cc, trainer: trainer, context: context, logger: logger, onEvent: { e in
                if case .joined = e { joined.add(1, ordering: .relaxed) }
            }))
        }
        /// The top tier's model: the one aggregator's, or the shards' slices side by side.
        func topModel() -> (version: UInt64, parameters: [Float])? {
            let models = top.compactMap(\.latestModel)
            guard models.count == top.count else { return nil }
            return (models.reduce(0) { $0 + $1.version }, models.flatMap(\.parameters))
        }
        let rule = switch config.algorithm {
        case .fedasync: "FedAsync alpha=\(config.rule.alpha) staleness=\(config.rule.staleness)"
        case .fedbuff: "FedBuff K=\(config.buffer!.bufferSize) staleness=\(config.rule.staleness) server step \(config.buffer!.optimizer.kind) lr=\(config.buffer!.optimizer.learningRate)"
        case .fedavg: "synchronous FedAvg rounds"
        }
        let shape = (options.shards > 1 ? ", \(options.shards) parameter shards" : "") + (g > 0 ? ", \(g) gateways" : "")
        say("apiary demo: \(rule)\(shape), \(options.clients) clients, target \(options.target), limit \(options.timeLimit) s, \(config.curve == nil ? "INSECURE (no CURVE)" : "CURVE with generated keys")")
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for r in runtimes { group.addTask { try await r.run() } }
            defer { group.cancelAll() }
            // The clock starts once every client holds the first model.
            let joinDeadline = ContinuousClock.now + .seconds(30)
            while joined.load(ordering: .relaxed) < options.clients {
                guard ContinuousClock.now < joinDeadline else { throw SettingsError("clients did not join within 30 s") }
                try await Task.sleep(for: .milliseconds(5))
            }
            let start = ContinuousClock.now
            let base = aggregator.stats
            func seconds() -> Double {
                let d = ContinuousClock.now - start
                return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            }
            var series: [(Double, UInt64, Double)] = []
            var lastVersion = UInt64.max, accuracy = 0.0
            var timeToTarget: Double?, timeTo085: Double?
            var lastPrint = -1.0
            while true {
                if let m = topModel(), m.version != lastVersion {
                    lastVersion = m.version
                    accuracy = Evaluation.accuracy(parameters: m.parameters, on: workload.testSet)
                    let t = seconds()
                    series.append((t, m.version, accuracy))
                    if timeTo085 == nil && accuracy >= options.lowerTarget { timeTo085 = t }
                    if timeToTarget == nil && accuracy >= options.target { timeToTarget = t }
                }
                let t = seconds()
                let reached = options.stopAtTarget && timeToTarget != nil
                if t - lastPrint >= options.progressEvery || reached || t >= options.timeLimit {
                    lastPrint = t
                    let s = aggregator.stats
                    say(String(format: "  t=%6.2fs  version=%5llu  merged=%5llu  rejected=%3llu  accuracy=%.4f",
                               t, s.version, s.merged - base.merged, s.rejectedTotal - base.rejectedTotal, accuracy))
                }
                if reached || t >= options.timeLimit { break }
                if let maxV = options.maxVersions, lastVersion != .max, lastVersion >= maxV { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            let s = aggregator.stats
            var summary = DemoSummary(algorithm: config.algorithm.rawValue, clients: options.clients, finalAccuracy: accuracy, timeToTarget: timeToTarget,
                                      targetAccuracy: options.target, timeTo085: timeTo085, versions: s.version,
                                      updatesMerged: s.merged, updatesRejected: s.rejectedTotal, meanStaleness: s.meanStaleness,
                                      maxStaleness: s.maxStaleness, elapsed: seconds(), shards: options.shards, gateways: g, series: series)
            summary.codec = config.compression.codec.name
            summary.bytesReceived = top.reduce(UInt64(0)) { $0 + $1.stats.bytesIn }
            // Does the slowest tier's data reach the model? (The starved-client question.)
            let delays = (0..<options.clients).map { workload.delaySeconds(client: $0) * options.delayScale }
            if g == 0, let slowest = delays.max(), slowest > 0, delays.min()! < slowest {
                let activity = aggregator.activity.clients
                let tier = (0..<options.clients).filter { delays[$0] == slowest }.map { "client-\($0)" }
                let all = activity.values.reduce(UInt64(0)) { $0 + $1.merged }
                let merged = tier.reduce(UInt64(0)) { $0 + (activity[$1]?.merged ?? 0) }
                let received = tier.reduce(UInt64(0)) { $0 + (activity[$1]?.received ?? 0) }
                summary.slowestTier = (slowest, tier.count, all == 0 ? 0 : Double(merged) / Double(all),
                                       received == 0 ? 0 : Double(merged) / Double(received))
            }
            return summary
        }
    }
}

extension Algorithm: ExpressibleByArgument {}

extension PayloadCodec: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.name) }
}
