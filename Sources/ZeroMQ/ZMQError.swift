import CZeroMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error returned by libzmq, with its errno and the call that failed.
///
/// `EINTR` never surfaces (calls are retried) and `EAGAIN` is returned as a value (`nil` or
/// `false`) by the non-blocking calls, never thrown. `ETERM` surfaces as an error with
/// `isContextTerminated == true`: an orderly shutdown, which loops treat as "stop".
public struct ZMQError: Error, Hashable, CustomStringConvertible {
    /// The errno value libzmq reported.
    public let errno: Int32
    /// The libzmq call that failed, for example `zmq_bind(tcp://127.0.0.1:5555)`.
    public let operation: String

    public init(errno: Int32, operation: String) {
        self.errno = errno
        self.operation = operation
    }

    /// The context was terminated or shut down: the socket's owner should close it and stop.
    public var isContextTerminated: Bool { errno == ETERM }

    public var description: String {
        "\(operation): \(String(cString: zmq_strerror(errno))) (errno \(errno))"
    }

    /// The error of the last failed libzmq call on this thread. Every failed libzmq call of
    /// this module goes through here (or through `retrying`, which calls it), so that an errno
    /// that can only mean a bug in this program traps at once instead of travelling on as an
    /// error somebody may log and ignore (as SwiftNIO's `preconditionIsNotUnacceptableErrno`).
    static func last(_ operation: @autoclosure () -> String) -> ZMQError {
        let e = zmq_errno()
        precondition(!isProgrammingError(e), "\(operation()): \(String(cString: zmq_strerror(e))) (errno \(e)): a bug in the caller, not a run-time condition")
        return ZMQError(errno: e, operation: operation())
    }

    /// Errnos that libzmq returns only for a call that could never be right: a handle that is
    /// not a socket (`ENOTSOCK`: closed or never created) or a bad pointer (`EFAULT`: an invalid
    /// message or context). `EINVAL` is not among them: libzmq also returns it for a malformed
    /// endpoint, which comes from configuration.
    static func isProgrammingError(_ e: Int32) -> Bool {
        e == ENOTSOCK || e == EFAULT
    }
}

/// What a retried libzmq call came to.
enum CallOutcome {
    case done(Int32)
    case wouldBlock
}

/// The one errno helper of this module: calls `body` (a libzmq call returning an int) until
/// it does not fail with EINTR (or, with `retryInterrupted: false`, returns `.wouldBlock` for
/// EINTR too, for a poll whose caller re-checks its own deadline). Returns `.wouldBlock` for
/// EAGAIN; traps on an errno that means a bug (`ZMQError.isProgrammingError`); throws
/// `ZMQError` for anything else.
@inline(__always)
func retrying(_ operation: @autoclosure () -> String, retryInterrupted: Bool = true, _ body: () -> Int32) throws(ZMQError) -> CallOutcome {
    while true {
        let rc = body()
        if rc >= 0 { return .done(rc) }
        let e = zmq_errno()
        if e == EINTR { if retryInterrupted { continue } else { return .wouldBlock } }
        if e == EAGAIN { return .wouldBlock }
        throw ZMQError.last(operation())
    }
}

/// `retrying` for calls where "would block" cannot happen or is a failure like any other
/// (bind, connect, options): EINTR is retried, everything else throws (or traps, as above).
@inline(__always)
func checked(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws(ZMQError) {
    while true {
        if body() >= 0 { return }
        if zmq_errno() == EINTR { continue }
        throw ZMQError.last(operation())
    }
}
