import CZeroMQ
import Synchronization

/// A ZeroMQ socket. Not thread-safe: one owner at a time (a thread, or a task that keeps it
/// to itself); it may be handed from one owner to the next, never used by two at once (a call
/// made while another thread is inside one traps). It keeps its context alive and is closed on `close()` or deinit, with a
/// finite linger (`Socket.defaultLinger` unless set otherwise), so shutdown never hangs.
public final class Socket {
    /// Linger given to every new socket, in milliseconds.
    public static let defaultLinger: Int32 = 500

    public let type: SocketType
    let context: Context
    private(set) var handle: UnsafeMutableRawPointer?

    init(context: Context, type: SocketType) throws(ZMQError) {
        guard let h = zmq_socket(context.handle, type.raw) else { throw ZMQError.last("zmq_socket(\(type))") }
        self.context = context
        self.type = type
        self.handle = h
        try set(.linger, Socket.defaultLinger)
    }

    deinit { close() }

    /// Closes the socket; pending outbound messages are kept for at most the linger.
    public func close() {
        if let h = handle {
            zmq_close(h)
            handle = nil
        }
    }

    var raw: UnsafeMutableRawPointer {
        guard let h = handle else { preconditionFailure("use of a closed \(type) socket") }
        return h
    }

    /// Set while a call on this socket runs.
    private let inCall = Atomic<Bool>(false)

    /// Runs one libzmq call on this socket. A socket may move from thread to thread (the
    /// acquire/release pair here is the full barrier libzmq asks for), but two threads inside
    /// calls on it at once is a bug that corrupts libzmq's state silently: it traps here instead,
    /// as SwiftNIO's `NIOLoopBound` and GRDB's scheduling watchdog check their confinement.
    @inline(__always)
    func exclusive<R, E: Error>(_ body: (UnsafeMutableRawPointer) throws(E) -> R) throws(E) -> R {
        precondition(!inCall.exchange(true, ordering: .acquiring), "a \(type) socket used by two threads at once: a ZeroMQ socket has one owner at a time")
        defer { inCall.store(false, ordering: .releasing) }
        return try body(raw)
    }

    // MARK: Endpoints

    /// Binds to `endpoint` (`tcp://127.0.0.1:*` picks a free port: read `lastEndpoint`).
    public func bind(_ endpoint: String) throws(ZMQError) {
        try exclusive { (raw) throws(ZMQError) in try checked("zmq_bind(\(endpoint))") { zmq_bind(raw, endpoint) } }
    }

    /// Connects to `endpoint`; libzmq reconnects by itself when the peer goes away.
    public func connect(_ endpoint: String) throws(ZMQError) {
        try exclusive { (raw) throws(ZMQError) in try checked("zmq_connect(\(endpoint))") { zmq_connect(raw, endpoint) } }
    }

    public func unbind(_ endpoint: String) throws(ZMQError) {
        try exclusive { (raw) throws(ZMQError) in try checked("zmq_unbind(\(endpoint))") { zmq_unbind(raw, endpoint) } }
    }

    public func disconnect(_ endpoint: String) throws(ZMQError) {
        try exclusive { (raw) throws(ZMQError) in try checked("zmq_disconnect(\(endpoint))") { zmq_disconnect(raw, endpoint) } }
    }

    /// The endpoint last bound or connected, with the actual port of a `*` bind.
    public var lastEndpoint: String {
        get throws(ZMQError) { try get(.lastEndpoint) }
    }

    // MARK: Options

    public func set<V>(_ option: SocketOption<V>, _ value: V) throws(ZMQError) {
        try exclusive { (raw) throws(ZMQError) in
            try checked("zmq_setsockopt(\(option.code))") { value.withOptionBytes { zmq_setsockopt(raw, option.code, $0, $1) } }
        }
    }

    public func get<V>(_ option: SocketOption<V>) throws(ZMQError) -> V {
        try exclusive { (raw) throws(ZMQError) in try V.read(from: raw, option: option.code) }
    }

    // MARK: Sending

    /// Sends one frame. Returns false when the send would block (HWM reached with
    /// `dontWait`, or the send timeout passed); the message is then not sent and still owned
    /// by the caller. Throws `ZMQError` otherwise.
    @discardableResult
    public func send(_ message: Message, more: Bool = false, dontWait: Bool = false) throws(ZMQError) -> Bool {
        let flags = (more ? ZMQ_SNDMORE : 0) | (dontWait ? ZMQ_DONTWAIT : 0)
        switch try exclusive({ (raw) throws(ZMQError) in try retrying("zmq_msg_send(\(type))", { zmq_msg_send(message.pointer, raw, flags) }) }) {
        case .done: return true
        case .wouldBlock: return false
        }
    }

    /// Sends a copy of `bytes` as one frame. Same results as `send(_:more:dontWait:)`.
    @discardableResult
    public func send(bytes: UnsafeRawBufferPointer, more: Bool = false, dontWait: Bool = false) throws(ZMQError) -> Bool {
        let flags = (more ? ZMQ_SNDMORE : 0) | (dontWait ? ZMQ_DONTWAIT : 0)
        switch try exclusive({ (raw) throws(ZMQError) in try retrying("zmq_send(\(type))", { zmq_send(raw, bytes.baseAddress, bytes.count, flags) }) }) {
        case .done: return true
        case .wouldBlock: return false
        }
    }

    /// Sends a copy of `bytes` as one frame.
    @discardableResult
    public func send(_ bytes: [UInt8], more: Bool = false, dontWait: Bool = false) throws(ZMQError) -> Bool {
        let flags = (more ? ZMQ_SNDMORE : 0) | (dontWait ? ZMQ_DONTWAIT : 0)
        let outcome = try exclusive { (raw) throws(ZMQError) in
            try retrying("zmq_send(\(type))", { bytes.withUnsafeBytes { b in zmq_send(raw, b.baseAddress, b.count, flags) } })
        }
        if case .done = outcome { return true }
        return false
    }

    /// Sends `frames` as one multipart message (atomic for the receiver). With `dontWait`,
    /// returns false if the first frame would block (nothing was sent). Once the first frame
    /// is queued, libzmq accepts the remaining ones, so a message is never half-sent.
    @discardableResult
    public func send(multipart frames: [Message], dontWait: Bool = false) throws(ZMQError) -> Bool {
        precondition(!frames.isEmpty, "a multipart message needs at least one frame")
        for (i, f) in frames.enumerated() {
            let last = i == frames.count - 1
            let ok = try send(f, more: !last, dontWait: dontWait && i == 0)
            if !ok { return false }
        }
        return true
    }

    // MARK: Receiving

    /// Receives one frame; nil when nothing is waiting (`dontWait`) or the receive timeout
    /// passed. `hasMore` on the result says whether more frames follow.
    public func receive(dontWait: Bool = false) throws(ZMQError) -> Message? {
        let m = Message()
        switch try exclusive({ (raw) throws(ZMQError) in try retrying("zmq_msg_recv(\(type))", { zmq_msg_recv(m.pointer, raw, dontWait ? ZMQ_DONTWAIT : 0) }) }) {
        case .done:
            m.hasMore = zmq_msg_more(m.pointer) != 0
            return m
        case .wouldBlock:
            return nil
        }
    }

    /// Receives a whole multipart message; nil when nothing is waiting (`dontWait`). The
    /// frames after the first are always already there (multipart messages arrive whole).
    /// At most `maxFrames` are kept; extra frames are drained and dropped and `truncated` is
    /// set on the result, so a hostile peer cannot make us hold an unbounded frame list.
    public func receiveMultipart(dontWait: Bool = false, maxFrames: Int = 1 << 16) throws(ZMQError) -> Multipart? {
        guard let first = try receive(dontWait: dontWait) else { return nil }
        var frames = [first]
        var truncated = false
        var more = first.hasMore
        while more {
            guard let next = try receive() else { break }
            more = next.hasMore
            if frames.count < maxFrames { frames.append(next) } else { truncated = true }
        }
        return Multipart(frames: frames, truncated: truncated)
    }

    // MARK: Readiness

    /// `ZMQ_EVENTS`: whether a receive or send would succeed now.
    public var readiness: PollEvents {
        get throws(ZMQError) { PollEvents(rawValue: Int16(truncatingIfNeeded: try get(.events))) }
    }
}

/// A received multipart message.
public struct Multipart {
    public var frames: [Message]
    /// Set when the peer sent more frames than the receiver accepts; the extra ones were dropped.
    public var truncated: Bool

    public init(frames: [Message], truncated: Bool = false) {
        self.frames = frames
        self.truncated = truncated
    }

    /// Calls `body` with every frame's bytes, read in place (valid only inside `body`).
    public func withFrameBytes<R, E: Error>(_ body: ([UnsafeRawBufferPointer]) throws(E) -> R) throws(E) -> R {
        var views: [UnsafeRawBufferPointer] = []
        views.reserveCapacity(frames.count)
        for f in frames {
            let n = zmq_msg_size(f.pointer)
            views.append(UnsafeRawBufferPointer(start: n > 0 ? zmq_msg_data(f.pointer) : nil, count: n))
        }
        // The messages (and so their data) are kept alive by `self` for the whole call.
        return try withExtendedLifetime(frames) { () throws(E) -> R in try body(views) }
    }
}

extension Socket {
    /// ZMTP heartbeats (PING every `interval`, the connection dropped after `timeout` without
    /// traffic): how Apiary notices a peer that vanished without closing (a killed process, a
    /// cut link). Every long-lived Apiary connection uses `Socket.linkHeartbeat`.
    public func setHeartbeat(intervalMilliseconds interval: Int32, timeoutMilliseconds timeout: Int32) throws(ZMQError) {
        try set(.heartbeatInterval, interval)
        try set(.heartbeatTimeout, timeout)
    }

    /// Apiary's heartbeat on the model, snapshot and update connections, both ends: a PING
    /// every 2 s, a connection silent for 6 s is dropped (and reconnected by the connecting side).
    public static let linkHeartbeat = (intervalMilliseconds: Int32(2000), timeoutMilliseconds: Int32(6000))

    /// `setHeartbeat` with `linkHeartbeat`.
    public func setLinkHeartbeat() throws(ZMQError) {
        try setHeartbeat(intervalMilliseconds: Self.linkHeartbeat.intervalMilliseconds, timeoutMilliseconds: Self.linkHeartbeat.timeoutMilliseconds)
    }
}
