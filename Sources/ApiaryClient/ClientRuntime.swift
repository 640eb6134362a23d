import ApiaryCore
import ApiaryProtocol
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import ServiceLifecycle
import Synchronization
import ZeroMQ

/// The client runtime: joins through the snapshot endpoint (a late joiner trains at once),
/// subscribes for newer models, trains through a `Trainer`, pushes each result tagged with
/// its base version and a sequence number, resends updates that got no receipt in time, and
/// carries on by itself when the aggregator restarts.
///
/// Sockets live on one I/O thread; training runs in the task that calls `run()`.
public final class ClientRuntime: Service, Sendable {
    public let config: ClientConfig
    private let role: Role
    private let logger: Logger
    private let context: Context
    private let state = Mutex(State())
    private let wakeup = Wakeup()
    private let stopRequested = Atomic<Bool>(false)
    /// Announces every change the training side may wait for: a model adopted, a counter
    /// changed by the I/O thread (a receipt frees room for another update), a failure, a stop.
    private let changes = ChangeSignal()
    private let onEvent: (@Sendable (ClientEvent) -> Void)?
    private let metricsWarnings = WarningTimer(interval: .seconds(30))

    /// What the client does with each model: train it, or evaluate it.
    private enum Role: Sendable {
        case trainer(any Trainer)
        case evaluator(any Evaluator)

        var layout: ParameterLayout {
            switch self {
            case .trainer(let t): t.layout
            case .evaluator(let e): e.layout
            }
        }
    }

    struct State: Sendable {
        var model: ModelSnapshot?
        /// The (run, version) of each shard's slice in `model` (one entry when unsharded).
        var bases: [ShardBase] = []
        var training = TrainingConfig()
        var serverReceiptTimeout: Duration = .seconds(10)
        var chunkParameters = 262_144
        /// How the aggregator merges: fedavg trains once per version (rounds), fedbuff takes deltas.
        var algorithm = Algorithm.fedasync
        /// Optional protocol features the aggregator listed (`ProtocolFeature`).
        var features: [String] = []
        /// The local DP the aggregator requires (its config's `local_dp`); nil: none.
        var localDP: LocalDPConfig?
        /// This run's client epoch (PROTOCOL.md 3.4): picked when `run()` starts, again after a
        /// `seq_out_of_range` refusal; 0 before.
        var epoch: UInt64 = 0
        var outbox: [OutgoingUpdate] = []
        var stats = ClientStats()
        var fatal: ClientError?
        var ioFinished = false
    }

    /// Creates a client. `context` may be shared by many clients in one process.
    public convenience init(config: ClientConfig, trainer: any Trainer, context: Context? = nil, logger: Logger,
                            onEvent: (@Sendable (ClientEvent) -> Void)? = nil) throws {
        try self.init(config: config, role: .trainer(trainer), context: context, logger: logger, onEvent: onEvent)
    }

    /// Creates an evaluator: a client that does not train. It joins and follows the newest
    /// model like any client and, for each newer model it holds (at most one at a time, the
    /// newest), calls `evaluator.evaluate` and sends the result to the aggregator as an
    /// EVALUATION_REPORT (resent until receipted). Its key and id are a client's: with CURVE
    /// the aggregator takes reports only from authorized keys.
    public convenience init(config: ClientConfig, evaluator: any Evaluator, context: Context? = nil, logger: Logger,
                            onEvent: (@Sendable (ClientEvent) -> Void)? = nil) throws {
        guard (1...UpdateMetrics.maxDatasetBytes).contains(evaluator.dataset.utf8.count) else {
            throw ClientError.invalidConfig("the evaluator's dataset name must be 1 to \(UpdateMetrics.maxDatasetBytes) bytes")
        }
        try self.init(config: config, role: .evaluator(evaluator), context: context, logger: logger, onEvent: onEvent)
    }

    private init(config: ClientConfig, role: Role, context: Context?, logger: Logger,
                 onEvent: (@Sendable (ClientEvent) -> Void)?) throws {
        guard ClientID.isValid(config.clientID) else { throw ClientError.invalidConfig("client id '\(config.clientID)' is not 1 to 64 characters of A-Z a-z 0-9 . _ -") }
        guard config.curve != nil || config.insecure else {
            throw ClientError.invalidConfig("no CURVE keys: set curve (CurveClientConfig: this client's key pair and the aggregator's public key), or set insecure = true to connect without encryption or authentication")
        }
        guard config.maxPendingUpdates >= 1 else { throw ClientError.invalidConfig("max_pending_updates must be at least 1") }
        self.config = config
        self.role = role
        self.context = try context ?? Context()
        var l = logger
        l[metadataKey: "client"] = "\(config.clientID)"
        self.logger = l
        self.onEvent = onEvent
    }

    /// A copy of the counters.
    public var stats: ClientStats { state.withLock { $0.stats } }

    /// The newest model this client holds.
    public var currentModel: ModelSnapshot? { state.withLock { $0.model } }

    /// Trains until the calling task is cancelled, `stop()` is called or a service group
    /// shuts down gracefully; throws when the aggregator's model does not fit the trainer.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await trainLoop()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    private func trainLoop() async throws {
        stopRequested.store(false, ordering: .relaxed)
        try IOThread.start(name: "apiary-client", stackSize: 1 << 20) { [self] in self.ioMain() }
        defer {
            stopRequested.store(true, ordering: .releasing)
            wakeup.ring()
            wakeAllWaiters()
        }
        var round = 0
        var lastBase: (runID: UInt64, version: UInt64)?
        // A fresh epoch per run: seqs need only increase within it, so a restart, a restored
        // image or a clock stepped back cannot collide with an earlier run's seqs. The seqs
        // still start at the clock, for aggregators that take no epoch.
        state.withLock { $0.epoch = ClientEpoch.fresh() }
        var seq = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        // Local DP's noise: keyed from the system's CSPRNG, per run.
        var privatizer: LocalPrivatizer?
        while !Task.isCancelled && !stopRequested.load(ordering: .acquiring) {
            // Train on a model newer than the last base when one comes within `newModelWait`;
            // in synchronous rounds, only on a newer one (the next round's).
            let rounds = state.withLock { $0.algorithm == .fedavg }
            await waitForModel(newerThan: lastBase, timeout: lastBase == nil ? nil : (rounds ? .seconds(86_400 * 365) : config.newModelWait))
            if rounds, lastBase != nil, !hasModel(newerThan: lastBase) { continue }
            if let f = state.withLock({ $0.fatal }) { throw f }
            guard !Task.isCancelled, !stopRequested.load(ordering: .acquiring) else { break }
            // The algorithm comes with the model (the snapshot config): it says what to send.
            guard let (model, bases, training, algorithm, localDP) = state.withLock({ s in s.model.map { ($0, s.bases, s.training, s.algorithm, s.localDP) } }) else { continue }
            await waitForPendingRoom()
            guard !Task.isCancelled, !stopRequested.load(ordering: .acquiring) else { break }
            round += 1
            let trainer: any Trainer
            switch role {
            case .trainer(let t):
                trainer = t
            case .evaluator(let e):
                seq += 1
                try await evaluate(model, bases: bases, training: training, with: e, seq: seq)
                lastBase = (model.runID, model.version)
                continue
            }
            let result = try await trainer.train(model: model, config: training, round: round)
            if result.isNothing {
                lastBase = (model.runID, model.version)
                continue
            }
            guard result.parameters.count == model.layout.parameterCount else {
                throw ClientError.layoutMismatch(server: "\(model.layout.parameterCount) parameters", trainer: "\(result.parameters.count) parameters")
            }
            var metrics = result.reportedMetrics
            if !metrics.isEmpty, let e = UpdateMetrics.validationError(metrics) {
                if metricsWarnings.shouldLog() {
                    logger.warning("the trainer's metrics are not sent: \(e)", metadata: ["round": "\(round)"])
                }
                metrics = [:]
            }
            // FedBuff takes what training changed (trained - base), flagged as a delta.
            // One model-sized buffer per update: the trained values (or trained - base) are
            // written straight into the buffer the sockets send from, with no copy between.
            let deltas = algorithm.sendsDeltas
            let payload: ParameterBuffer
            if let localDP {
                // Local DP (PROTOCOL.md 4.8): the delta is clipped and noised here, before it
                // leaves; a full-model update is the base plus the privatized delta. The
                // metrics are measured on the private data and not noised: not sent.
                if privatizer?.config != localDP { privatizer = LocalPrivatizer(config: localDP) }
                payload = ParameterBuffer(result.parameters, minus: model.parameters)
                let n = result.parameters.count
                guard let norm = privatizer!.privatize(UnsafeMutableBufferPointer(rebasing: payload.storage[0..<n])) else {
                    logger.error("the trained model is not finite: nothing can be privatized, the update is not sent", metadata: ["round": "\(round)"])
                    lastBase = (model.runID, model.version)
                    continue
                }
                if !deltas {
                    for i in 0..<n { payload.storage[i] += model.parameters[i] }
                }
                metrics = [:]
                logger.debug("update privatized", metadata: ["norm": "\(norm)", "clip_norm": "\(localDP.clipNorm)",
                                                             "noise_multiplier": "\(localDP.noiseMultiplier)"])
            } else {
                payload = ParameterBuffer(result.parameters, minus: deltas ? model.parameters : nil)
            }
            seq += 1
            let epoch = self.epoch
            let update = OutgoingUpdate(header: UpdateHeader(runID: model.runID, baseVersion: model.version, seq: seq,
                                                             sampleCount: UInt64(max(0, result.sampleCount)), clientID: config.clientID,
                                                             isDelta: deltas, epoch: epoch, isPrivatized: localDP != nil),
                                        parameters: payload, bases: bases, metrics: metrics)
            onEvent?(.updateQueued(seq: seq, round: round))  // before the I/O thread can see it
            state.withLock {
                $0.outbox.append(update)
                $0.stats.rounds += 1
            }
            wakeup.ring()
            lastBase = (model.runID, model.version)
        }
    }

    /// One evaluation of `model`, queued as a report (unless the aggregator takes none).
    private func evaluate(_ model: ModelSnapshot, bases: [ShardBase], training: TrainingConfig, with e: any Evaluator, seq: UInt64) async throws {
        guard state.withLock({ $0.features.contains(ProtocolFeature.evaluationReports) }) else {
            if metricsWarnings.shouldLog() {
                logger.error("the aggregator does not take evaluation reports (it does not list the feature '\(ProtocolFeature.evaluationReports)'): upgrade it; nothing is sent")
            }
            return
        }
        let r = try await e.evaluate(model: model, config: training)
        if let problem = UpdateMetrics.validationError(r.metrics) ?? (r.metrics.isEmpty ? "no metrics" : nil) {
            logger.warning("evaluation not reported: \(problem)", metadata: ["version": "\(model.version)"])
            return
        }
        logger.info("model evaluated", metadata: [
            "version": "\(model.version)", "dataset": "\(e.dataset)",
            "metrics": "\(r.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))",
        ])
        let epoch = self.epoch
        let report = EvaluationReport(runID: model.runID, version: model.version, seq: seq, exampleCount: UInt64(max(0, r.exampleCount)),
                                      clientID: config.clientID, dataset: e.dataset, metrics: r.metrics, epoch: epoch)
        let header = UpdateHeader(runID: model.runID, baseVersion: model.version, seq: seq, sampleCount: report.exampleCount,
                                  clientID: config.clientID, epoch: report.epoch)
        onEvent?(.updateQueued(seq: seq, round: 0))
        state.withLock {
            $0.outbox.append(OutgoingUpdate(header: header, parameters: ParameterBuffer([]), bases: bases, report: report))
            $0.stats.rounds += 1
        }
        wakeup.ring()
    }

    /// Asks `run()` to return after its current training run.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wakeup.ring()
        wakeAllWaiters()
    }

    // MARK: Waiting (training side)

    /// Suspends until a model newer than `base` is held (any model when nil), `timeout`
    /// passes, the I/O thread failed, or the client stops. Never polls: the I/O thread's
    /// `adopt` wakes it.
    private func waitForModel(newerThan base: (runID: UInt64, version: UInt64)?, timeout: Duration?) async {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while !stopRequested.load(ordering: .acquiring) && !Task.isCancelled {
            let generation = changes.generation
            if hasModel(newerThan: base) || state.withLock({ $0.fatal != nil }) { return }
            if let deadline, ContinuousClock.now >= deadline { return }
            await changes.wait(after: generation, until: deadline)
        }
    }

    private func hasModel(newerThan base: (runID: UInt64, version: UInt64)?) -> Bool {
        state.withLock { s in
            guard let m = s.model else { return false }
            guard let base else { return true }
            return m.runID != base.runID || m.version > base.version
        }
    }

    /// Suspends until there is room for one more update (at most `maxPendingUpdates` queued or
    /// waiting for receipts) or the client stops; a receipt counted by the I/O thread wakes it.
    private func waitForPendingRoom() async {
        while !stopRequested.load(ordering: .acquiring) && !Task.isCancelled {
            let generation = changes.generation
            if state.withLock({ $0.stats.pending + $0.outbox.count < config.maxPendingUpdates }) { return }
            await changes.wait(after: generation)
        }
    }

    private func wakeAllWaiters() { changes.notify() }

    // MARK: I/O thread

    private func ioMain() {
        do {
            let io = try ClientIO(runtime: self, config: config, context: context, logger: logger)
            io.run(shouldStop: { self.stopRequested.load(ordering: .acquiring) })
            io.close()
        } catch {
            logger.error("client I/O failed: \(error)")
            state.withLock { $0.fatal = .ioFailed(error) }
            wakeAllWaiters()
        }
        state.withLock { $0.ioFinished = true }
    }

    // Called by the I/O thread.

    func adopt(_ model: ModelSnapshot, bases: [ShardBase], training: TrainingConfig, receiptTimeout: Duration, chunkParameters: Int, fromSnapshot: Bool,
               algorithm: Algorithm, features: [String], localDP: LocalDPConfig? = nil) -> Bool {
        guard model.layout == role.layout else {
            state.withLock { $0.fatal = .layoutMismatch(server: "\(model.layout)", trainer: "\(role.layout)") }
            wakeAllWaiters()
            return false
        }
        var dpChanged = false
        let first = state.withLock { s -> Bool in
            let first = s.model == nil
            s.model = model
            s.bases = bases
            s.stats.shards = bases.count
            s.training = training
            s.serverReceiptTimeout = receiptTimeout
            s.chunkParameters = chunkParameters
            s.algorithm = algorithm
            s.features = features
            dpChanged = s.localDP != localDP
            s.localDP = localDP
            s.stats.modelVersion = model.version
            if fromSnapshot { s.stats.snapshotsReceived += 1 } else { s.stats.broadcastsReceived += 1 }
            return first
        }
        changes.notify()
        if dpChanged, let localDP {
            logger.notice("the aggregator requires local differential privacy: every update is clipped and noised here before it is sent",
                          metadata: ["clip_norm": "\(localDP.clipNorm)", "noise_multiplier": "\(localDP.noiseMultiplier)"])
        }
        if first {
            logger.info("joined: holding the aggregator's model", metadata: [
                "version": "\(model.version)", "parameters": "\(model.layout.parameterCount)", "tensors": "\(model.layout.tensors.count)",
                "algorithm": "\(algorithm)", "endpoint": "\(config.snapshotEndpoint)",
            ])
        }
        onEvent?(first ? .joined(version: model.version) : .modelUpdated(version: model.version))
        return true
    }

    func takeOutbox() -> [OutgoingUpdate] {
        state.withLock { s in
            defer { s.outbox = [] }
            return s.outbox
        }
    }

    func settings() -> (receiptTimeout: Duration, chunkParameters: Int) {
        state.withLock { ($0.serverReceiptTimeout, $0.chunkParameters) }
    }

    /// The client epoch of the updates made now (fixed in each update: a resend repeats it).
    public var epoch: UInt64 { state.withLock { $0.epoch } }

    /// After a `seq_out_of_range` refusal of an update of epoch `refused`: a fresh epoch for
    /// the updates made from now on (a fresh dedup window). False when the epoch had already
    /// been renewed since.
    func renewEpoch(replacing refused: UInt64) -> Bool {
        state.withLock { s in
            guard s.epoch == refused, refused != 0 else { return false }
            s.epoch = ClientEpoch.fresh()
            return true
        }
    }

    /// Changes the counters (the I/O thread: sends, receipts, resends) and wakes the training
    /// side's waits, one of which may be for room freed by a receipt.
    func record(_ body: (inout ClientStats) -> Void) {
        state.withLock { body(&$0.stats) }
        changes.notify()
    }

    func emit(_ e: ClientEvent) { onEvent?(e) }

    var doorbell: Wakeup { wakeup }
}

/// The parameters of one update, kept unchanged until its receipt arrives; chunks on the
/// wire refer to it without copying.
final class ParameterBuffer: @unchecked Sendable {
    // @unchecked Sendable: written once in init, then only read (by libzmq's I/O thread too).
    let storage: UnsafeMutableBufferPointer<Float>

    /// A copy of `values`, or of `values - base` (same count) when `base` is given.
    init(_ values: [Float], minus base: [Float]? = nil) {
        storage = .allocate(capacity: max(values.count, 1))
        if let base {
            precondition(base.count == values.count, "a delta needs a base of the same size")
            for i in values.indices { (storage.baseAddress! + i).initialize(to: values[i] - base[i]) }
        } else {
            _ = storage.initialize(fromContentsOf: values)
        }
    }

    deinit { storage.deallocate() }
}

/// One update on its way: the whole trained parameter vector, and the (run, version) of
/// each shard's slice it was trained from; slice i goes to shard i tagged with `bases[i]`.
struct OutgoingUpdate: Sendable {
    var header: UpdateHeader
    var parameters: ParameterBuffer
    var bases: [ShardBase]
    /// Sent in the metrics frame when the aggregator takes them.
    var metrics: [String: Double] = [:]
    /// Set for an evaluator's report (then `parameters` is empty): sent as EVALUATION_REPORT.
    var report: EvaluationReport? = nil
}

/// The run and version of one shard's slice of a model (of the whole model when unsharded).
struct ShardBase: Sendable, Hashable {
    var runID: UInt64
    var version: UInt64

    /// The (run, version) a trainer sees for a model assembled from these slices: the shard's
    /// own when there is one; otherwise the sum of the versions (it grows with every merge on
    /// any shard) and a mix of the run ids (it changes when any shard starts a new run).
    static func composite(_ bases: [ShardBase]) -> (runID: UInt64, version: UInt64) {
        if bases.count == 1 { return (bases[0].runID, bases[0].version) }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var v: UInt64 = 0
        for b in bases {
            h = (h ^ b.runID) &* 0x100_0000_01b3
            v &+= b.version
        }
        return (h, v)
    }
}

/// Says yes at most once per `interval`: for a warning that would repeat with every round.
final class WarningTimer: Sendable {
    let interval: Duration
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    init(interval: Duration) { self.interval = interval }

    func shouldLog() -> Bool {
        last.withLock { t in
            let now = ContinuousClock.now
            if let prev = t, now - prev < interval { return false }
            t = now
            return true
        }
    }
}
