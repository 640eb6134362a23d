import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The client's I/O thread: the SUB (models and receipts), DEALER (snapshots) and PUSH
/// (updates) sockets, the pending-update table and its resend timers. Thread-confined.
final class ClientIO {
    private unowned let runtime: ClientRuntime
    private let config: ClientConfig
    private let logger: Logger
    private let context: Context
    private let sub: Socket
    private var dealer: Socket
    private let push: Socket
    private let poller = Poller()
    private var assembler = ModelAssembler()
    private var layout: ParameterLayout?
    private var layoutFrame: [UInt8] = []

    private var snapshotRequestID: UInt64 = 0
    private var snapshotOutstanding = false
    private var snapshotDeadline = ContinuousClock.now

    private struct Pending {
        var update: OutgoingUpdate
        var attempts: Int
        var deadline: ContinuousClock.Instant
        var sent: Bool
    }
    private var pending: [UInt64: Pending] = [:]

    init(runtime: ClientRuntime, config: ClientConfig, context: Context, logger: Logger) throws {
        self.runtime = runtime
        self.config = config
        self.logger = logger
        self.context = context
        let backoffMs = Int32(clamping: config.maxBackoff.components.seconds * 1000)

        sub = try context.socket(.sub)
        try ClientIO.secure(sub, config.curve)
        try sub.set(.receiveHighWaterMark, 4096)
        try sub.set(.reconnectIntervalMax, backoffMs)
        try sub.set(.heartbeatInterval, 2000)
        try sub.set(.heartbeatTimeout, 6000)
        try sub.set(.subscribe, Topic.model)
        try sub.set(.subscribe, Topic.receipt(clientID: config.clientID))
        try sub.connect(config.modelEndpoint)

        dealer = try ClientIO.makeDealer(context, config.snapshotEndpoint, backoffMs, config.curve)

        push = try context.socket(.push)
        try ClientIO.secure(push, config.curve)
        try push.set(.sendHighWaterMark, 4)
        try push.set(.immediate, true)
        try push.set(.reconnectIntervalMax, backoffMs)
        try push.set(.heartbeatInterval, 2000)
        try push.set(.heartbeatTimeout, 6000)
        try push.connect(config.updateEndpoint)

        poller.add(sub)
        poller.add(dealer)
        poller.add(fileDescriptor: runtime.doorbell.fileDescriptor)
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
        try d.set(.heartbeatInterval, 2000)
        try d.set(.heartbeatTimeout, 6000)
        try d.connect(endpoint)
        return d
    }

    func close() {
        sub.close()
        dealer.close()
        push.close()
    }

    func run(shouldStop: () -> Bool) {
        requestSnapshot()
        while !shouldStop() {
            do {
                try poller.poll(timeoutMilliseconds: nextTimeoutMilliseconds())
                if poller.isReadable(0) { try readSubscriptions() }
                if poller.isReadable(1) { try readSnapshotReplies() }
                if poller.isReadable(2) { runtime.doorbell.drain() }
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
        if snapshotOutstanding { next = min(next, snapshotDeadline) }
        for p in pending.values { next = min(next, p.deadline) }
        let wait = next - now
        if wait <= .zero { return 0 }
        return Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000) + 1
    }

    // MARK: Snapshots

    private func requestSnapshot() {
        snapshotRequestID &+= 1
        let frame = Codec.encode(SnapshotRequest(requestID: snapshotRequestID, clientID: config.clientID))
        do {
            _ = try dealer.send(frame, dontWait: true)
        } catch {
            logger.warning("snapshot request failed: \(error)")
        }
        snapshotOutstanding = true
        snapshotDeadline = ContinuousClock.now + config.snapshotTimeout
    }

    private func readSnapshotReplies() throws {
        while let msg = try dealer.receiveMultipart(dontWait: true, maxFrames: 1 << 16) {
            do {
                let decoded = try msg.withFrameBytes { frames throws(WireError) -> (ModelSnapshot, SnapshotConfig)? in
                    let view = try Codec.decodeSnapshotReply(frames)
                    guard view.header.requestID == snapshotRequestID else { return nil }
                    var params = [Float](repeating: 0, count: view.layout.parameterCount)
                    params.withUnsafeMutableBytes { dst in
                        var off = 0
                        for f in view.payload where f.count > 0 {
                            dst.baseAddress!.advanced(by: off).copyMemory(from: f.baseAddress!, byteCount: f.count)
                            off += f.count
                        }
                    }
                    return (ModelSnapshot(layout: view.layout, parameters: params, version: view.header.version, runID: view.header.runID), view.config)
                }
                guard let (model, cfg) = decoded else { continue }
                snapshotOutstanding = false
                setLayout(model.layout)
                let rt = Duration.milliseconds(Int64(max(0.1, cfg.receiptTimeoutSeconds) * 1000))
                if runtime.adopt(model, training: cfg.training, receiptTimeout: rt, chunkParameters: max(1, cfg.chunkParameters),
                                 fromSnapshot: true, algorithm: cfg.algorithm) {
                    logger.debug("snapshot received", metadata: ["version": "\(model.version)"])
                }
            } catch {
                logger.warning("bad snapshot reply: \(error)")
            }
        }
    }

    private func setLayout(_ l: ParameterLayout) {
        if layout != l {
            layout = l
            layoutFrame = Codec.encodeLayout(l)
        }
    }

    // MARK: Models and receipts

    private func readSubscriptions() throws {
        while let msg = try sub.receiveMultipart(dontWait: true, maxFrames: 4) {
            guard let topic = msg.frames.first else { continue }
            let isModel = topic.withUnsafeBytes { $0.elementsEqual(Topic.model) }
            if isModel {
                handleModelChunk(msg)
            } else {
                handleReceipt(msg)
            }
        }
    }

    private func handleModelChunk(_ msg: Multipart) {
        guard let layout else { return }  // not joined yet: the snapshot comes first
        let gapsBefore = assembler.gaps
        let complete: ModelSnapshot?
        do {
            complete = try msg.withFrameBytes { frames throws(WireError) -> ModelSnapshot? in
                let (h, payload) = try Codec.decodeModelChunk(frames)
                return assembler.add(h, payload: payload, layout: layout)
            }
        } catch {
            logger.debug("bad model chunk: \(error)")
            return
        }
        if assembler.gaps > gapsBefore && !snapshotOutstanding {
            // A chunk went missing: the snapshot endpoint has the whole model.
            requestSnapshot()
        }
        guard let m = complete else { return }
        if let cur = runtime.currentKey(), cur.runID == m.runID, m.version <= cur.version { return }
        _ = runtime.adopt(m, training: nil, receiptTimeout: nil, chunkParameters: nil, fromSnapshot: false)
    }

    private func handleReceipt(_ msg: Multipart) {
        let receipt: Receipt
        do {
            receipt = try msg.withFrameBytes { frames throws(WireError) in try Codec.decodeReceipt(frames) }
        } catch {
            logger.debug("bad receipt: \(error)")
            return
        }
        guard receipt.clientID == config.clientID, pending.removeValue(forKey: receipt.seq) != nil else { return }
        let remaining = pending.count
        runtime.record { s in
            s.pending = remaining
            switch receipt.decision {
            case .merged: s.merged += 1
            case .rejected: s.rejected += 1; s.lastRejectReason = receipt.reason
            case .duplicate: s.duplicates += 1
            }
        }
        if receipt.decision == .rejected {
            logger.debug("update rejected", metadata: ["seq": "\(receipt.seq)", "reason": "\(receipt.reason)", "detail": "\(receipt.message)"])
            if receipt.reason == .unknownBase && !snapshotOutstanding {
                // The aggregator is on another run (it restarted): start over from its model.
                requestSnapshot()
            }
        }
        runtime.emit(.receipt(receipt))
    }

    // MARK: Updates

    private func sendOutbox() throws {
        let (timeout, _) = runtime.settings()
        for u in runtime.takeOutbox() {
            var p = Pending(update: u, attempts: 0, deadline: ContinuousClock.now, sent: false)
            if try send(u) {
                p.sent = true
                p.attempts = 1
                p.deadline = ContinuousClock.now + (config.receiptTimeout ?? timeout)
                runtime.emit(.updateSent(seq: u.header.seq, baseVersion: u.header.baseVersion))
            } else {
                p.deadline = ContinuousClock.now + .milliseconds(200)
            }
            pending[u.header.seq] = p
            runtime.record { $0.updatesSent += 1; $0.pending = pending.count }
        }
    }

    /// Sends one update; false when the PUSH queue is full or no aggregator is connected.
    private func send(_ u: OutgoingUpdate) throws -> Bool {
        guard !layoutFrame.isEmpty else { return false }
        let (_, chunk) = runtime.settings()
        let n = u.parameters.storage.count
        var frames = [Message(Codec.encode(u.header)), Message(layoutFrame)]
        var off = 0
        repeat {
            let c = min(chunk, n - off)
            frames.append(Message(noCopy: UnsafeRawPointer(u.parameters.storage.baseAddress! + off), count: c * 4, owner: u.parameters))
            off += c
        } while off < n
        return try push.send(multipart: frames, dontWait: true)
    }

    private func checkTimers() throws {
        let now = ContinuousClock.now
        if snapshotOutstanding && now >= snapshotDeadline {
            // No reply: the aggregator may be down or restarting. A fresh DEALER drops any
            // request queued on the old connection.
            poller.replace(1, with: try ClientIO.makeDealer(context, config.snapshotEndpoint,
                                                              Int32(clamping: config.maxBackoff.components.seconds * 1000), config.curve), previous: &dealer)
            requestSnapshot()
        }
        let (timeout, _) = runtime.settings()
        let base = config.receiptTimeout ?? timeout
        var resent = 0
        for (seq, var p) in pending where now >= p.deadline {
            if try send(p.update) {
                p.attempts += 1
                if p.sent { resent += 1 }
                p.sent = true
                let factor = min(32, 1 << min(5, p.attempts - 1))
                p.deadline = now + min(config.maxBackoff, base * factor)
            } else {
                p.deadline = now + .milliseconds(200)
            }
            pending[seq] = p
            if p.attempts >= 3 && !snapshotOutstanding {
                // Repeated silence: the aggregator may have restarted on another run.
                requestSnapshot()
            }
        }
        if resent > 0 { runtime.record { $0.resends += resent } }
    }
}

extension Poller {
    /// Swaps the socket at `index` (re-creating a socket after a timeout).
    func replace(_ index: Int, with socket: Socket, previous: inout Socket) {
        previous.close()
        previous = socket
        self.reset(index, to: socket)
    }
}
