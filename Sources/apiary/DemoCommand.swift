import ApiaryCommandLine
import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import ApiaryLearning
import ApiaryTesting
import ArgumentParser
import Configuration
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

    @Flag(name: .long, help: "Central differential privacy (implies --algorithm fedbuff): clip every delta, noise each buffer's sum, state the epsilon spent; privacy.* keys (docs/OPERATIONS.md), privacy.mode central.")
    var dp = false

    @Flag(name: .long, help: "Write no report.")
    var noReport = false

    @Option(name: .long, help: "Let some clients attack: sign-flip (the honest step negated, x4), scaling (x10), noise, label-flip or little-is-enough (Baruch et al. 2019); see --attackers, --defence.")
    var attack: AttackKind?

    @Option(name: .long, help: "The share of the clients that attack, in (0, 1) (default 0.2).")
    var attackers: Double?

    @Option(name: .long, help: "none, norm (clip updates to limits.max_update_norm, default \(Defence.defaultNormBound)), anomaly (FedAsync's anomaly filter, robust.anomaly.*), median or trimmed-mean (FedBuff's robust statistics; fedbuff.trim_fraction defaults to \(Defence.defaultTrimFraction) here); overrides the config's.")
    var defence: Defence?

    func run() async throws {
        let reader = try await Settings.reader(file: config)
        let logger = LogSetup.bootstrap(level: try Settings.logLevel(reader, default: .warning))
        var aggConfig = try AggregatorConfig(reader: reader)
        aggConfig.training.extra = try Settings.trainingExtra(file: config)
        // The demo binds where the kernel finds room unless the config says otherwise.
        aggConfig.modelEndpoint = reader.string(forKey: "endpoints.model", default: "tcp://127.0.0.1:*")
        aggConfig.snapshotEndpoint = reader.string(forKey: "endpoints.snapshot", default: "tcp://127.0.0.1:*")
        aggConfig.updateEndpoint = reader.string(forKey: "endpoints.update", default: "tcp://127.0.0.1:*")
        if let codec { aggConfig.compression.codec = codec }
        let chosenCodec = aggConfig.compression.codec
        let workload = try DigitsModel.workload()
        let n = clients ?? reader.int(forKey: "demo.clients", default: workload.clientCount)
        guard (1...workload.clientCount).contains(n) else { throw ValidationError("clients must be in 1...\(workload.clientCount)") }
        let delayScale = self.delayScale ?? reader.double(forKey: "demo.delay_scale", default: 1)
        let shuffleSeed = UInt64(reader.int(forKey: "data.shuffle_seed", default: 0))
        let options = InProcessFleet.Options(
            target: target ?? reader.double(forKey: "demo.target_accuracy", default: 0.90),
            timeLimit: timeLimit ?? reader.double(forKey: "demo.time_limit_s", default: 120),
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
        var chosen = chosenMode ?? DemoMode(rawValue: reader.string(forKey: "demo.mode", default: "async")) ?? .async
        if dp {
            guard !compare, chosenMode == nil || chosenMode == .fedbuff, options.shards == 1, options.gateways == 0 else {
                throw ValidationError("--dp runs fedbuff on one aggregator: leave out --compare, --mode/--algorithm other than fedbuff, --shards and --gateways")
            }
            chosen = .fedbuff
        }
        if attackers != nil && attack == nil { throw ValidationError("--attackers needs --attack") }
        let attackPlan = attack.map { AttackPlan(kind: $0, fraction: attackers ?? 0.2, seed: shuffleSeed) }
        if let e = attackPlan?.validationError() { throw ValidationError(e) }
        if let defence {
            guard !compare, !dp, options.shards == 1, options.gateways == 0 else {
                throw ValidationError("--defence runs on one aggregator: leave out --compare, --dp, --shards and --gateways")
            }
            switch defence {
            case .median, .trimmedMean:
                guard chosenMode == nil || chosenMode == .fedbuff else { throw ValidationError("--defence \(defence.rawValue) is a fedbuff statistic: leave out --mode/--algorithm or say fedbuff") }
                chosen = .fedbuff
            case .anomaly:
                guard chosenMode == nil || chosenMode == .async else { throw ValidationError("--defence anomaly filters fedasync updates: leave out --mode/--algorithm or say async") }
                chosen = .async
            case .none, .norm:
                break
            }
        }
        var summaries: [FleetSummary] = []
        if chosenCodec.isSparse && (compare || chosen != .fedbuff) {
            throw ValidationError("--codec topk sends sparse deltas: use it with --algorithm fedbuff (and without --compare)")
        }
        for m in compare ? [DemoMode.async, .sync] : [chosen] {
            var c = aggConfig
            var o = options
            if m == .fedbuff {
                c.buffer = try FedBuffConfig(reader: reader)
                if dp {
                    c.buffer?.privacy.mode = .central
                    // Central DP takes one delta per client per buffer: a buffer larger than
                    // the fleet could only close by max_wait_s.
                    if let k = c.buffer?.bufferSize, k > n {
                        c.buffer?.bufferSize = n
                        out("apiary demo: --dp with \(n) clients: fedbuff.buffer_size \(k) lowered to \(n) (one delta per client per buffer)")
                    }
                    if let e = c.buffer?.validationError() { throw SettingsError(e) }
                }
            }
            if let defence {
                defence.apply(to: &c, normBound: c.maxUpdateNorm, trimFraction: reader.double(forKey: "fedbuff.trim_fraction"),
                              anomaly: defence == .anomaly ? try AnomalyConfig(reader: reader) : AnomalyConfig())
                if let e = c.validationError() { throw SettingsError(e) }
            }
            if m == .sync {
                c.sync = try FedAvgConfig(reader: reader, expectedClients: n)
                // Synchronous rounds wait for the slowest device: give them the workload's 60 rounds.
                o.timeLimit = timeLimit ?? reader.double(forKey: "demo.sync_time_limit_s", default: 600)
                o.maxVersions = UInt64(reader.int(forKey: "sync.max_rounds", default: 60))
            }
            summaries.append(try await InProcessFleet(config: c, workload: workload, clients: n, delayScale: delayScale, shuffleSeed: shuffleSeed,
                                                      attack: attackPlan, options: o, logger: logger, say: out).run())
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
            print(summaries.count == 1 ? summaries[0].jsonLine() : FleetSummary.comparisonJSON(summaries))
        } else if !toStderr {
            // The summaries were printed above.
        }
    }
}

enum DemoMode: String, ExpressibleByArgument, Sendable {
    case async, sync, fedbuff
}

extension Algorithm: ExpressibleByArgument {}

extension PayloadCodec: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.name) }
}

extension AttackKind: ExpressibleByArgument {}

extension Defence: ExpressibleByArgument {}
