import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The aggregator thread's state: its sockets, the merge engine and the publish timer.
/// Created and used on that thread only.
final class AggregatorLoop {
    let engine: MergeEngine
    let endpoints: Aggregator.Endpoints
    private unowned let aggregator: Aggregator
    private let config: AggregatorConfig
    private let logger: Logger
    private let context: Context
    private let pub: Socket
    private let router: Socket
    private let pull: Socket
    private let poller = Poller()
    private let snapshotConfigFrame: [UInt8]
    private var published: PublishedModel?
    private var dirty = true
    private var nextPublish = ContinuousClock.now
    private var lastBroadcast = ContinuousClock.now
    private var rejectLog = RateLimitedLog(interval: .seconds(5))

    init(aggregator: Aggregator, config: AggregatorConfig, layout: ParameterLayout, initial: [Float],
         initialVersion: UInt64, runID: UInt64, logger: Logger) throws {
        self.aggregator = aggregator
        self.config = config
        self.logger = logger
        engine = MergeEngine(layout: layout, parameters: initial, version: initialVersion, runID: runID,
                             rule: config.rule, dedupWindow: config.dedupWindow)
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        snapshotConfigFrame = SnapshotConfig(rule: config.rule, training: config.training, chunkParameters: config.chunkParameters,
                                             maxFrameBytes: config.maxFrameBytes, receiptTimeoutSeconds: seconds(config.receiptTimeout),
                                             publishIntervalSeconds: seconds(config.publishInterval),
                                             heartbeatSeconds: seconds(config.heartbeatInterval)).encoded()
        context = try Context(ioThreads: config.ioThreads)
        let chunks = Int32(min(Int(Int32.max / 4), (layout.parameterCount + config.chunkParameters - 1) / config.chunkParameters))

        pub = try context.socket(.pub)
        // Two models' worth of chunks plus room for receipts; older models are dropped, never queued.
        try pub.set(.sendHighWaterMark, 2 * chunks + 1000)
        try pub.bind(config.modelEndpoint)

        router = try context.socket(.router)
        try router.set(.maxMessageSize, 4096)
        try router.set(.sendHighWaterMark, (chunks + 4) * 16)
        try router.set(.heartbeatInterval, 2000)
        try router.set(.heartbeatTimeout, 6000)
        try router.bind(config.snapshotEndpoint)

        pull = try context.socket(.pull)
        try pull.set(.maxMessageSize, config.maxFrameBytes)
        try pull.set(.receiveHighWaterMark, config.updateQueueLimit)
        try pull.set(.heartbeatInterval, 2000)
        try pull.set(.heartbeatTimeout, 6000)
        try pull.bind(config.updateEndpoint)

        endpoints = .init(model: try pub.lastEndpoint, snapshot: try router.lastEndpoint, update: try pull.lastEndpoint)
        poller.add(router)
        poller.add(pull)
        aggregator.publish(stats: engine.stats, latest: engine.publishable())
    }

    func close() {
        // Last state for readers, then sockets (finite linger), then the context.
        aggregator.publish(stats: engine.stats, latest: engine.publishable())
        pub.close()
        router.close()
        pull.close()
    }

    func run(shouldStop: () -> Bool) {
        while !shouldStop() {
            let now = ContinuousClock.now
            var timeout = 100
            if dirty {
                let wait = nextPublish - now
                timeout = wait <= .zero ? 0 : min(100, Int(wait.components.attoseconds / 1_000_000_000_000_000) + Int(wait.components.seconds) * 1000 + 1)
            }
            if config.heartbeatInterval > .zero && !dirty && now - lastBroadcast >= config.heartbeatInterval {
                // Re-announce the current version now and then: late subscribers and clients
                // of a previous run learn where the model is without asking.
                dirty = true
                timeout = 0
            }
            do {
                try poller.poll(timeoutMilliseconds: timeout)
                if poller.isReadable(0) { try serveSnapshots() }
                if poller.isReadable(1) { try ingestUpdates() }
                if dirty && ContinuousClock.now >= nextPublish { try broadcast() }
            } catch let e as ZMQError where e.isContextTerminated {
                return
            } catch {
                logger.error("aggregator loop error: \(error)")
            }
        }
        // Publish the final version so subscribers see where we stopped.
        if dirty { try? broadcast() }
    }

    // MARK: Updates

    private func ingestUpdates() throws {
        // Drain a bounded batch so snapshot requests and broadcasts are not starved.
        for _ in 0..<64 {
            guard let msg = try pull.receiveMultipart(dontWait: true, maxFrames: config.maxPayloadFrames + 2) else { break }
            let outcome: MergeEngine.Outcome
            if msg.truncated {
                outcome = msg.withFrameBytes { engine.rejectTooManyFrames($0, limit: config.maxPayloadFrames) }
            } else {
                outcome = msg.withFrameBytes { engine.ingest($0) }
            }
            if outcome.reason == .none {
                dirty = true
            } else {
                if rejectLog.shouldLog(outcome.reason) {
                    // Stale and duplicate updates are routine in an asynchronous fleet; the
                    // rest point at a broken or hostile client.
                    let routine: Set<RejectReason> = [.tooStale, .duplicate, .unknownBase]
                    logger.log(level: routine.contains(outcome.reason) ? .info : .warning, "update rejected", metadata: [
                        "reason": "\(outcome.reason)", "detail": "\(outcome.detail)",
                        "client": "\(outcome.receipt?.clientID ?? "?")",
                        "suppressed": "\(rejectLog.suppressed(outcome.reason))",
                    ])
                }
            }
            if let r = outcome.receipt { try sendReceipt(r) }
        }
        aggregator.publish(stats: engine.stats, latest: nil)
    }

    private func sendReceipt(_ r: Receipt) throws {
        let frames = Codec.encode(r).map { Message($0) }
        // PUB never blocks; a subscriber at its high-water mark misses it and resends.
        try pub.send(multipart: frames, dontWait: true)
        engine.stats.bytesOut += UInt64(frames.reduce(0) { $0 + $1.count })
    }

    // MARK: Model plane

    private func currentPublishable() -> PublishedModel {
        if let p = published, p.version == engine.version { return p }
        let p = engine.publishable()
        published = p
        return p
    }

    /// Sends the newest model as chunks on the PUB socket, without copying it again.
    private func broadcast() throws {
        let model = currentPublishable()
        let chunks = chunkRanges(model.layout.parameterCount)
        let headerBase = ModelChunkHeader(runID: model.runID, version: model.version, layoutFingerprint: model.layout.fingerprint,
                                          parameterCount: UInt64(model.layout.parameterCount), chunkOffset: 0, chunkIndex: 0,
                                          chunkCount: UInt32(chunks.count))
        for (i, r) in chunks.enumerated() {
            var h = headerBase
            h.chunkOffset = UInt64(r.lowerBound)
            h.chunkIndex = UInt32(i)
            let payload = model.storage.baseAddress.map {
                Message(noCopy: UnsafeRawPointer($0 + r.lowerBound), count: r.count * 4, owner: model)
            } ?? Message()
            try pub.send(multipart: [Message(Topic.model), Message(Codec.encode(h)), payload], dontWait: true)
            engine.stats.bytesOut += UInt64(r.count * 4 + Codec.modelChunkHeaderSize)
        }
        engine.stats.broadcasts += 1
        lastBroadcast = ContinuousClock.now
        dirty = false
        nextPublish = ContinuousClock.now + config.publishInterval
        aggregator.publish(stats: engine.stats, latest: model)
    }

    private func chunkRanges(_ n: Int) -> [Range<Int>] {
        stride(from: 0, to: max(n, 1), by: config.chunkParameters).map { $0..<min(n, $0 + config.chunkParameters) }
    }

    // MARK: Snapshots (Clone pattern: a joining client gets the model at once)

    private func serveSnapshots() throws {
        for _ in 0..<64 {
            guard let msg = try router.receiveMultipart(dontWait: true, maxFrames: 4) else { break }
            // [identity] [empty delimiter, from REQ]? [request header]
            let frames = msg.frames
            guard frames.count == 2 || (frames.count == 3 && frames[1].count == 0), !msg.truncated else {
                if rejectLog.shouldLog(.malformed) { logger.warning("malformed snapshot request", metadata: ["frames": "\(frames.count)"]) }
                continue
            }
            let request: SnapshotRequest
            do {
                request = try frames.last!.withUnsafeBytes { b throws(WireError) in try Codec.decodeSnapshotRequest(b) }
            } catch {
                if rejectLog.shouldLog(.malformed) { logger.warning("malformed snapshot request: \(error)") }
                continue
            }
            let model = currentPublishable()
            let chunks = chunkRanges(model.layout.parameterCount)
            let header = SnapshotReplyHeader(requestID: request.requestID, runID: model.runID, version: model.version,
                                             layoutFingerprint: model.layout.fingerprint, parameterCount: UInt64(model.layout.parameterCount),
                                             serverTimeMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
                                             payloadFrameCount: UInt32(chunks.count))
            var reply: [Message] = [frames[0]]
            if frames.count == 3 { reply.append(Message()) }
            reply.append(Message(Codec.encode(header)))
            reply.append(Message(engine.layoutFrame))
            reply.append(Message(snapshotConfigFrame))
            for r in chunks {
                reply.append(model.storage.baseAddress.map {
                    Message(noCopy: UnsafeRawPointer($0 + r.lowerBound), count: r.count * 4, owner: model)
                } ?? Message())
            }
            try router.send(multipart: reply, dontWait: true)
            engine.stats.snapshotsServed += 1
            engine.stats.bytesOut += UInt64(model.layout.parameterCount * 4)
            logger.debug("snapshot served", metadata: ["client": "\(request.clientID)", "version": "\(model.version)"])
        }
    }
}

extension MergeEngine {
    func rejectTooManyFrames(_ frames: [UnsafeRawBufferPointer], limit: Int) -> Outcome {
        stats.received += 1
        stats.rejected[.malformed, default: 0] += 1
        let header = frames.first.flatMap { Codec.peekUpdateSender($0) }
        let detail = "update has more than \(limit) payload frames"
        let receipt = header.map {
            Receipt(clientID: $0.clientID, runID: runID, seq: $0.seq, baseVersion: $0.baseVersion, modelVersion: version,
                    staleness: nil, mixingWeight: 0, decision: .rejected, reason: .malformed, message: detail)
        }
        return Outcome(receipt: receipt, reason: .malformed, detail: detail)
    }
}

/// Logs the first occurrence of each reason, then at most one line per reason per interval
/// with the number suppressed, so a flood of bad input cannot flood the log.
struct RateLimitedLog {
    let interval: Duration
    private var last: [RejectReason: ContinuousClock.Instant] = [:]
    private var count: [RejectReason: Int] = [:]

    init(interval: Duration) { self.interval = interval }

    mutating func shouldLog(_ reason: RejectReason) -> Bool {
        let now = ContinuousClock.now
        if let t = last[reason], now - t < interval {
            count[reason, default: 0] += 1
            return false
        }
        last[reason] = now
        return true
    }

    mutating func suppressed(_ reason: RejectReason) -> Int {
        defer { count[reason] = 0 }
        return count[reason, default: 0]
    }
}
