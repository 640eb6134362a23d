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

    /// The error of the last failed libzmq call on this thread.
    static func last(_ operation: @autoclosure () -> String) -> ZMQError {
        ZMQError(errno: zmq_errno(), operation: operation())
    }
}

/// What a retried libzmq call came to.
enum CallOutcome {
    case done(Int32)
    case wouldBlock
}

/// Calls `body` until it does not fail with EINTR. Returns `.wouldBlock` for EAGAIN; throws
/// `ZMQError` for anything else.
@inline(__always)
func retrying(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws(ZMQError) -> CallOutcome {
    while true {
        let rc = body()
        if rc >= 0 { return .done(rc) }
        let e = zmq_errno()
        if e == EINTR { continue }
        if e == EAGAIN { return .wouldBlock }
        throw ZMQError(errno: e, operation: operation())
    }
}
