import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryGateway
import ApiaryLearning
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// A whole federation in one process over real tcp loopback (or ipc) sockets: an aggregator
/// (FedAsync, FedBuff, or FedAvg rounds when `config.sync` is set), optionally split into
/// parameter shards and fronted by gateways, and one `ClientRuntime` per member. It runs until
/// the global model reaches a target accuracy or a time limit, and says what it came to.
///
/// `apiary demo` and the benchmarks run the digits workload with it; test your own trainer by
/// handing it your trainers and an evaluation of the global model:
///
///     let fleet = InProcessFleet(config: config, layout: myLayout, initialParameters: start,
///                                members: trainers.map { .init(trainer: $0) },
///                                options: .init(target: 0.9, timeLimit: 60), logger: logger) { parameters in
///         accuracy(of: parameters, on: heldOut)
///     }
///     let summary = try await fleet.run()
///     #expect(summary.timeToTarget != nil)
///
/// The config's endpoints are bound as given (use `tcp://127.0.0.1:*` to let the kernel pick);
/// with `options.secure`, fresh CURVE keys for every party are made in memory.
public struct InProcessFleet {
    /// How a run is shaped and when it stops.
    public struct Options: Sendable {
        /// Stop at this accuracy of the global model (see `stopAtTarget`).
        public var target: Double
        /// Stop after this many seconds (counted from the moment every member holds the first model).
        public var timeLimit: Double
        /// Seconds between progress lines.
        public var progressEvery: Double
        /// CURVE with keys made in memory (false: no encryption, `insecure` endpoints).
        public var secure: Bool
        /// Parameter shards at the top (1: one aggregator) and gateways in front of the clients (0: none).
        public var shards: Int
        public var gateways: Int
        /// Stop after this many versions (the workload's 60 rounds for sync); nil: no limit.
        public var maxVersions: UInt64?
        /// Stop once the target is reached (otherwise run to the time limit, recording when it was).
        public var stopAtTarget: Bool
        /// The lower milestone whose time is recorded too (`time_to_0.85_s` in the summary).
        public var lowerTarget: Double

        public init(target: Double, timeLimit: Double, progressEvery: Double = 1e9, secure: Bool = false, shards: Int = 1,
                    gateways: Int = 0, maxVersions: UInt64? = nil, stopAtTarget: Bool = true, lowerTarget: Double = 0.85) {
            self.target = target
            self.timeLimit = timeLimit
            self.progressEvery = progressEvery
            self.secure = secure
            self.shards = shards
            self.gateways = gateways
            self.maxVersions = maxVersions
            self.stopAtTarget = stopAtTarget
            self.lowerTarget = lowerTarget
        }
    }

    /// One client of the fleet (`client-K`, K its position in `members`).
    public struct Member: Sendable {
        public var trainer: any Trainer
        /// The delay the trainer adds to every local run, in seconds (0: none); only used to
        /// report how the slowest tier fares in `FleetSummary.slowestTier`.
        public var delaySeconds: Double

        public init(trainer: any Trainer, delaySeconds: Double = 0) {
            self.trainer = trainer
            self.delaySeconds = delaySeconds
        }
    }

    public let config: AggregatorConfig
    public let layout: ParameterLayout
    public let initialParameters: [Float]
    public let members: [Member]
    public let options: Options
    let logger: Logger
    let say: @Sendable (String) -> Void
    let evaluate: @Sendable ([Float]) -> Double
    /// Shown in the summary when some members attack.
    public var attackLabel: String?

    /// A fleet of `members` training the model of `layout` from `initialParameters`;
    /// `evaluate` scores every new global model (higher is better, compared with
    /// `options.target`); progress lines go to `say`.
    public init(config: AggregatorConfig, layout: ParameterLayout, initialParameters: [Float], members: [Member], options: Options,
                logger: Logger, say: @escaping @Sendable (String) -> Void = { _ in }, evaluate: @escaping @Sendable ([Float]) -> Double) {
        self.config = config
        self.layout = layout
        self.initialParameters = initialParameters
        self.members = members
        self.options = options
        self.logger = logger
        self.say = say
        self.evaluate = evaluate
    }

    /// The first `clients` clients of `workload`, each training softmax regression on its own
    /// partition with the workload's delay times `delayScale`, from zero; scored by test accuracy.
    /// With `attack`, the clients it picks attack (`AttackPlan`).
    public init(config: AggregatorConfig, workload: Workload, clients: Int, delayScale: Double = 1, shuffleSeed: UInt64 = 0,
                attack: AttackPlan? = nil, options: Options, logger: Logger, say: @escaping @Sendable (String) -> Void = { _ in }) {
        let layout = SoftmaxRegression.layout(featureCount: workload.dataset.featureCount, classCount: workload.dataset.classCount)
        let members = Self.workloadMembers(workload: workload, clients: clients, delayScale: delayScale, shuffleSeed: shuffleSeed, attack: attack)
        let testSet = workload.testSet
        self.init(config: config, layout: layout, initialParameters: [Float](repeating: 0, count: layout.parameterCount),
                  members: members, options: options, logger: logger, say: say) { Evaluation.accuracy(parameters: $0, on: testSet) }
        attackLabel = attack.map { "\($0.kind.rawValue) \($0.attackers(clients: clients).count)/\(clients)" }
    }

    /// Starts everything, waits (up to 30 s) until every member holds the first model, then
    /// trains until the target, the time limit or `maxVersions`; stops everything it started.
    public func run() async throws -> FleetSummary {
        var config = self.config
        let g = options.gateways
        let clientCount = members.count
        let layout = self.layout
        let initial = initialParameters
        // The fleet's own keys, all in memory: one pair for the top tier (shared by its shards),
        // one per gateway (its server key toward its devices, and its client key upward), one
        // per client.
        var clientKeys: [CurveKeyPair] = []
        var gatewayKeys: [CurveKeyPair] = []
        config.insecure = !options.secure
        if options.secure {
            clientKeys = try (0..<clientCount).map { _ in try CurveKeyPair.generate() }
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
                for k in stride(from: i, to: clientCount, by: g) { allow.authorize(key: clientKeys[k].publicKey, clientID: "client-\(k)") }
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
        let joinSignal = ChangeSignal()
        var runtimes: [ClientRuntime] = []
        for (k, member) in members.enumerated() {
            let (endpoints, serverKey) = g == 0 ? (topEndpoints[0], config.curve?.keyPair.publicKey)
                                                : (gatewayEndpoints[k % g], gatewayKeys.isEmpty ? nil : gatewayKeys[k % g].publicKey)
            let curve = serverKey.map { CurveClientConfig(keyPair: clientKeys[k], serverPublicKey: $0) }
            let cc = ClientConfig(clientID: "client-\(k)", modelEndpoint: endpoints.model, snapshotEndpoint: endpoints.snapshot,
                                  updateEndpoint: endpoints.update, curve: curve, insecure: curve == nil)
            runtimes.append(try ClientRuntime(config: cc, trainer: member.trainer, context: context, logger: logger, onEvent: { e in
                if case .joined = e {
                    joined.add(1, ordering: .relaxed)
                    joinSignal.notify()
                }
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
            + (config.buffer!.privacy.mode == .central ? ", central DP clip=\(config.buffer!.privacy.clip) noise_multiplier=\(config.buffer!.privacy.noiseMultiplier) delta=\(config.buffer!.privacy.delta)" : "")
        case .fedavg: "synchronous FedAvg rounds"
        }
        let defences = (config.buffer.map { $0.aggregate == .mean ? "" : ", aggregate \($0.aggregate.rawValue)\($0.aggregate == .trimmedMean ? " \($0.trimFraction)" : "")" } ?? "")
            + (config.maxUpdateNorm.map { ", update norm bound \($0) (\(config.normPolicy.rawValue))" } ?? "")
            + (config.anomaly.map { ", anomaly filter (warm-up \($0.warmup), window \($0.window), thresholds \($0.normThreshold)/\($0.cosineThreshold))" } ?? "")
            + (attackLabel.map { ", ATTACKING: \($0)" } ?? "")
        let shape = defences + (options.shards > 1 ? ", \(options.shards) parameter shards" : "") + (g > 0 ? ", \(g) gateways" : "")
        say("apiary demo: \(rule)\(shape), \(clientCount) clients, target \(options.target), limit \(options.timeLimit) s, \(config.curve == nil ? "INSECURE (no CURVE)" : "CURVE with generated keys")")
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for r in runtimes { group.addTask { try await r.run() } }
            defer { group.cancelAll() }
            // The clock starts once every client holds the first model.
            let joinDeadline = ContinuousClock.now + .seconds(30)
            while true {
                let seen = joinSignal.generation
                if joined.load(ordering: .relaxed) >= clientCount { break }
                guard ContinuousClock.now < joinDeadline else { throw Timeout(what: "all \(clientCount) clients to join (30 s)") }
                await joinSignal.wait(after: seen, until: joinDeadline)
                try Task.checkCancellation()
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
                // A new model wakes the loop (the aggregator announces each broadcast); so does
                // the next progress line or the time limit. With shards, the other shards' slices
                // may land after shard 0's announcement: look again within 10 ms.
                let changes = aggregator.statsChanged.generation
                if let m = topModel(), m.version != lastVersion {
                    lastVersion = m.version
                    accuracy = evaluate(m.parameters)
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
                var wake = start + .seconds(min(lastPrint + options.progressEvery, options.timeLimit))
                if top.count > 1 { wake = min(wake, .now + .milliseconds(10)) }
                await aggregator.statsChanged.wait(after: changes, until: wake)
                try Task.checkCancellation()
            }
            let s = aggregator.stats
            var summary = FleetSummary(algorithm: config.algorithm.rawValue, clients: clientCount, finalAccuracy: accuracy, timeToTarget: timeToTarget,
                                       targetAccuracy: options.target, timeTo085: timeTo085, versions: s.version,
                                       updatesMerged: s.merged, updatesRejected: s.rejectedTotal, meanStaleness: s.meanStaleness,
                                       maxStaleness: s.maxStaleness, elapsed: seconds(), shards: options.shards, gateways: g, series: series)
            summary.codec = config.compression.codec.name
            summary.privacy = s.privacy
            summary.attack = attackLabel
            summary.bytesReceived = top.reduce(UInt64(0)) { $0 + $1.stats.bytesIn }
            // Does the slowest tier's data reach the model? (The starved-client question.)
            let delays = members.map(\.delaySeconds)
            if g == 0, let slowest = delays.max(), slowest > 0, delays.min()! < slowest {
                let activity = aggregator.activity.clients
                let tier = (0..<clientCount).filter { delays[$0] == slowest }.map { "client-\($0)" }
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
