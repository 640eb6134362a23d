import CZeroMQ

/// A ZeroMQ context: owns libzmq's I/O threads. Thread-safe; share one per process.
///
/// Sockets keep their context alive; the context is terminated when the last reference to it
/// and to its sockets is gone. Every socket has a finite linger, so termination never hangs.
public final class Context: @unchecked Sendable {
    // @unchecked Sendable: libzmq documents contexts as thread-safe; `handle` is immutable.
    let handle: UnsafeMutableRawPointer

    /// Creates a context with `ioThreads` libzmq I/O threads (one moves about 1 GB/s).
    public init(ioThreads: Int = 1) throws(ZMQError) {
        guard let h = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = h
        if ioThreads != 1 {
            do throws(ZMQError) {
                try checked("zmq_ctx_set(ZMQ_IO_THREADS, \(ioThreads))") { zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(ioThreads)) }
            } catch {
                zmq_ctx_term(h)
                throw error
            }
        }
        // A fleet of thousands of clients needs more than the default 1023 sockets.
        _ = zmq_ctx_set(h, ZMQ_MAX_SOCKETS, 65535)
    }

    /// Makes every blocking call on this context's sockets return with an error whose
    /// `isContextTerminated` is true. Safe to call from any thread, more than once.
    public func shutdown() {
        _ = zmq_ctx_shutdown(handle)
    }

    /// Creates a socket of `type` with a finite linger (`defaultLinger`).
    public func socket(_ type: SocketType) throws(ZMQError) -> Socket {
        try Socket(context: self, type: type)
    }

    deinit {
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// The libzmq version, for example (4, 3, 4).
    public static var libraryVersion: (major: Int, minor: Int, patch: Int) {
        var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
        zmq_version(&a, &b, &c)
        return (Int(a), Int(b), Int(c))
    }

    /// Whether libzmq was built with `capability`, for example "curve" or "draft".
    public static func has(_ capability: String) -> Bool { zmq_has(capability) == 1 }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
