import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The aggregator thread's state: its sockets, the merge engine, the publish timer and the
/// group commit of receipts. Created and used on that thread only. This file holds start-up,
/// the poll loop, relay commands and update ingest; checkpoint resume is `CheckpointResume`;
/// the planes are in their own files:
/// `+Publisher` (model broadcasts), `+Snapshots` (the snapshot server), `+Receipts` (group
/// commit and the receipt desk), `+Security` (the ZAP self-test, handshake accounting).
final class AggregatorLoop {
    let engine: MergeEngine
    let endpoints: Aggregator.Endpoints
    unowned let aggregator: Aggregator
    let config: AggregatorConfig
    let logger: Logger
    let context: Context
    let pub: Socket
    let router: Socket
    let pull: Socket
    let poller = Poller()
    let snapshotConfigFrame: [UInt8]
    var published: PublishedModel?
    var dirty = true
    var nextPublish = ContinuousClock.now
    var lastBroadcast = ContinuousClock.now
    var rejectLog = RateLimitedLog(interval: .seconds(5))
    /// Evaluators (id and dataset) whose first report was logged at info; later ones go to
    /// debug (the progress line carries the latest of each).
    var announcedEvaluators: Set<String> = []
    // Observability: swift-metrics instruments, and client activity published twice a second.
    let metrics: AggregatorMetrics
    var activity = AggregatorActivity()
    var activityPublished = ContinuousClock.now
    /// What the I/O counts; the merge path's counters are `engine.stats`.
    var serving = ServingStats()
    var stats: AggregatorStats { AggregatorStats(merge: engine.stats, serving: serving) }

    // Durability: merged receipts wait here until a checkpoint holding their version is on disk.
    let writer: CheckpointWriter?
    let ledger: Ledger?
    /// The newest version on disk.
    var durableVersion: UInt64 {
        get { serving.durableVersion }
        set { serving.durableVersion = newValue }
    }
    var submittedVersion: UInt64
    var lastSubmit = ContinuousClock.now
    var held: [(receipt: Receipt, row: LedgerRow)] = []
    let zap: ZAPHandler?
    /// Where each socket and doorbell sits in `poller` (its poll slot).
    var snapshotSlot = 0
    var updateSlot = 0
    var commandIndex = 0
    var stateLock: StateDirectoryLock?
    var writerIndex = 0
    /// libzmq's socket monitors on the three sockets (handshake failures), their poll indices,
    /// the failures counted by cause, and when each cause was last logged.
    var monitors: [(monitor: SocketMonitor, index: Int)] = []
    var handshakeFailures: [String: UInt64] = [:]
    var zapRefusalsCounted = 0
    var handshakeLog: [String: ContinuousClock.Instant] = [:]

    init(aggregator: Aggregator, config: AggregatorConfig, layout: ParameterLayout, range: Range<Int>, shardMap: [ShardEntry]?,
         initial: [Float], initialVersion: UInt64, runID: UInt64, logger: Logger) throws {
        self.aggregator = aggregator
        self.config = config
        self.logger = logger
        metrics = AggregatorMetrics(factory: config.metricsFactory)

        // Resume from the newest valid checkpoint, or start a new run.
        var resumed: CheckpointState?
        if let dir = config.checkpointDirectory {
            let state = try CheckpointResume.open(directory: URL(fileURLWithPath: dir), expecting: layout.slice(range), logger: logger)
            stateLock = state.lock
            resumed = state.resumed
            writer = CheckpointWriter(directory: state.directory, keep: config.checkpointKeep, logger: logger)
        } else {
            writer = nil
        }
        // The ledger opens before the first checkpoint of a new run is written: a path it
        // cannot use stops the start with nothing written (the state directory, which may be
        // the ledger's parent, exists by now).
        ledger = try config.ledgerPath.map { path in
            do {
                return try Ledger(path: path, retention: config.ledgerRetention, logger: logger)
            } catch {
                throw AggregatorError.startFailed("ledger.path \(path): \(Ledger.explainOpenFailure(path: path, error: error))", code: .stateUnusable, underlying: error)
            }
        }

        if let resumed, let ledger {
            // Merges that were durable (and so receipted) but whose rows were still queued
            // when the process died: the checkpoint's dedup table knows them.
            let merged = resumed.dedup.flatMap { client, epochs in
                epochs.values.flatMap { entry in entry.outcomes.map { (clientID: client, seq: $0.key, outcome: $0.value) } }
            }
            do {
                let added = try ledger.catchUp(merged: merged, time: Date(timeIntervalSince1970: Double(resumed.createdAtMilliseconds) / 1000))
                if added > 0 {
                    logger.notice("ledger caught up from the checkpoint: merged rows lost in a crash added", metadata: [
                        "rows": "\(added)", "version": "\(resumed.version)",
                    ])
                }
            } catch {
                logger.error("ledger catch-up from the checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
        if let resumed {
            engine = MergeEngine(resuming: resumed, layout: layout, range: range, rule: config.rule, dedupWindow: config.dedupWindow)
        } else {
            engine = MergeEngine(layout: layout, range: range, parameters: initial, version: initialVersion, runID: runID,
                                 rule: config.rule, dedupWindow: config.dedupWindow)
        }
        if config.relay && resumed == nil {
            // A fresh gateway measures its devices' progress from its starting model.
            engine.anchor = initial
        }
        engine.maxUpdateNorm = config.maxUpdateNorm
        engine.normPolicy = config.normPolicy
        // Not checkpointed: a restart warms the filter up again.
        engine.anomaly = config.anomaly.map { AnomalyFilter(config: $0, parameterCount: range.count) }
        if let sync = config.sync {
            // Round r takes only updates trained on version r.
            engine.round = FedAvgRound(config: sync, parameterCount: range.count, resuming: resumed?.optimizer)
            engine.rule.maxStaleness = 0
        }
        if let buffered = config.buffer {
            let savedPrivacy = try Self.privacyAccountant(resuming: resumed, config: buffered.privacy, logger: logger)
            engine.buffer = FedBuffer(config: buffered, parameterCount: range.count, resuming: resumed?.optimizer, privacy: savedPrivacy)
            if let p = engine.buffer?.privacy {
                logger.notice("central differential privacy: deltas clipped, the buffer's sum noised, epsilon accounted per flush", metadata: [
                    "clip": "\(p.clip)\(p.config.adaptiveClipping.map { _ in " (adaptive)" } ?? "")", "noise_multiplier": "\(p.config.noiseMultiplier)",
                    "noise_std_of_mean": "\(p.deltaNoiseMultiplier * p.clip / Double(buffered.bufferSize))",
                    "sampling": "\(p.config.samplingRate.map { "poisson q=\($0)" } ?? "none (q=1)")",
                    "delta": "\(p.config.delta)", "epsilon": "\(p.epsilon)", "steps": "\(p.accountant.steps)",
                    "epsilon_budget": "\(p.config.epsilonBudget.map { "\($0)" } ?? "none")",
                ])
                if !p.canStep { logger.error("\(p.exhaustedMessage); updates are refused (reason unavailable)") }
            }
        } else if let p = resumed?.privacy {
            throw AggregatorError.startFailed("the checkpoint has a privacy accountant (epsilon \(p.epsilon) at delta \(p.delta) after \(p.steps) noised steps): "
                + "resuming it without central DP would publish un-noised steps. Set algorithm fedbuff with privacy.mode central, or start a new run (a new checkpoint.directory)")
        }
        if let l = config.localPrivacy {
            engine.requireLocalPrivacy(l, delta: config.localPrivacyDelta)
            let status = engine.stats.localPrivacy!
            // The noise's expected L2 norm on this aggregator's values: z C sqrt(n).
            let noiseNorm = l.noiseMultiplier * l.clipNorm * Double(range.count).squareRoot()
            logger.notice("local differential privacy required: clients clip their deltas and add noise; updates not flagged as privatized are rejected (not_privatized)", metadata: [
                "clip_norm": "\(l.clipNorm)", "noise_multiplier": "\(l.noiseMultiplier)", "noise_norm": "\(noiseNorm)",
                "delta": "\(status.delta)", "epsilon_per_update": "\(status.epsilonPerUpdate)", "epsilon_per_100_updates": "\(status.epsilonPer100Updates)",
            ])
            if let bound = config.maxUpdateNorm, bound < l.clipNorm + noiseNorm {
                logger.warning("limits.max_update_norm is below the norm of a privatized update's noise (about z C sqrt(n)): most updates will be \(config.normPolicy == .reject ? "rejected" : "clipped")",
                               metadata: ["max_update_norm": "\(bound)", "noise_norm": "\(noiseNorm)"])
            }
        }
        if let kind = config.sync?.optimizer.kind ?? config.buffer?.optimizer.kind, let saved = resumed?.optimizer, saved.kind != kind.rawValue {
            logger.warning("the checkpoint's server optimizer state is not used: it is of another kind",
                           metadata: ["checkpoint": "\(saved.kind)", "configured": "\(kind)"])
        }
        serving.durableVersion = engine.version
        submittedVersion = engine.version
        if let writer, resumed == nil {
            // The run id and the starting point are durable before anything is acknowledged.
            let r = writer.writeNow(engine.checkpointState())
            if let e = r.error { throw AggregatorError.startFailed("cannot write the first checkpoint: \(e)", code: .stateUnusable) }
        }

        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        var snapshotConfig = SnapshotConfig(algorithm: config.algorithm, rule: engine.rule, training: config.training,
                                            chunkParameters: config.chunkParameters,
                                            maxFrameBytes: config.maxFrameBytes, receiptTimeoutSeconds: seconds(config.receiptTimeout),
                                            publishIntervalSeconds: seconds(config.publishInterval),
                                            heartbeatSeconds: seconds(config.heartbeatInterval))
        snapshotConfig.shards = shardMap
        snapshotConfig.shardIndex = shardMap == nil ? nil : config.shard?.index
        snapshotConfig.features = ProtocolFeature.all
        snapshotConfig.localDP = config.localPrivacy
        if config.compression != UpdateCompression() {
            snapshotConfig.codec = config.compression.codec.name
            snapshotConfig.codecBlock = config.compression.block
            snapshotConfig.topkFraction = config.compression.topKFraction
        }
        snapshotConfigFrame = snapshotConfig.encoded()
        context = try Context(ioThreads: config.ioThreads)
        if let curve = config.curve, curve.startsZAPHandler {
            // The handler must be bound before any CURVE server socket binds.
            let handler = try ZAPHandler(authorizedKeysPath: curve.authorizedKeysPath, extraKeys: curve.authorizedKeys, logger: logger)
            try handler.start(in: context)
            zap = handler
        } else {
            zap = nil
        }
        if config.curve == nil {
            logger.warning("INSECURE: CURVE is off; traffic is neither encrypted nor authenticated and any peer can send updates")
        }
        func secure(_ s: Socket) throws {
            // After a restart the whole fleet reconnects at once: libzmq's listen backlog of
            // 100 would drop most of those connects into a reconnect back-off (the kernel caps
            // this at net.core.somaxconn).
            try s.set(.backlog, 1024)
            guard let curve = config.curve else { return }
            try s.set(.curveServer, true)
            try s.set(.curveSecretKey, curve.keyPair.secretKey)
            try s.set(.zapDomain, "apiary")
        }
        let chunks = Int32(min(Int(Int32.max / 4), (range.count + config.chunkParameters - 1) / config.chunkParameters))

        pub = try context.socket(.pub)
        try secure(pub)
        // Two models' worth of chunks plus room for receipts; older models are dropped, never queued.
        try pub.set(.sendHighWaterMark, 2 * chunks + 1000)
        try pub.bind(config.modelEndpoint)

        router = try context.socket(.router)
        try secure(router)
        try router.set(.maxMessageSize, 4096)
        try router.set(.sendHighWaterMark, (chunks + 4) * 16)
        try router.setLinkHeartbeat()
        try router.bind(config.snapshotEndpoint)

        pull = try context.socket(.pull)
        try secure(pull)
        try pull.set(.maxMessageSize, config.maxFrameBytes)
        try pull.set(.receiveHighWaterMark, config.updateQueueMessages(parameters: range.count))
        try pull.setLinkHeartbeat()
        try pull.bind(config.updateEndpoint)

        endpoints = .init(model: try pub.lastEndpoint, snapshot: try router.lastEndpoint, update: try pull.lastEndpoint)
        if let curve = config.curve {
            try AggregatorLoop.selfTest(context: context, zap: zap, serverKey: curve.keyPair.publicKey, endpoint: endpoints.snapshot)
            logger.info("security self-test passed: a probe with an unknown CURVE key was refused", metadata: ["endpoint": "\(endpoints.snapshot)"])
        }
        snapshotSlot = poller.add(router)
        updateSlot = poller.add(pull)
        commandIndex = poller.add(fileDescriptor: aggregator.commandDoorbell.fileDescriptor)
        if let writer { writerIndex = poller.add(fileDescriptor: writer.doorbell.fileDescriptor) }
        // Refused keys are counted by the ZAP handler (which knows the self-test's probe);
        // the other handshake failures come from the monitors.
        for s in [pub, router, pull] {
            let m = try SocketMonitor(s, events: Int32(SocketEvent.handshakeFailedNoDetail | SocketEvent.handshakeFailedProtocol))
            monitors.append((m, poller.add(m.socket)))
        }
        metrics.sync(stats)
        published = engine.publishable()
        aggregator.publish(stats: stats, latest: published)
    }

    /// Graceful stop: no more updates are taken; the final checkpoint makes every merge
    /// durable, the held receipts go out, the ledger is flushed, the sockets close.
    func close() {
        for m in monitors { m.monitor.close() }
        pull.close()
        if let writer {
            // The write in flight ends first (its result counts), then the final state.
            writer.stop()
            collectCheckpointResults()
            if engine.version > durableVersion {
                let r = writer.writeNow(engine.checkpointState())
                if r.error == nil { markDurable(r.version) }
            }
        }
        releaseHeld()
        if dirty { try? broadcast() }
        ledger?.close()
        metrics.sync(stats)
        publishActivity(force: true)
        aggregator.publish(stats: stats, latest: engine.publishable())
        pub.close()
        router.close()
        zap?.stop()
        stateLock?.release()
    }

    func run(shouldStop: () -> Bool) {
        writer?.start()
        ledger?.start()
        while !shouldStop() {
            let now = ContinuousClock.now
            var deadline = now + .milliseconds(100)
            // A held private step is released when the writer's doorbell says it is on disk.
            if dirty && !holdsPrivateStep { deadline = min(deadline, nextPublish) }
            if writer != nil && engine.version > submittedVersion { deadline = min(deadline, lastSubmit + config.checkpointInterval) }
            if let roundDeadline = engine.round?.deadline ?? engine.buffer?.deadline { deadline = min(deadline, roundDeadline) }
            if config.heartbeatInterval > .zero && !dirty && now - lastBroadcast >= config.heartbeatInterval {
                // Re-announce the current version now and then: late subscribers and clients
                // of a previous run learn where the model is without asking.
                dirty = true
                deadline = now
            }
            let wait = deadline - now
            let timeout = wait <= .zero ? 0 : Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000) + 1
            do {
                try poller.poll(timeoutMilliseconds: timeout)
                if poller.isReadable(snapshotSlot) { try serveSnapshots() }
                if poller.isReadable(updateSlot) { try ingestUpdates() } else { try closeRoundIfReady() }
                if poller.isReadable(commandIndex) {
                    aggregator.commandDoorbell.drain()
                    runCommands()
                }
                if writer != nil {
                    if poller.isReadable(writerIndex) { writer!.doorbell.drain() }
                    collectCheckpointResults()
                    startCheckpointIfDue()
                }
                if dirty && !holdsPrivateStep && ContinuousClock.now >= nextPublish { try broadcast() }
                metrics.sync(stats)
                collectHandshakeFailures()
                publishActivity()
            } catch let e as ZMQError where e.isContextTerminated {
                return
            } catch {
                logger.error("aggregator loop error: \(error)")
            }
        }
    }

    // MARK: Relay mode (gateways)

    func runCommands() {
        let commands = aggregator.takeCommands()
        guard !commands.isEmpty else { return }
        for c in commands {
            switch c {
            case .rebase(let g, let k):
                if engine.rebase(onto: g) {
                    dirty = true
                    k.resume(returning: engine.version)
                } else {
                    logger.warning("upstream model refused: it does not fit the layout or is not finite")
                    k.resume(returning: nil)
                }
            case .takeProgress(let k):
                k.resume(returning: engine.takeProgress())
            case .restore(let delta, let ranges, let k):
                engine.restore(progress: delta, in: ranges)
                k.resume(returning: true)
            }
        }
        aggregator.publish(stats: stats, latest: nil)
    }

    // MARK: Updates

    func ingestUpdates() throws {
        // Drain a bounded batch so snapshot requests and broadcasts are not starved.
        for _ in 0..<64 {
            guard let msg = try pull.receiveMultipart(dontWait: true, maxFrames: config.maxPayloadFrames + 2) else { break }
            let outcome: MergeEngine.Outcome
            if msg.truncated {
                outcome = msg.withFrameBytes { engine.rejectTooManyFrames($0, limit: config.maxPayloadFrames) }
            } else {
                // With CURVE, the ZAP handler named the peer: that, not the payload, is who sent it.
                let identity = config.curve == nil ? nil : (msg.frames.first?.property("User-Id") ?? "")
                let isReport = msg.withFrameBytes { $0.first.map(Codec.isEvaluationReport) ?? false }
                if isReport {
                    outcome = msg.withFrameBytes { engine.ingestReport($0, authenticatedID: identity) }
                } else {
                    let started = DispatchTime.now().uptimeNanoseconds
                    outcome = msg.withFrameBytes { engine.ingest($0, authenticatedID: identity) }
                    if outcome.reason == .none { metrics.recordMerge(nanoseconds: DispatchTime.now().uptimeNanoseconds &- started) }
                }
            }
            try handle(outcome)
            // A buffer flushes at exactly K deltas (a round closes at its expected clients),
            // not at whatever the batch brought in.
            try closeRoundIfReady()
        }
        aggregator.publish(stats: stats, latest: nil)
    }

    /// Sync mode: closes the FedAvg round when it has its clients (or its quorum after the
    /// timeout) and acknowledges its contributions.
    func closeRoundIfReady() throws {
        if engine.round != nil {
            for outcome in engine.closeRoundIfReady(now: .now) { try handle(outcome) }
        }
        if engine.buffer != nil {
            let outcomes = engine.flushBufferIfReady(now: .now)
            if !outcomes.isEmpty, let p = engine.buffer?.privacy {
                makePrivateStepDurable(p)
            }
            for outcome in outcomes { try handle(outcome) }
        }
    }

    /// Central DP: a noised step goes to the checkpoint writer at once, with the accountant that
    /// counts it; until it is on disk the step is not released (`holdsPrivateStep`: no broadcast,
    /// snapshots serve the version before), so a crash never loses a released step from epsilon.
    /// The merge loop itself never waits for the disk.
    func makePrivateStepDurable(_ p: CentralPrivacy) {
        if let writer {
            writer.submit(engine.checkpointState())
            submittedVersion = engine.version
            lastSubmit = ContinuousClock.now
        }
        logger.info("private server step", metadata: [
            "version": "\(engine.version)", "epsilon": "\(p.epsilon)", "delta": "\(p.config.delta)", "steps": "\(p.accountant.steps)",
            "clip": "\(p.clip)",
        ])
        if !p.canStep { logger.error("\(p.exhaustedMessage); further updates are refused (reason unavailable)") }
    }

    /// The accountant to resume, or why the checkpoint's cannot be resumed with `config`.
    static func privacyAccountant(resuming resumed: CheckpointState?, config: PrivacyConfig, logger: Logger) throws -> CheckpointState.PrivacyState? {
        guard let resumed else { return nil }
        guard config.mode == .central else {
            if let p = resumed.privacy {
                throw AggregatorError.startFailed("the checkpoint has a privacy accountant (epsilon \(p.epsilon) at delta \(p.delta) after \(p.steps) noised steps): "
                    + "resuming it with privacy.mode off would publish un-noised steps. Set privacy.mode central, or start a new run (a new checkpoint.directory)")
            }
            return nil
        }
        guard let p = resumed.privacy else {
            if resumed.version > 0 {
                logger.warning("central DP starts on a checkpoint without an accountant: its \(resumed.version) earlier versions were not private, and epsilon counts only the steps from here")
            }
            return nil
        }
        guard p.delta == config.delta else {
            throw AggregatorError.startFailed("privacy.delta \(config.delta) differs from the checkpoint's \(p.delta), at which its epsilon \(p.epsilon) was stated: keep privacy.delta \(p.delta), or start a new run")
        }
        guard p.accountant != nil else {
            throw AggregatorError.startFailed("the checkpoint's privacy accountant has \(p.rdp.count) RDP values, \(RDPAccountant.defaultOrders.count) expected")
        }
        return p
    }

    /// Logs, receipts (now, or once durable) and records one outcome.
    func handle(_ outcome: MergeEngine.Outcome) throws {
        // Peer-supplied text (a reject detail quoting the payload, a report's dataset) is
        // escaped and bounded once, here, for the log, the ledger, the dashboard and the
        // metric labels alike.
        var outcome = outcome
        outcome.detail = PeerText.escaped(outcome.detail)
        if let dataset = outcome.report?.dataset { outcome.report?.dataset = PeerText.escaped(dataset, limit: UpdateMetrics.maxDatasetBytes) }
        if let report = outcome.report, let r = outcome.receipt {
            // Recorded at once: a report changes no model, so there is nothing to make durable.
            let now = Date()
            aggregator.fleet.record(report: EvaluationRecord(time: now, evaluator: report.clientID, dataset: report.dataset,
                                                             version: report.version, examples: report.exampleCount, metrics: report.metrics))
            let first = announcedEvaluators.count < 1024 && announcedEvaluators.insert(report.clientID + "\u{0}" + report.dataset).inserted
            logger.log(level: first ? .info : .debug, first ? "evaluation reported (first from this evaluator; later ones at debug, the latest in the progress lines)" : "evaluation reported", metadata: [
                "evaluator": "\(PeerText.escaped(report.clientID))", "dataset": "\(report.dataset)", "version": "\(report.version)",
                "metrics": "\(report.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))",
            ])
            try sendReceipt(r)
            ledger?.append(LedgerRow(time: now, clientID: r.clientID, seq: r.seq, baseVersion: r.baseVersion, staleness: r.staleness,
                                     mixingWeight: 0, updateNorm: nil, sampleCount: report.exampleCount, decision: .recorded,
                                     reason: .none, modelVersion: r.modelVersion, detail: report.dataset, metrics: report.metrics))
            return
        }
        if outcome.reason == .none {
            // A FedAvg contribution or a FedBuff delta is receipted when its round closes or its buffer is flushed.
            guard outcome.receipt != nil else { return }
            dirty = true
        } else if rejectLog.shouldLog(outcome.reason, now: .now) {
            // Stale and duplicate updates are routine in an asynchronous fleet; the
            // rest point at a broken or hostile client.
            let routine: Set<RejectReason> = [.tooStale, .duplicate, .unknownBase]
            logger.log(level: routine.contains(outcome.reason) ? .info : .warning, "update rejected", metadata: [
                "reason": "\(outcome.reason)", "detail": "\(outcome.detail)",
                "client": "\(PeerText.escaped(outcome.receipt?.clientID ?? "?"))", "version": "\(engine.version)",
                "suppressed": "\(rejectLog.suppressed(outcome.reason))",
            ])
        }
        guard let r = outcome.receipt else {
            // Nobody to receipt, but the ledger still records that it happened.
            ledger?.append(LedgerRow(time: Date(), clientID: "?", seq: 0, baseVersion: 0, staleness: nil, mixingWeight: 0,
                                     updateNorm: nil, sampleCount: 0, decision: .rejected, reason: outcome.reason,
                                     modelVersion: engine.version, detail: outcome.detail))
            return
        }
        activity.record(r, at: Date())
        if let a = activity.clients[r.clientID], a.isStarved, a.received % 100 == ClientActivity.starvedAfter % 100 {
            // Once at the 10th refused update, then once per 100 more: its data never reaches the model.
            logger.warning("client has had every update refused", metadata: [
                "client": "\(r.clientID)", "received": "\(a.received)", "last_reason": "\(r.reason)",
                "hint": "\(r.reason == .tooStale ? "a slow client under fedasync: raise fedasync.max_staleness, or use algorithm fedbuff (staleness counts buffer flushes)" : "see the ledger for its rejections")",
            ])
        }
        if r.decision == .merged { metrics.recordMerged(r) }
        if r.decision == .merged && !outcome.metrics.isEmpty {
            aggregator.fleet.record(update: UpdateMetricsRecord(time: Date(), clientID: r.clientID, version: r.modelVersion,
                                                                sampleCount: outcome.sampleCount, metrics: outcome.metrics))
        }
        let row = LedgerRow(time: Date(), clientID: r.clientID, seq: r.seq, baseVersion: r.baseVersion, staleness: r.staleness,
                            mixingWeight: r.mixingWeight, updateNorm: outcome.updateNorm, sampleCount: outcome.sampleCount,
                            decision: r.decision, reason: r.reason, modelVersion: r.modelVersion, detail: outcome.detail,
                            metrics: outcome.metrics)
        // A merge (or a duplicate of one) is acknowledged only once it is durable.
        let mergedVersion = r.decision == .merged || (r.decision == .duplicate && r.mixingWeight > 0) ? r.modelVersion : nil
        if writer != nil, let v = mergedVersion, v > durableVersion {
            held.append((r, row))
        } else {
            try sendReceipt(r)
            ledger?.append(row)
        }
    }

    /// Hands the client activity to other threads, at most twice a second unless forced.
    func publishActivity(force: Bool = false) {
        let now = ContinuousClock.now
        guard force || now - activityPublished >= .milliseconds(500) else { return }
        activityPublished = now
        activity.publishedAt = Date()
        aggregator.publish(activity: activity)
    }

    func sendReceipt(_ r: Receipt) throws {
        let frames = Codec.encode(r).map { Message($0) }
        // PUB never blocks; a subscriber at its high-water mark misses it and resends.
        try pub.send(multipart: frames, dontWait: true)
        serving.bytesOut += UInt64(frames.reduce(0) { $0 + $1.count })
    }

}
