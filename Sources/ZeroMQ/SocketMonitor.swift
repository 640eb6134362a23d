import CZeroMQ
import Synchronization

/// One event of libzmq's socket monitor (`zmq_socket_monitor`): what happened, its value
/// (an errno, a ZAP status code or a `ZMQ_PROTOCOL_ERROR_*` code, depending on the event) and
/// the endpoint of the monitored socket it happened on.
public struct SocketEvent: Sendable, Hashable {
    public var event: UInt16
    public var value: UInt32
    public var endpoint: String

    public static let handshakeSucceeded = UInt16(ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
    public static let handshakeFailedNoDetail = UInt16(ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    public static let handshakeFailedProtocol = UInt16(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
    public static let handshakeFailedAuth = UInt16(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
    /// Every handshake failure event.
    public static let handshakeFailures = Int32(ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

    public init(event: UInt16, value: UInt32, endpoint: String) {
        self.event = event
        self.value = value
        self.endpoint = endpoint
    }

    /// Decodes a monitor message: a 6-byte frame (the event, a uint16, then the value, a
    /// uint32, both in host byte order) and a frame with the endpoint. Nil for anything else.
    public static func decode(_ frames: [[UInt8]]) -> SocketEvent? {
        guard frames.count == 2, frames[0].count == 6 else { return nil }
        let f = frames[0]
        let event = f.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt16.self) }
        let value = f.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self) }
        return SocketEvent(event: event, value: value, endpoint: String(decoding: frames[1], as: UTF8.self))
    }

    /// The failed handshake this event reports; nil when it reports something else.
    public var handshakeFailure: HandshakeFailure? {
        switch event {
        case Self.handshakeFailedAuth: .unauthorized(status: value)
        case Self.handshakeFailedProtocol:
            switch Int32(bitPattern: value) {
            case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: .cryptographic
            case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: .mechanismMismatch
            default: .protocolError(code: value)
            }
        case Self.handshakeFailedNoDetail: .noDetail(errno: value)
        default: nil
        }
    }
}

/// Why a ZMTP handshake failed, as libzmq reports it to the socket monitor.
public enum HandshakeFailure: Sendable, Hashable, CustomStringConvertible {
    /// The ZAP handler refused the peer's credentials (status code, 400 for an unknown key).
    case unauthorized(status: UInt32)
    /// CURVE cryptography failed: on a server, a client encrypted its HELLO to another server
    /// key; on a client, the server's reply did not authenticate.
    case cryptographic
    /// One side uses CURVE and the other does not (or another mechanism).
    case mechanismMismatch
    /// Another protocol error (`ZMQ_PROTOCOL_ERROR_*` code).
    case protocolError(code: UInt32)
    /// The connection closed during the handshake without a reason (a CURVE client whose
    /// server key is wrong sees this: the server drops the connection).
    case noDetail(errno: UInt32)

    /// A metric label: `unauthorized_key`, `cryptographic`, `mechanism_mismatch`, `protocol`, `no_detail`.
    public var cause: String {
        switch self {
        case .unauthorized: "unauthorized_key"
        case .cryptographic: "cryptographic"
        case .mechanismMismatch: "mechanism_mismatch"
        case .protocolError: "protocol"
        case .noDetail: "no_detail"
        }
    }

    public var description: String {
        switch self {
        case .unauthorized(let s): "refused by the ZAP handler (status \(s))"
        case .cryptographic: "CURVE cryptographic error"
        case .mechanismMismatch: "security mechanism mismatch (CURVE on one side only)"
        case .protocolError(let c): "protocol error 0x\(String(c, radix: 16))"
        case .noDetail(let e): "connection closed during the handshake (errno \(e))"
        }
    }
}

/// A socket monitor: a PAIR socket that receives the `events` of one socket (see
/// `SocketEvent`). Poll `socket` in the owner thread's loop and call `drain()` when it is
/// readable. Belongs to the thread that owns the monitored socket; close it before that one.
public final class SocketMonitor {
    /// The PAIR socket the events arrive on.
    public let socket: Socket
    private let watched: Socket
    private var closed = false
    private static let counter = Atomic<UInt64>(0)

    /// Starts monitoring `watched` for `events` (`ZMQ_EVENT_*` bits) over a fresh inproc endpoint.
    public init(_ watched: Socket, events: Int32) throws(ZMQError) {
        let n = Self.counter.add(1, ordering: .relaxed).newValue
        let endpoint = "inproc://apiary-monitor-\(n)"
        guard zmq_socket_monitor(watched.raw, endpoint, events) == 0 else { throw ZMQError.last("zmq_socket_monitor") }
        let s = try watched.context.socket(.pair)
        try s.set(.linger, 0)
        try s.connect(endpoint)
        socket = s
        self.watched = watched
    }

    /// The events queued so far (none when nothing happened); never blocks.
    public func drain(limit: Int = 256) -> [SocketEvent] {
        var out: [SocketEvent] = []
        while out.count < limit, let m = try? socket.receiveMultipart(dontWait: true, maxFrames: 4) {
            if let e = SocketEvent.decode(m.frames.map(\.bytes)) { out.append(e) }
        }
        return out
    }

    /// Stops the monitor, then closes its socket. In that order: libzmq 4.3 writes events to
    /// the monitor's PAIR with a blocking send from the I/O thread, so an event of a socket
    /// still monitored into a closed PAIR (a disconnect, say) would stall every socket of the
    /// context. (Closing the monitored socket first stops the monitor as well.)
    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        if let h = watched.handle { _ = zmq_socket_monitor(h, nil, 0) }
        socket.close()
    }
}
