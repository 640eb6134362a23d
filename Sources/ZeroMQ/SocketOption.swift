import CZeroMQ

/// A value that can be stored in or read from a socket option.
public protocol SocketOptionValue {
    /// Calls `body` with the option's bytes as libzmq expects them.
    func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R
    /// Reads the option back from the bytes libzmq wrote (`count` is the size it reported).
    static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> Self
}

extension Int32: SocketOptionValue {
    public func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        withUnsafeBytes(of: self) { body($0.baseAddress, 4) }
    }
    public static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> Int32 {
        var v: Int32 = 0
        var size = 4
        guard zmq_getsockopt(socket, option, &v, &size) == 0 else { throw ZMQError.last("zmq_getsockopt(\(option))") }
        return v
    }
}

extension Int64: SocketOptionValue {
    public func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        withUnsafeBytes(of: self) { body($0.baseAddress, 8) }
    }
    public static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> Int64 {
        var v: Int64 = 0
        var size = 8
        guard zmq_getsockopt(socket, option, &v, &size) == 0 else { throw ZMQError.last("zmq_getsockopt(\(option))") }
        return v
    }
}

extension Bool: SocketOptionValue {
    public func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        Int32(self ? 1 : 0).withOptionBytes(body)
    }
    public static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> Bool {
        try Int32.read(from: socket, option: option) != 0
    }
}

extension Array: SocketOptionValue where Element == UInt8 {
    public func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        withUnsafeBytes { body($0.baseAddress, $0.count) }
    }
    public static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 1024)
        var size = buf.count
        guard zmq_getsockopt(socket, option, &buf, &size) == 0 else { throw ZMQError.last("zmq_getsockopt(\(option))") }
        return Array(buf.prefix(size))
    }
}

extension String: SocketOptionValue {
    public func withOptionBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        var s = self
        return s.withUTF8 { body(UnsafeRawPointer($0.baseAddress), $0.count) }
    }
    public static func read(from socket: UnsafeMutableRawPointer, option: Int32) throws(ZMQError) -> String {
        let bytes = try [UInt8].read(from: socket, option: option)
        // String options come back NUL-terminated.
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// A typed socket option: `socket.set(.linger, 0)`, `try socket.get(.lastEndpoint)`.
public struct SocketOption<Value: SocketOptionValue>: Sendable {
    public let code: Int32
    public init(code: Int32) { self.code = code }
}

extension SocketOption where Value == Int32 {
    /// Milliseconds pending messages are kept after close (never -1 in Apiary).
    public static var linger: Self { .init(code: ZMQ_LINGER) }
    /// Send high-water mark, in whole messages (a multipart message counts once), not bytes.
    public static var sendHighWaterMark: Self { .init(code: ZMQ_SNDHWM) }
    /// Receive high-water mark, in whole messages (a multipart message counts once), not bytes.
    public static var receiveHighWaterMark: Self { .init(code: ZMQ_RCVHWM) }
    /// Milliseconds a blocking receive waits before returning "would block" (-1 forever).
    public static var receiveTimeout: Self { .init(code: ZMQ_RCVTIMEO) }
    /// Milliseconds a blocking send waits before returning "would block" (-1 forever).
    public static var sendTimeout: Self { .init(code: ZMQ_SNDTIMEO) }
    public static var reconnectInterval: Self { .init(code: ZMQ_RECONNECT_IVL) }
    public static var reconnectIntervalMax: Self { .init(code: ZMQ_RECONNECT_IVL_MAX) }
    public static var heartbeatInterval: Self { .init(code: ZMQ_HEARTBEAT_IVL) }
    public static var heartbeatTimeout: Self { .init(code: ZMQ_HEARTBEAT_TIMEOUT) }
    public static var heartbeatTTL: Self { .init(code: ZMQ_HEARTBEAT_TTL) }
    public static var sendBuffer: Self { .init(code: ZMQ_SNDBUF) }
    public static var receiveBuffer: Self { .init(code: ZMQ_RCVBUF) }
    public static var backlog: Self { .init(code: ZMQ_BACKLOG) }
    /// Readiness flags (`ZMQ_POLLIN` / `ZMQ_POLLOUT`), re-read after every send and receive.
    public static var events: Self { .init(code: ZMQ_EVENTS) }
    public static var handshakeInterval: Self { .init(code: ZMQ_HANDSHAKE_IVL) }
}

extension SocketOption where Value == Int64 {
    /// Largest inbound frame accepted, in bytes (-1 unlimited). libzmq checks it per frame
    /// before allocating and drops the connection of a peer that exceeds it.
    public static var maxMessageSize: Self { .init(code: ZMQ_MAXMSGSIZE) }
}

extension SocketOption where Value == Bool {
    /// Queue messages only to completed connections (set on PUSH to several endpoints).
    public static var immediate: Self { .init(code: ZMQ_IMMEDIATE) }
    /// ROUTER: fail with EHOSTUNREACH instead of silently dropping unroutable messages.
    public static var routerMandatory: Self { .init(code: ZMQ_ROUTER_MANDATORY) }
    /// Whether this socket is a CURVE server.
    public static var curveServer: Self { .init(code: ZMQ_CURVE_SERVER) }
    public static var ipv6: Self { .init(code: ZMQ_IPV6) }
    /// Whether the last received frame has more frames after it.
    public static var receiveMore: Self { .init(code: ZMQ_RCVMORE) }
}

extension SocketOption where Value == [UInt8] {
    /// SUB: subscribe to a topic prefix (empty = everything).
    public static var subscribe: Self { .init(code: ZMQ_SUBSCRIBE) }
    public static var unsubscribe: Self { .init(code: ZMQ_UNSUBSCRIBE) }
    public static var routingID: Self { .init(code: ZMQ_ROUTING_ID) }
}

extension SocketOption where Value == String {
    /// The endpoint last bound or connected, with the port a `*` bind picked.
    public static var lastEndpoint: Self { .init(code: ZMQ_LAST_ENDPOINT) }
    /// Z85 keys (40 characters) for CurveZMQ.
    public static var curvePublicKey: Self { .init(code: ZMQ_CURVE_PUBLICKEY) }
    public static var curveSecretKey: Self { .init(code: ZMQ_CURVE_SECRETKEY) }
    public static var curveServerKey: Self { .init(code: ZMQ_CURVE_SERVERKEY) }
    /// The ZAP domain this socket authenticates in.
    public static var zapDomain: Self { .init(code: ZMQ_ZAP_DOMAIN) }
}
