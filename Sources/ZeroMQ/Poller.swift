import CZeroMQ

/// Readiness flags for polling.
public struct PollEvents: OptionSet, Sendable, Hashable {
    public let rawValue: Int16
    public init(rawValue: Int16) { self.rawValue = rawValue }
    public static let readable = PollEvents(rawValue: Int16(ZMQ_POLLIN))
    public static let writable = PollEvents(rawValue: Int16(ZMQ_POLLOUT))
}

/// Waits on several sockets at once with `zmq_poll` (Debian's libzmq has no draft
/// `zmq_poller`). Register sockets once, then call `poll` in the owner thread's loop.
/// Not thread-safe: it belongs to the thread that owns its sockets.
public final class Poller {
    private var items: [zmq_pollitem_t] = []
    private var sockets: [Socket] = []

    public init() {}

    /// Adds `socket`, watched for `events`; returns its index for `events(at:)`.
    @discardableResult
    public func add(_ socket: Socket, events: PollEvents = .readable) -> Int {
        items.append(zmq_pollitem_t(socket: socket.raw, fd: 0, events: events.rawValue, revents: 0))
        sockets.append(socket)
        return items.count - 1
    }

    /// Adds a plain file descriptor (for example an eventfd used to wake the owner thread);
    /// returns its index.
    @discardableResult
    public func add(fileDescriptor fd: Int32, events: PollEvents = .readable) -> Int {
        items.append(zmq_pollitem_t(socket: nil, fd: fd, events: events.rawValue, revents: 0))
        return items.count - 1
    }

    /// Puts `socket` in place of the socket at `index` (after re-creating a socket).
    public func reset(_ index: Int, to socket: Socket) {
        items[index].socket = socket.raw
        sockets[index] = socket
    }

    /// Changes what the socket at `index` is watched for.
    public func watch(_ index: Int, for events: PollEvents) {
        items[index].events = events.rawValue
    }

    /// Waits until a socket is ready or `timeoutMilliseconds` pass (-1: forever). Returns
    /// the number of ready sockets (0 on timeout or EINTR). Throws `ZMQError` (for example
    /// `isContextTerminated` after `Context.shutdown()`).
    @discardableResult
    public func poll(timeoutMilliseconds: Int) throws(ZMQError) -> Int {
        let n = items.count
        switch try retrying("zmq_poll", retryInterrupted: false, { items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32(n), timeoutMilliseconds) } }) {
        case .done(let ready): return Int(ready)
        case .wouldBlock: return 0
        }
    }

    /// What the socket at `index` was ready for after the last `poll`.
    public func events(at index: Int) -> PollEvents { PollEvents(rawValue: items[index].revents) }

    /// Whether the socket at `index` was readable after the last `poll`.
    public func isReadable(_ index: Int) -> Bool { events(at: index).contains(.readable) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
