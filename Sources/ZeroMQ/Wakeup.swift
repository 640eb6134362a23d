#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A thread-safe doorbell for a socket-owning thread: other threads `ring()` it, the owner
/// polls `fileDescriptor` (with `Poller.add(fileDescriptor:)`) and calls `drain()`.
/// Backed by a non-blocking pipe.
public final class Wakeup: @unchecked Sendable {
    // @unchecked Sendable: the pipe is a kernel object; write and read on it are thread-safe
    // system calls, and the descriptors are immutable.
    public let fileDescriptor: Int32
    private let writeEnd: Int32

    public init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe failed: errno \(errno)")
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        fileDescriptor = fds[0]
        writeEnd = fds[1]
    }

    deinit {
        close(fileDescriptor)
        close(writeEnd)
    }

    /// Wakes the owner's poll. Never blocks (a full pipe is already ringing).
    public func ring() {
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    /// Clears pending rings (call after the poll said readable).
    public func drain() {
        var buf = [UInt8](repeating: 0, count: 256)
        while read(fileDescriptor, &buf, 256) > 0 {}
    }
}
