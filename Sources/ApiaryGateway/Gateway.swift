import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import Logging
import ServiceLifecycle
import Synchronization
import ZeroMQ

/// How a gateway serves its devices and reaches the tier above.
public struct GatewayConfig: Sendable {
    /// The aggregator the devices connect to (relay mode is switched on by the gateway).
    public var downstream: AggregatorConfig
    /// The gateway as one client of the tier above (an aggregator, a shard, or a gateway).
    public var upstream: ClientConfig
    /// Push the local progress upward after this many local merges...
    public var pushEveryMerges: UInt64
    /// ...or once this long passed with at least one local merge.
    public var pushInterval: Duration

    public init(downstream: AggregatorConfig, upstream: ClientConfig, pushEveryMerges: UInt64 = 20, pushInterval: Duration = .seconds(2)) {
        self.downstream = downstream
        self.upstream = upstream
        self.pushEveryMerges = pushEveryMerges
        self.pushInterval = pushInterval
    }
}

/// An IoT gateway (hierarchical FL): an aggregator for the devices behind it and a single
/// client to the tier above.
///
/// - Downward: every newer upstream model is relayed to the devices as a new local version:
///   the local model is rebased onto it, keeping the progress the devices made since the
///   previous one (`x = g_new + (x - g_old)`), then broadcast and served to snapshot requests.
/// - Locally: device updates are merged on arrival with FedAsync, against local versions.
/// - Upward: every `pushEveryMerges` local merges, or after `pushInterval` with at least one,
///   the local model is pushed as an update tagged with the upstream version it was rebased
///   on, so the tier above weighs it by its true staleness. Receipts, resends and dedup are
///   those of any client.
/// - When the uplink drops, devices keep training and the gateway keeps merging; pushes wait
///   (bounded by `max_pending_updates`) and are resent, and the next upstream model is
///   rebased onto when the link returns.
/// - A push the tier above does not merge (rejected: too stale after a long outage, say)
///   hands its progress back (`Aggregator.restore(progress:in:)`), so a later push carries it.
public final class Gateway: Service, Sendable {
    public let aggregator: Aggregator
    public let uplink: ClientRuntime
    private let stopping = StopFlag()

    public init(config: GatewayConfig, layout: ParameterLayout, initialParameters: [Float], logger: Logger) throws {
        var down = config.downstream
        down.relay = true
        guard config.pushEveryMerges >= 1 else { throw GatewayError.invalidConfig("gateway.push_every_merges must be at least 1") }
        aggregator = try Aggregator(config: down, layout: layout, initialParameters: initialParameters, logger: logger)
        let view = UplinkView()
        let flag = stopping
        let pushes = PushLedger()
        let trainer = RelayTrainer(layout: layout, aggregator: aggregator, uplink: view, pushes: pushes, everyMerges: config.pushEveryMerges,
                                   interval: config.pushInterval, stopping: flag)
        let agg = aggregator
        let log = logger
        let runtime = try ClientRuntime(config: config.upstream, trainer: trainer, logger: logger) { event in
            switch event {
            case .updateQueued(let seq, let round):
                pushes.bind(round: round, to: seq)
            case .updateDone(let seq, let rejected):
                guard let delta = pushes.take(seq: seq), !rejected.isEmpty else { return }
                // Not merged up there (too stale after a long outage, say): keep its progress
                // for the next push instead of dropping it at the next rebase.
                log.info("push not merged upstream; its progress goes up with the next one", metadata: ["seq": "\(seq)"])
                Task { await agg.restore(progress: delta, in: rejected) }
            case .joined, .modelUpdated:
                view.modelChanged.notify()
            default:
                break
            }
        }
        uplink = runtime
        view.runtime.withLock { $0 = runtime }
    }

    /// Starts the downstream aggregator (returns its endpoints); `run()` does this itself.
    @discardableResult
    public func startDownstream() throws -> Aggregator.Endpoints { try aggregator.start() }

    /// Serves the devices and follows the tier above until cancelled, `stop()`, or a
    /// graceful shutdown (SIGTERM); throws when the upstream model does not fit.
    public func run() async throws {
        if aggregator.endpoints == nil { try aggregator.start() }
        do {
            try await withGracefulShutdownHandler {
                try await uplink.run()
            } onGracefulShutdown: {
                self.stop()
            }
        } catch {
            await aggregator.shutdown()
            throw error
        }
        await aggregator.shutdown()
    }

    /// Stops pushing and following upstream; `run()` then stops the downstream aggregator.
    public func stop() {
        stopping.set()
        uplink.stop()
    }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
    /// Announces the stop to waits.
    let signal = ChangeSignal()

    var isSet: Bool { value.load(ordering: .acquiring) }

    func set() {
        value.store(true, ordering: .releasing)
        signal.notify()
    }
}

/// The progress each push carries (`RelayProgress.delta`), from training round to update seq
/// to its receipts; an entry lives until every aggregator up there answered the push.
final class PushLedger: Sendable {
    private struct State {
        var byRound: [Int: [Float]] = [:]
        var bySeq: [UInt64: [Float]] = [:]
    }
    private let state = Mutex(State())

    func record(round: Int, delta: [Float]?) {
        guard let delta else { return }
        state.withLock { $0.byRound[round] = delta }
    }

    func bind(round: Int, to seq: UInt64) {
        state.withLock { s in
            if let d = s.byRound.removeValue(forKey: round) { s.bySeq[seq] = d }
        }
    }

    func take(seq: UInt64) -> [Float]? {
        state.withLock { $0.bySeq.removeValue(forKey: seq) }
    }
}

/// The uplink runtime, known to its trainer once both exist.
final class UplinkView: Sendable {
    let runtime = Mutex<ClientRuntime?>(nil)
    /// Announces each model the uplink adopts (joined or updated).
    let modelChanged = ChangeSignal()

    var modelKey: (runID: UInt64, version: UInt64)? {
        runtime.withLock { $0 }?.currentModel.map { ($0.runID, $0.version) }
    }
}

/// The gateway's "training": rebase onto the upstream model, let the devices make progress,
/// hand the progress over as the update.
final class RelayTrainer: Trainer, Sendable {
    let layout: ParameterLayout
    let aggregator: Aggregator
    let uplink: UplinkView
    let pushes: PushLedger
    let everyMerges: UInt64
    let interval: Duration
    let stopping: StopFlag
    private let rebased = Mutex<(runID: UInt64, version: UInt64)?>(nil)
    private let lastPush = Mutex<ContinuousClock.Instant>(.now)

    init(layout: ParameterLayout, aggregator: Aggregator, uplink: UplinkView, pushes: PushLedger, everyMerges: UInt64, interval: Duration,
         stopping: StopFlag) {
        self.layout = layout
        self.aggregator = aggregator
        self.uplink = uplink
        self.pushes = pushes
        self.everyMerges = everyMerges
        self.interval = interval
        self.stopping = stopping
    }

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        let key = (runID: model.runID, version: model.version)
        if rebased.withLock({ $0.map { $0 != key } ?? true }) {
            guard await aggregator.rebase(onto: model.parameters) != nil else { return .nothing }
            rebased.withLock { $0 = key }
        }
        while !stopping.isSet && !Task.isCancelled {
            // Read before the checks: a merge or an upstream model after this wakes the wait below.
            let (merges, models) = (aggregator.statsChanged.generation, uplink.modelChanged.generation)
            let s = aggregator.stats
            let pushedAt = lastPush.withLock { $0 }
            let since = ContinuousClock.now - pushedAt
            if s.unsentMerges >= everyMerges || (s.unsentMerges >= 1 && since >= interval) {
                guard let p = await aggregator.takeProgress() else { return .nothing }
                lastPush.withLock { $0 = .now }
                pushes.record(round: round, delta: p.delta)
                return TrainingResult(parameters: p.parameters, sampleCount: Int(clamping: p.samples))
            }
            if s.unsentMerges == 0, let newest = uplink.modelKey, newest != key {
                // Nothing to push yet and a newer upstream model: relay it first.
                return .nothing
            }
            // Wake for a merge down here, a model up there, a stop, or when the interval is up.
            await withTaskGroup(of: Void.self) { g in
                g.addTask { await self.aggregator.statsChanged.wait(after: merges, until: s.unsentMerges >= 1 ? pushedAt + self.interval : nil) }
                g.addTask { await self.uplink.modelChanged.wait(after: models) }
                g.addTask { await self.stopping.signal.wait(after: 0) }
                await g.next()
                g.cancelAll()
            }
        }
        return .nothing
    }
}

/// Why a gateway was refused (`ApiaryError`'s shape; its two halves throw `AggregatorError`
/// and `ClientError` of their own).
public typealias GatewayError = ApiaryError<GatewayErrors>

/// The domain of `GatewayError`.
public enum GatewayErrors: ApiaryErrorDomain {
    public static func describe(code: String, reason: String) -> String { "invalid gateway config: \(reason)" }
}

extension ApiaryError.Code where Domain == GatewayErrors {
    /// A `gateway.*` setting is out of range.
    public static let invalidConfig = Self("invalid config")
}

extension ApiaryError where Domain == GatewayErrors {
    public static func invalidConfig(_ reason: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.invalidConfig, reason, file: file, line: line)
    }
}
