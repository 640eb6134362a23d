#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A detached POSIX thread for the client's sockets. Foundation's `Thread` would do the same,
/// but it was the only thing the client runtime needed from Foundation beyond what
/// FoundationEssentials has: without it, ApiaryClient imports FoundationEssentials only.
enum IOThread {
    /// Starts `body` on a new thread with a stack of `stackSize` bytes, named `name` where the
    /// platform's C module offers `pthread_setname_np` (Darwin; Glibc's needs _GNU_SOURCE).
    /// Throws a `ClientError` with code `ioFailed` when the system refuses a thread.
    static func start(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) throws(ClientError) {
        final class Box {
            let name: String  // Darwin only
            let body: @Sendable () -> Void
            init(name: String, body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
        }
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, stackSize)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        #if canImport(Darwin)
        var thread: pthread_t?
        #else
        var thread = pthread_t()
        #endif
        let rc = pthread_create(&thread, &attr, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            #if canImport(Darwin)
            pthread_setname_np(box.name)
            #endif
            box.body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ClientError(.ioFailed, "cannot start the client's I/O thread: \(String(cString: strerror(rc)))")
        }
    }
}
