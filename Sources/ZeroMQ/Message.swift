import CZeroMQ

/// One frame: an owning wrapper over `zmq_msg_t`.
///
/// A received message is read in place with `withUnsafeBytes` (no copy into `Data`). A
/// message built with `init(noCopy:count:owner:)` is sent without a copy: libzmq keeps the
/// owner alive until its own I/O thread is done with the bytes. Not thread-safe: one owner.
public final class Message {
    let pointer: UnsafeMutablePointer<zmq_msg_t>
    /// Whether more frames of the same multipart message follow (set on receive).
    public internal(set) var hasMore = false

    /// An empty message (to receive into, or an empty frame to send).
    public init() {
        pointer = .allocate(capacity: 1)
        zmq_msg_init(pointer)
    }

    /// A message holding a copy of `bytes`.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init(uninitializedCount: bytes.count)
        if bytes.count > 0 {
            zmq_msg_data(pointer).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
    }

    /// A message holding a copy of `bytes`.
    public convenience init(_ bytes: [UInt8]) {
        self.init(uninitializedCount: bytes.count)
        bytes.withUnsafeBytes { b in
            if b.count > 0 { zmq_msg_data(pointer).copyMemory(from: b.baseAddress!, byteCount: b.count) }
        }
    }

    /// A message holding the UTF-8 bytes of `string`.
    public convenience init(string: String) {
        self.init(Array(string.utf8))
    }

    /// A message of `count` bytes to fill through `withUnsafeMutableBytes` before sending.
    public init(uninitializedCount count: Int) {
        pointer = .allocate(capacity: 1)
        if zmq_msg_init_size(pointer, count) != 0 {
            // Only ENOMEM can fail here.
            fatalError("zmq_msg_init_size(\(count)): out of memory")
        }
    }

    /// A message that refers to `count` bytes at `base` without copying them. `owner` is
    /// retained until libzmq releases the bytes (its free callback runs on a libzmq thread),
    /// so the bytes must live as long as `owner` and must not change in the meantime.
    public init(noCopy base: UnsafeRawPointer, count: Int, owner: any AnyObject & Sendable) {
        pointer = .allocate(capacity: 1)
        let hint = Unmanaged.passRetained(owner).toOpaque()
        let rc = zmq_msg_init_data(pointer, UnsafeMutableRawPointer(mutating: base), count, { _, hint in
            if let hint { Unmanaged<AnyObject>.fromOpaque(hint).release() }
        }, hint)
        if rc != 0 {
            Unmanaged<AnyObject>.fromOpaque(hint).release()
            fatalError("zmq_msg_init_data: out of memory")
        }
    }

    deinit {
        zmq_msg_close(pointer)
        pointer.deallocate()
    }

    /// Size in bytes.
    public var count: Int { zmq_msg_size(pointer) }

    /// Reads the frame in place. The buffer is valid only inside `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let n = zmq_msg_size(pointer)
        guard n > 0, let base = zmq_msg_data(pointer) else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: base, count: n))
    }

    /// Writes the frame in place (before sending).
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let n = zmq_msg_size(pointer)
        guard n > 0, let base = zmq_msg_data(pointer) else { return try body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeMutableRawBufferPointer(start: base, count: n))
    }

    /// A copy of the bytes.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// A metadata property of a received message, for example "User-Id" (the id a ZAP
    /// handler assigned to the peer), "Peer-Address" or "Socket-Type"; nil when absent.
    public func property(_ name: String) -> String? {
        guard let v = zmq_msg_gets(pointer, name) else { return nil }
        return String(cString: v)
    }
}
