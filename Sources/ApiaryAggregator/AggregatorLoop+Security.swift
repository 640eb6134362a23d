import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The aggregator thread's security plane: the start-up self-test of the ZAP handler and
/// the accounting of failed handshakes (socket monitors and ZAP refusals).
extension AggregatorLoop {
    /// Counts failed handshakes by cause (monitor events and the ZAP handler's refusals) and
    /// logs each cause at most every 30 s with what it most likely means.
    func collectHandshakeFailures() {
        var seen: [String: (count: Int, failure: HandshakeFailure?, endpoint: String)] = [:]
        for (m, index) in monitors where poller.isReadable(index) {
            for e in m.drain() {
                guard let f = e.handshakeFailure else { continue }
                seen[f.cause, default: (0, f, e.endpoint)].count += 1
            }
        }
        var changed = false
        if let zap, zap.refusedCount > zapRefusalsCounted {
            changed = true
            // Logged by the ZAP handler itself, with the key and the peer's address.
            let n = zap.refusedCount - zapRefusalsCounted
            zapRefusalsCounted = zap.refusedCount
            handshakeFailures["unauthorized_key", default: 0] += UInt64(n)
            metrics.recordHandshakeFailures(cause: "unauthorized_key", count: n)
        }
        guard changed || !seen.isEmpty else { return }
        let now = ContinuousClock.now
        for (cause, s) in seen {
            handshakeFailures[cause, default: 0] += UInt64(s.count)
            metrics.recordHandshakeFailures(cause: cause, count: s.count)
            guard handshakeLog[cause].map({ now - $0 >= .seconds(30) }) ?? true else { continue }
            handshakeLog[cause] = now
            let hint: String = switch s.failure {
            case .cryptographic?: "a peer encrypted to another server key: its security.server_public_key_file is not this aggregator's public key"
            case .mechanismMismatch?: config.curve == nil
                ? "a peer uses CURVE but this aggregator runs --insecure" : "a peer connects without CURVE (--insecure) to this CURVE aggregator"
            case .noDetail?: config.curve == nil
                ? "a peer closed the connection during the handshake" : "a peer closed the connection during the handshake: often a client running --insecure against this CURVE aggregator, or one whose security.server_public_key_file is not this aggregator's public key"
            default: "a peer's handshake failed"
            }
            logger.warning("handshake failed: \(hint)", metadata: [
                "cause": "\(cause)", "endpoint": "\(s.endpoint)", "count": "\(s.count)", "total": "\(handshakeFailures[cause] ?? 0)",
                "detail": "\(s.failure.map { "\($0)" } ?? "-")",
            ])
        }
        aggregator.publish(handshakeFailures: handshakeFailures)
    }

    /// Without a ZAP handler libzmq admits any CURVE key: prove that an unknown key is
    /// refused before serving anyone, or refuse to start.
    static func selfTest(context: Context, zap: ZAPHandler?, serverKey: String, endpoint: String) throws {
        let stranger = try CurveKeyPair.generate()
        zap?.expectProbe(stranger.publicKey)
        let probe = try context.socket(.dealer)
        defer { probe.close() }
        try probe.set(.linger, 0)
        try probe.set(.curveServerKey, serverKey)
        try probe.set(.curvePublicKey, stranger.publicKey)
        try probe.set(.curveSecretKey, stranger.secretKey)
        try probe.connect(endpoint.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1"))
        _ = try probe.send(Codec.encode(SnapshotRequest(requestID: 1, clientID: "")), dontWait: true)
        let deadline = Date().addingTimeInterval(zap == nil ? 1 : 5)
        while Date() < deadline {
            if let zap, zap.deniedKeys.contains(stranger.publicKey) { return }
            // A reply would mean the stranger got in.
            if zap == nil, try probe.receive(dontWait: true) != nil { break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw AggregatorError.startFailed("security self-test failed: an unknown CURVE key was not refused by the ZAP handler", code: .securitySelfTestFailed)
    }
}
