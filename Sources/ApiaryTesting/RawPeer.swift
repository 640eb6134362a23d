import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import ZeroMQ

/// A peer speaking the wire protocol with raw sockets (docs/PROTOCOL.md): pushes hand-made
/// updates, well-formed or not, and reads its receipts. For testing what an aggregator does
/// with exactly these frames; a real client is `ClientRuntime`.
///
/// Its calls block the calling thread (up to the receive timeout): call them from a
/// synchronous test, or through `offPool`.
public final class RawPeer {
    public let context: Context
    public let push: Socket
    public let sub: Socket
    public let clientID: String
    /// How long `receipt()` waits.
    public var receiptTimeout: Double = 15

    public convenience init(_ e: Aggregator.Endpoints, clientID: String, curve: CurveClientConfig? = nil) throws {
        try self.init(model: e.model, update: e.update, clientID: clientID, curve: curve)
    }

    /// Connects to the aggregator's model (PUB) and update (PULL) endpoints and returns once
    /// the aggregator has applied this peer's receipt subscription, so that no receipt can be
    /// dropped for want of it (a PUB drops what no subscription matches).
    ///
    /// The proof is a model broadcast: the peer subscribes to its receipts, connects, and only
    /// then subscribes to the model topic. Subscriptions travel in order over the one
    /// connection, so a model chunk arriving means the receipt subscription before it was
    /// applied. The aggregator re-announces its model every `heartbeatInterval` (5 s by
    /// default), which bounds the wait: give test aggregators a short one.
    ///
    /// With `curve`, both sockets authenticate with its keys (a CURVE aggregator's client).
    public init(model: String, update: String, clientID: String, curve: CurveClientConfig? = nil, within seconds: Double = 15) throws {
        context = try Context()
        self.clientID = clientID
        push = try context.socket(.push)
        sub = try context.socket(.sub)
        if let curve {
            for s in [push, sub] {
                try s.set(.curveServerKey, curve.serverPublicKey)
                try s.set(.curvePublicKey, curve.keyPair.publicKey)
                try s.set(.curveSecretKey, curve.keyPair.secretKey)
            }
        }
        try push.connect(update)
        try sub.set(.subscribe, Topic.receipt(clientID: clientID))
        try sub.set(.receiveTimeout, 100)
        let monitor = try SocketMonitor(sub, events: Int32(SocketEvent.handshakeSucceeded))
        defer { monitor.close() }
        try sub.connect(model)
        let deadline = Date().addingTimeInterval(seconds)
        // The subscriptions of a connection are sent once its handshake is done: subscribe to
        // the model after that, so that it follows the receipt subscription on the wire.
        while !monitor.drain().contains(where: { $0.event == SocketEvent.handshakeSucceeded }) {
            guard Date() < deadline else { throw Timeout(what: "the handshake with \(model)") }
            Thread.sleep(forTimeInterval: 0.005)
        }
        try sub.set(.subscribe, Topic.model)
        while true {
            if let m = try sub.receiveMultipart(), m.frames.first?.bytes == Topic.model { break }
            guard Date() < deadline else { throw Timeout(what: "a model broadcast from \(model) (is its heartbeat longer than \(seconds) s?)") }
        }
        // Model chunks still queued or in flight are skipped by `receipt()`.
        try sub.set(.unsubscribe, Topic.model)
    }

    /// Sends `frames` as one multipart message to the update endpoint.
    public func send(frames: [[UInt8]]) throws {
        try push.send(multipart: frames.map { Message($0) })
    }

    /// Sends a full-model update of `values` in `layout`, from `base`, with `seq`.
    /// `epoch`: the client epoch (0: none, as from clients before epochs; PROTOCOL.md 3.4).
    public func sendUpdate(runID: UInt64, base: UInt64, seq: UInt64, values: [Float], layout: ParameterLayout, epoch: UInt64 = 0) throws {
        let header = Codec.encode(UpdateHeader(runID: runID, baseVersion: base, seq: seq, sampleCount: 1, clientID: clientID, epoch: epoch))
        let payload = values.withUnsafeBytes { Array($0) }
        try send(frames: [header, Codec.encodeLayout(layout), payload])
    }

    /// The next receipt for this peer; throws `Timeout` after `receiptTimeout` seconds.
    public func receipt() throws -> Receipt {
        let deadline = Date().addingTimeInterval(receiptTimeout)
        let topic = Topic.receipt(clientID: clientID)
        while Date() < deadline {
            guard let m = try sub.receiveMultipart(), m.frames.first?.bytes == topic else { continue }
            return try m.withFrameBytes { f throws(WireError) in try Codec.decodeReceipt(f) }
        }
        throw Timeout(what: "a receipt for \(clientID)")
    }
}

/// A trainer for protocol tests: moves every parameter toward `target` by `step` after
/// `delay`, and reports 10 samples.
public struct StepTrainer: Trainer {
    public let layout: ParameterLayout
    public var target: Float
    public var step: Float
    public var delay: Duration

    public init(layout: ParameterLayout, target: Float = 1, step: Float = 0.5, delay: Duration = .milliseconds(5)) {
        self.layout = layout
        self.target = target
        self.step = step
        self.delay = delay
    }

    public func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        try await Task.sleep(for: delay)
        return TrainingResult(parameters: model.parameters.map { $0 + step * (target - $0) }, sampleCount: 10)
    }
}
