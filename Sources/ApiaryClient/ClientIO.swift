import ApiaryCore
import ApiaryProtocol
import Logging
import ZeroMQ

/// The client's I/O thread: for each aggregator the model comes from (one, or every
/// parameter shard) a SUB (models and receipts), a DEALER (snapshots) and a PUSH (updates);
/// the pending-update table and its resend timers. Thread-confined.
///
/// The client starts with the one aggregator its config names. When that aggregator's
/// snapshot reply carries a shard map, the client connects to every shard of it, asks each
/// for its slice, assembles the model from the newest slices and pushes each slice of an
/// update to its shard, tagged with the version of that slice it trained from.
final class ClientIO {
    private unowned let runtime: ClientRuntime
    private let config: ClientConfig
    private let logger: Logger
    private let context: Context
    private let backoffMs: Int32
    private var links: [Link] = []
    private var poller = Poller()
    private var doorbellIndex = 0
    private var layout: ParameterLayout?
    private var layoutFrame: [UInt8] = []
    /// The shard map in use (nil: one aggregator serves the whole model).
    private var shardMap: [ShardEntry]?
    /// The model assembled from the newest slice of every link.
    private var values: [Float] = []
    /// Rejections by cause: when last logged, how many since.
    private var rejectionLog: [String: (last: ContinuousClock.Instant?, suppressed: Int)] = [:]
    private var snapshotRequestID: UInt64 = 0
    /// Changes whenever the links are replaced (a new shard map).
    private var generation = 0
    /// The config frame of the newest snapshot reply (training plan, receipt timeout, ...).
    private var serverConfig: SnapshotConfig?

    /// One aggregator (or shard) and what the client knows of it.
    private final class Link {
        var index: Int
        var range: Range<Int>?
        let sub: Socket
        var dealer: Socket
        let push: Socket
        /// libzmq's socket monitor on `sub`: handshake failures and successes.
        let monitor: SocketMonitor
        let modelEndpoint: String
        /// Handshakes failed in a row, and when that was last logged.
        var handshakeFailures = 0
        var lastHandshakeLog: ContinuousClock.Instant?
        let snapshotEndpoint: String
        var assembler = ModelAssembler()
        var snapshotRequestID: UInt64 = 0
        var snapshotOutstanding = false
        var snapshotDeadline = ContinuousClock.now
        /// Snapshot requests in a row that got no reply, and when that was last logged.
        var unanswered = 0
        var lastSilenceLog: ContinuousClock.Instant?
        /// Run and version of the slice in `values`; nil before the first one arrived.
        var base: ShardBase?
        /// Error feedback (PROTOCOL.md 3.4.1): what the lossy codec left out of the deltas
        /// sent to this shard so far, and the run and codec it belongs to.
        var residual: [Float] = []
        var residualKey: (runID: UInt64, codec: PayloadCodec)?

        init(index: Int, sub: Socket, dealer: Socket, push: Socket, monitor: SocketMonitor, modelEndpoint: String, snapshotEndpoint: String) {
            self.index = index
            self.sub = sub
            self.dealer = dealer
            self.push = push
            self.monitor = monitor
            self.modelEndpoint = modelEndpoint
            self.snapshotEndpoint = snapshotEndpoint
        }

        func close() {
            monitor.close()
            sub.close()
            dealer.close()
            push.close()
        }
    }

    private struct Pending {
        var update: OutgoingUpdate
        /// Per link (shard): sends so far, the next resend time, its receipt once it came.
        var slots: [Slot]

        struct Slot {
            var attempts = 0
            var deadline: ContinuousClock.Instant
            var receipt: Receipt?
            /// The codec and, unless float32 (sent from the update's storage), the payload
            /// frames, fixed at the first attempt: a resend sends the same bytes.
            var codec: PayloadCodec?
            var encoded: [[UInt8]] = []
        }
    }
    private var pending: [UInt64: Pending] = [:]

    init(runtime: ClientRuntime, config: ClientConfig, context: Context, logger: Logger) throws {
        self.runtime = runtime
        self.config = config
        self.logger = logger
        self.context = context
        backoffMs = Int32(clamping: config.maxBackoff.components.seconds * 1000)
        links = [try makeLink(index: 0, model: config.modelEndpoint, snapshot: config.snapshotEndpoint, update: config.updateEndpoint)]
        rebuildPoller()
    }

    private func makeLink(index: Int, model: String, snapshot: String, update: String) throws -> Link {
        let sub = try context.socket(.sub)
        try ClientIO.secure(sub, config.curve)
        try sub.set(.receiveHighWaterMark, 4096)
        try sub.set(.reconnectIntervalMax, backoffMs)
        try sub.setLinkHeartbeat()
        try sub.set(.subscribe, Topic.model)
        try sub.set(.subscribe, Topic.receipt(clientID: config.clientID))
        // The SUB connects first and reconnects for as long as the client runs: its handshake
        // failures say why the client cannot get in (the aggregator logs its side too).
        let monitor = try SocketMonitor(sub, events: SocketEvent.handshakeFailures | Int32(SocketEvent.handshakeSucceeded))
        try sub.connect(model)

        let dealer = try ClientIO.makeDealer(context, snapshot, backoffMs, config.curve)

        let push = try context.socket(.push)
        try ClientIO.secure(push, config.curve)
        // Room for every update in flight (maxPendingUpdates) and a few resends: a full queue
        // makes the sender wait 200 ms, so it must mean back-pressure, not our own window. The
        // frames point into the pending updates' storage, so a deeper queue holds no extra memory.
        try push.set(.sendHighWaterMark, Int32(clamping: config.maxPendingUpdates + 4))
        try push.set(.immediate, true)
        try push.set(.reconnectIntervalMax, backoffMs)
        try push.setLinkHeartbeat()
        try push.connect(update)
        return Link(index: index, sub: sub, dealer: dealer, push: push, monitor: monitor, modelEndpoint: model, snapshotEndpoint: snapshot)
    }

    /// Poll items: each link's SUB and DEALER, then the runtime's doorbell, then each link's
    /// socket monitor.
    private func rebuildPoller() {
        poller = Poller()
        for l in links {
            poller.add(l.sub)
            poller.add(l.dealer)
        }
        doorbellIndex = poller.add(fileDescriptor: runtime.doorbell.fileDescriptor)
        for l in links { poller.add(l.monitor.socket) }
    }

    /// Logs failed handshakes with their likely cause (each cause at most every 30 s per
    /// aggregator) and the first success after failures.
    private func readMonitor(_ l: Link) {
        for e in l.monitor.drain() {
            if e.event == SocketEvent.handshakeSucceeded {
                if l.handshakeFailures > 0 {
                    logger.notice("handshake with the aggregator succeeded after \(l.handshakeFailures) failures", metadata: ["endpoint": "\(l.modelEndpoint)"])
                }
                l.handshakeFailures = 0
                l.lastHandshakeLog = nil
                continue
            }
            guard let f = e.handshakeFailure else { continue }
            l.handshakeFailures += 1
            runtime.record { $0.handshakeFailures += 1; $0.lastHandshakeFailure = f.cause }
            let now = ContinuousClock.now
            guard l.lastHandshakeLog.map({ now - $0 >= .seconds(30) }) ?? true else { continue }
            l.lastHandshakeLog = now
            let hint: String = switch f {
            case .unauthorized:
                "the aggregator refused this client's CURVE key: add its public key to the aggregator's authorized keys (security.authorized_keys)"
            case .noDetail where config.curve != nil, .cryptographic:
                "the aggregator dropped the CURVE handshake: most likely security.server_public_key_file (--server-key) is not this aggregator's public key"
            case .noDetail, .mechanismMismatch where config.curve == nil:
                "the aggregator closed the connection during the handshake: it most likely requires CURVE, and this client runs without it (--insecure)"
            case .mechanismMismatch:
                "this client uses CURVE but the aggregator runs without it (--insecure)"
            default: "the handshake with the aggregator failed"
            }
            var meta: Logger.Metadata = ["endpoint": "\(l.modelEndpoint)", "cause": "\(f.cause)", "detail": "\(f)", "failures": "\(l.handshakeFailures)"]
            if let curve = config.curve { meta["public_key"] = "\(curve.keyPair.publicKey)" }
            logger.warning("cannot get in: \(hint)", metadata: meta)
        }
    }

    /// CurveZMQ client options, set before connecting.
    private static func secure(_ s: Socket, _ curve: CurveClientConfig?) throws {
        guard let curve else { return }
        try s.set(.curveServerKey, curve.serverPublicKey)
        try s.set(.curvePublicKey, curve.keyPair.publicKey)
        try s.set(.curveSecretKey, curve.keyPair.secretKey)
    }

    private static func makeDealer(_ context: Context, _ endpoint: String, _ backoffMs: Int32, _ curve: CurveClientConfig?) throws -> Socket {
        let d = try context.socket(.dealer)
        try secure(d, curve)
        try d.set(.linger, 0)
        try d.set(.reconnectIntervalMax, backoffMs)
        try d.setLinkHeartbeat()
        try d.connect(endpoint)
        return d
    }

    func close() {
        for l in links { l.close() }
    }

    func run(shouldStop: () -> Bool) {
        requestSnapshot(links[0])
        while !shouldStop() {
            do {
                try poller.poll(timeoutMilliseconds: nextTimeoutMilliseconds())
                let current = generation
                for (i, l) in links.enumerated() {
                    if poller.isReadable(2 * i) { try readSubscriptions(l) }
                    if generation != current { break }  // the shard map changed: poll again
                    if poller.isReadable(2 * i + 1) { try readSnapshotReplies(l) }
                    if generation != current { break }
                }
                if poller.isReadable(doorbellIndex) { runtime.doorbell.drain() }
                for (i, l) in links.enumerated() where poller.isReadable(doorbellIndex + 1 + i) { readMonitor(l) }
                try sendOutbox()
                try checkTimers()
            } catch let e as ZMQError where e.isContextTerminated {
                return
            } catch {
                logger.error("client I/O error: \(error)")
            }
        }
    }

    private func nextTimeoutMilliseconds() -> Int {
        let now = ContinuousClock.now
        var next = now + .milliseconds(100)
        for l in links where l.snapshotOutstanding { next = min(next, l.snapshotDeadline) }
        for p in pending.values {
            for slot in p.slots where slot.receipt == nil { next = min(next, slot.deadline) }
        }
        let wait = next - now
        if wait <= .zero { return 0 }
        return Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000) + 1
    }

    // MARK: Snapshots

    private func requestSnapshot(_ l: Link) {
        snapshotRequestID &+= 1
        l.snapshotRequestID = snapshotRequestID
        let frame = Codec.encode(SnapshotRequest(requestID: snapshotRequestID, clientID: config.clientID))
        do {
            _ = try l.dealer.send(frame, dontWait: true)
        } catch {
            logger.warning("snapshot request failed: \(error)")
        }
        l.snapshotOutstanding = true
        l.snapshotDeadline = ContinuousClock.now + config.snapshotTimeout
    }

    private struct SnapshotSlice {
        var layout: ParameterLayout
        var config: SnapshotConfig
        var range: Range<Int>
        var base: ShardBase
        var values: [Float]
    }

    private func readSnapshotReplies(_ l: Link) throws {
        while let msg = try l.dealer.receiveMultipart(dontWait: true, maxFrames: 1 << 16) {
            let reply: SnapshotSlice?
            do {
                reply = try msg.withFrameBytes { frames throws(WireError) -> SnapshotSlice? in
                    let view = try Codec.decodeSnapshotReply(frames)
                    guard view.header.requestID == l.snapshotRequestID else { return nil }
                    var params = [Float](repeating: 0, count: view.range.count)
                    params.withUnsafeMutableBytes { dst in
                        var off = 0
                        for f in view.payload where f.count > 0 {
                            dst.baseAddress!.advanced(by: off).copyMemory(from: f.baseAddress!, byteCount: f.count)
                            off += f.count
                        }
                    }
                    return SnapshotSlice(layout: view.layout, config: view.config, range: view.range,
                                         base: ShardBase(runID: view.header.runID, version: view.header.version), values: params)
                }
            } catch {
                logger.warning("bad snapshot reply: \(error)")
                continue
            }
            guard let reply else { continue }
            if shardMap != nil, reply.config.shards == shardMap, reply.config.shardIndex != l.index {
                // A shard that answers for another entry of the map is misconfigured: its slice
                // would land in the wrong place. Ignore it (and ask again after the timeout).
                logger.error("shard answered as another shard; ignoring its snapshot", metadata: [
                    "expected": "\(l.index)", "got": "\(reply.config.shardIndex.map(String.init) ?? "none")", "endpoint": "\(l.snapshotEndpoint)",
                ])
                continue
            }
            do {
                _ = try reply.config.compression()
                _ = try reply.config.localPrivacy()
            } catch {
                logger.error("the aggregator asks for what this client cannot send: \(error); not training until it asks for something else",
                             metadata: ["endpoint": "\(l.snapshotEndpoint)"])
                continue  // asked again after the snapshot timeout
            }
            l.snapshotOutstanding = false
            if l.unanswered > 0 {
                logger.notice("snapshot reply received after \(l.unanswered) unanswered requests", metadata: ["endpoint": "\(l.snapshotEndpoint)"])
                l.unanswered = 0
                l.lastSilenceLog = nil
            }
            serverConfig = reply.config
            setLayout(reply.layout)
            if reply.config.shards != shardMap {
                // First contact, or the operator changed the shard map: connect to every shard.
                try adoptShardMap(reply.config, from: l)
                l.range = reply.range
                store(reply.values, base: reply.base, into: l)
                adoptIfComplete(fromSnapshot: true)
                return  // the links changed: poll again
            }
            l.range = reply.range
            store(reply.values, base: reply.base, into: l)
            adoptIfComplete(fromSnapshot: true)
        }
    }

    /// Switches to the shard map of `cfg` (nil: one aggregator). The link that brought the
    /// map becomes its shard's link; every other shard gets a new link and a snapshot request.
    private func adoptShardMap(_ cfg: SnapshotConfig, from l: Link) throws {
        let map = cfg.shards
        let own = cfg.shardIndex ?? 0
        var next: [Link] = []
        let count = map?.count ?? 1
        for i in 0..<count {
            if i == own {
                l.index = i
                l.assembler = ModelAssembler()
                next.append(l)
            } else {
                let e = map![i]
                next.append(try makeLink(index: i, model: e.model, snapshot: e.snapshot, update: e.update))
            }
        }
        for old in links where old !== l { old.close() }
        links = next
        generation += 1
        shardMap = map
        values = [Float](repeating: 0, count: layout?.parameterCount ?? 0)
        if let map {
            for (i, e) in map.enumerated() { links[i].range = e.range }
            logger.info("model is sharded: connecting to every shard", metadata: ["shards": "\(map.count)"])
        }
        // Updates in flight were split for the old map: their slices no longer match.
        if !pending.isEmpty {
            logger.warning("shard map changed: dropping updates without receipts", metadata: ["count": "\(pending.count)"])
            for seq in pending.keys { runtime.emit(.updateDone(seq: seq, rejected: [0..<(layout?.parameterCount ?? 0)])) }
            pending = [:]
            runtime.record { $0.pending = 0 }
        }
        rebuildPoller()
        for link in links where link.index != own { requestSnapshot(link) }
    }

    private func store(_ slice: [Float], base: ShardBase, into l: Link) {
        guard let r = l.range, slice.count == r.count, values.count >= r.upperBound else { return }
        values.replaceSubrange(r, with: slice)
        l.base = base
    }

    /// Hands the model to the runtime once every link has a slice, with the training plan of
    /// the newest snapshot reply.
    private func adoptIfComplete(fromSnapshot: Bool) {
        // (Layout and config come with the first snapshot reply, before any model can be whole.)
        guard let layout, let c = serverConfig, links.allSatisfy({ $0.base != nil }) else { return }
        let bases = links.map { $0.base! }
        let key = ShardBase.composite(bases)
        let model = ModelSnapshot(layout: layout, parameters: values, version: key.version, runID: key.runID)
        let rt = Duration.milliseconds(Int64(max(0.1, c.receiptTimeoutSeconds) * 1000))
        if runtime.adopt(model, bases: bases, training: c.training, receiptTimeout: rt, chunkParameters: max(1, c.chunkParameters),
                         fromSnapshot: fromSnapshot, algorithm: c.algorithm, features: c.features ?? [], localDP: c.localDP) {
            logger.debug("model received", metadata: ["version": "\(model.version)", "shards": "\(links.count)"])
        }
    }

    private func setLayout(_ l: ParameterLayout) {
        if layout != l {
            layout = l
            layoutFrame = Codec.encodeLayout(l)
            values = [Float](repeating: 0, count: l.parameterCount)
            for link in links { link.base = nil }
        }
    }

    // MARK: Models and receipts

    private func readSubscriptions(_ l: Link) throws {
        while let msg = try l.sub.receiveMultipart(dontWait: true, maxFrames: 4) {
            guard let topic = msg.frames.first else { continue }
            let isModel = topic.withUnsafeBytes { $0.elementsEqual(Topic.model) }
            if isModel {
                handleModelChunk(msg, l)
            } else {
                handleReceipt(msg, l)
            }
        }
    }

    private func handleModelChunk(_ msg: Multipart, _ l: Link) {
        // Not joined yet: the snapshot comes first (it names the layout and the range).
        guard let layout, let range = l.range else { return }
        let gapsBefore = l.assembler.gaps
        let complete: ModelAssembler.Slice?
        do {
            complete = try msg.withFrameBytes { frames throws(WireError) -> ModelAssembler.Slice? in
                let (h, payload) = try Codec.decodeModelChunk(frames)
                return l.assembler.add(h, payload: payload, layout: layout, range: range)
            }
        } catch {
            logger.debug("bad model chunk: \(error)")
            return
        }
        if l.assembler.gaps > gapsBefore && !l.snapshotOutstanding {
            // A chunk went missing: the snapshot endpoint has the whole slice.
            requestSnapshot(l)
        }
        guard let s = complete else { return }
        if let cur = l.base, cur.runID == s.runID, s.version <= cur.version { return }
        store(s.values, base: ShardBase(runID: s.runID, version: s.version), into: l)
        adoptIfComplete(fromSnapshot: false)
    }

    private func handleReceipt(_ msg: Multipart, _ l: Link) {
        let receipt: Receipt
        do {
            receipt = try msg.withFrameBytes { frames throws(WireError) in try Codec.decodeReceipt(frames) }
        } catch {
            logger.debug("bad receipt: \(error)")
            return
        }
        guard receipt.clientID == config.clientID, var p = pending[receipt.seq], p.slots.indices.contains(l.index),
              p.slots[l.index].receipt == nil else { return }
        p.slots[l.index].receipt = receipt
        let done = p.slots.allSatisfy { $0.receipt != nil }
        if done { pending.removeValue(forKey: receipt.seq) } else { pending[receipt.seq] = p }
        if done {
            // The update counts once, when every shard has answered: merged when each merged
            // it (or had merged it before), rejected when one rejected it.
            let remaining = pending.count
            let receipts = p.slots.compactMap(\.receipt)
            let rejection = receipts.first { $0.decision == .rejected }
            let allDuplicates = receipts.allSatisfy { $0.decision == .duplicate }
            let recorded = receipts.contains { $0.decision == .recorded }
            // Not merged: rejected, or a duplicate of an update that was not merged.
            let notMerged = links.compactMap { link -> Range<Int>? in
                guard let r = p.slots[link.index].receipt, r.decision == .rejected || (r.decision == .duplicate && r.mixingWeight == 0) else { return nil }
                return link.range
            }
            runtime.emit(.updateDone(seq: receipt.seq, rejected: notMerged))
            runtime.record { s in
                s.pending = remaining
                if let rejection {
                    s.rejected += 1
                    s.lastRejectReason = rejection.reason
                } else if allDuplicates {
                    s.duplicates += 1
                } else if recorded {
                    s.reportsRecorded += 1
                } else {
                    s.merged += 1
                }
            }
        }
        if receipt.decision == .rejected {
            // Each cause is logged at once and then at most every 30 s, with the count between.
            let key = "\(receipt.reason)"
            let now = ContinuousClock.now
            var entry = rejectionLog[key] ?? (last: nil, suppressed: 0)
            if entry.last.map({ now - $0 >= .seconds(30) }) ?? true {
                logger.warning("update rejected: \(receipt.reason)", metadata: [
                    "seq": "\(receipt.seq)", "reason": "\(receipt.reason)", "detail": "\(PeerText.escaped(receipt.message))",
                    "endpoint": "\(l.snapshotEndpoint)", "shard": "\(l.index)", "more_since_last_log": "\(entry.suppressed)",
                ])
                entry = (now, 0)
            } else {
                entry.suppressed += 1
            }
            rejectionLog[key] = entry
            if receipt.reason == .seqOutOfRange && runtime.renewEpoch(replacing: p.update.header.epoch) {
                // Seqs of this epoch jumped past the aggregator's window (more updates lost
                // than it remembers): later updates start a fresh window.
                logger.warning("seq out of the aggregator's dedup window: starting a new client epoch", metadata: ["seq": "\(receipt.seq)"])
            }
            if receipt.reason == .unknownBase && !l.snapshotOutstanding {
                // The aggregator is on another run (it restarted): start over from its model.
                requestSnapshot(l)
            }
            if receipt.reason == .notPrivatized && !l.snapshotOutstanding {
                // The aggregator requires local DP now (it restarted on the same run with it):
                // its snapshot config says how; updates made from then on are privatized.
                requestSnapshot(l)
            }
        }
        runtime.emit(.receipt(receipt))
    }

    // MARK: Updates

    private func sendOutbox() throws {
        let (timeout, _) = runtime.settings()
        for u in runtime.takeOutbox() {
            guard u.bases.count == links.count else {
                // Trained on a model of an earlier shard map: its slices fit no shard now.
                logger.warning("dropping an update trained before the shard map changed", metadata: ["seq": "\(u.header.seq)"])
                runtime.emit(.updateDone(seq: u.header.seq, rejected: [0..<u.parameters.storage.count]))
                continue
            }
            let now = ContinuousClock.now
            var p = Pending(update: u, slots: Array(repeating: Pending.Slot(deadline: now), count: links.count))
            var sentAll = true
            for l in links {
                if try send(u, via: l, slot: &p.slots[l.index]) {
                    p.slots[l.index].attempts = 1
                    p.slots[l.index].deadline = now + (config.receiptTimeout ?? timeout)
                } else {
                    sentAll = false
                    p.slots[l.index].deadline = now + .milliseconds(200)
                }
            }
            if sentAll { runtime.emit(.updateSent(seq: u.header.seq, baseVersion: u.header.baseVersion)) }
            pending[u.header.seq] = p
            runtime.record { $0.updatesSent += 1; $0.pending = pending.count }
        }
    }

    /// Sends link `l`'s slice of one update; false when its PUSH queue is full or no
    /// aggregator is connected.
    private func send(_ u: OutgoingUpdate, via l: Link, slot: inout Pending.Slot) throws -> Bool {
        if var report = u.report {
            // Each shard is told the version of its own slice that was evaluated.
            report.runID = u.bases[l.index].runID
            report.version = u.bases[l.index].version
            if serverConfig?.supports(ProtocolFeature.clientEpoch) != true { report.epoch = 0 }
            return try l.push.send(multipart: Codec.encode(report).map { Message($0) }, dontWait: true)
        }
        guard !layoutFrame.isEmpty, let range = l.range, range.upperBound <= u.parameters.storage.count else { return false }
        let (_, chunk) = runtime.settings()
        var header = u.header
        header.runID = u.bases[l.index].runID
        header.baseVersion = u.bases[l.index].version
        // Metrics only to an aggregator that takes them: an older one would reject the update.
        header.carriesMetrics = !u.metrics.isEmpty && serverConfig?.supports(ProtocolFeature.updateMetrics) == true
        // The epoch, likewise, only to an aggregator that lists `client_epoch`.
        if serverConfig?.supports(ProtocolFeature.clientEpoch) != true { header.epoch = 0 }
        if slot.codec == nil { encode(u, for: l, range: range, chunk: chunk, into: &slot) }
        header.codec = slot.codec ?? .denseFloat32
        var frames = [Message(Codec.encode(header)), Message(layoutFrame)]
        if header.carriesMetrics { frames.append(Message(Codec.encodeMetrics(u.metrics))) }
        if header.codec == .denseFloat32 {
            var off = range.lowerBound
            repeat {
                let c = min(chunk, range.upperBound - off)
                frames.append(Message(noCopy: UnsafeRawPointer(u.parameters.storage.baseAddress! + off), count: c * 4, owner: u.parameters))
                off += c
            } while off < range.upperBound
        } else {
            frames += slot.encoded.map { Message($0) }
        }
        return try l.push.send(multipart: frames, dontWait: true)
    }

    /// Fixes the codec of `u`'s slice for link `l` (the one the aggregator asks for; float32
    /// when it asks for none, or for top-k and `u` is a full model) and encodes it. A delta
    /// with a lossy codec carries the link's residual: `x = d + r` is encoded, and
    /// `r = x - decode(encode(x))` is kept for the next delta (error feedback).
    private func encode(_ u: OutgoingUpdate, for l: Link, range: Range<Int>, chunk: Int, into slot: inout Pending.Slot) {
        let compression = (try? serverConfig?.compression()) ?? UpdateCompression()
        var codec = compression.codec
        if codec.isSparse && !u.header.isDelta { codec = .denseFloat32 }
        slot.codec = codec
        guard codec != .denseFloat32 else { return }
        // No model-sized copy per update: a delta is summed with its residual in the
        // residual itself (then x - decode(encode(x)) is left there for the next delta); a full
        // model is encoded straight from the update's storage.
        let limit = Int(serverConfig?.maxFrameBytes ?? Int64(chunk) * 4)
        // Top-k entries are 6 bytes: a frame of `chunk` of them may not fit max_frame_bytes.
        let frameValues = codec == .topK ? max(1, min(chunk, limit / 6)) : chunk
        guard u.header.isDelta else {
            slot.encoded = UpdateCodec.encode(UnsafeBufferPointer(rebasing: u.parameters.storage[range]), codec: codec, chunk: frameValues,
                                              block: compression.block, fraction: compression.topKFraction)
            return
        }
        let run = u.bases[l.index].runID
        if l.residualKey.map({ $0.runID != run || $0.codec != codec }) ?? true || l.residual.count != range.count {
            l.residual = [Float](repeating: 0, count: range.count)
            l.residualKey = (run, codec)
        }
        let d = u.parameters.storage
        l.residual.withUnsafeMutableBufferPointer { x in
            for i in x.indices { x[i] += d[range.lowerBound + i] }
        }
        slot.encoded = l.residual.withUnsafeBufferPointer {
            UpdateCodec.encode($0, codec: codec, chunk: frameValues, block: compression.block, fraction: compression.topKFraction)
        }
        UpdateCodec.add(slot.encoded, codec: codec, times: -1, to: &l.residual)
    }

    private func checkTimers() throws {
        let now = ContinuousClock.now
        for l in links where l.snapshotOutstanding && now >= l.snapshotDeadline {
            // No reply: the aggregator may be down or restarting. A fresh DEALER drops any
            // request queued on the old connection.
            l.unanswered += 1
            runtime.record { $0.snapshotsUnanswered += 1 }
            if l.lastSilenceLog.map({ now - $0 >= .seconds(30) }) ?? true {
                l.lastSilenceLog = now
                let curve = config.curve == nil ? "" : "; with CURVE, check security.server_public_key_file and that this client's key is authorized (failed handshakes are logged as \"cannot get in\")"
                logger.warning("no snapshot reply: is the aggregator running at \(l.snapshotEndpoint)?\(curve)", metadata: [
                    "endpoint": "\(l.snapshotEndpoint)", "unanswered": "\(l.unanswered)",
                    "timeout_s": "\(Double(config.snapshotTimeout.components.seconds) + Double(config.snapshotTimeout.components.attoseconds) / 1e18)",
                ])
            }
            l.dealer.close()
            l.dealer = try ClientIO.makeDealer(context, l.snapshotEndpoint, backoffMs, config.curve)
            poller.reset(2 * l.index + 1, to: l.dealer)
            requestSnapshot(l)
        }
        let (timeout, _) = runtime.settings()
        let base = config.receiptTimeout ?? timeout
        var resent = 0
        for (seq, var p) in pending {
            var changed = false
            for l in links where p.slots[l.index].receipt == nil && now >= p.slots[l.index].deadline {
                changed = true
                if try send(p.update, via: l, slot: &p.slots[l.index]) {
                    if p.slots[l.index].attempts > 0 { resent += 1 }
                    p.slots[l.index].attempts += 1
                    let factor = min(32, 1 << min(5, p.slots[l.index].attempts - 1))
                    p.slots[l.index].deadline = now + min(config.maxBackoff, base * factor)
                } else {
                    p.slots[l.index].deadline = now + .milliseconds(200)
                }
                if p.slots[l.index].attempts >= 3 && !l.snapshotOutstanding {
                    // Repeated silence: the aggregator may have restarted on another run.
                    requestSnapshot(l)
                }
            }
            if changed { pending[seq] = p }
        }
        if resent > 0 { runtime.record { $0.resends += resent } }
    }
}
