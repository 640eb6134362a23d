import Foundation
import Testing
import ZeroMQ

@Suite("ZeroMQ wrapper")
struct ZeroMQTests {
    @Test("libzmq is 4.x with CURVE")
    func library() {
        #expect(Context.libraryVersion.major == 4)
        #expect(Context.has("curve"))
    }

    @Test("PUSH to PULL carries multipart messages", arguments: ["inproc://push-pull-test", "ipc:///tmp/apiary-zmq-test-\(getpid()).ipc", "tcp://127.0.0.1:*"])
    func pushPull(endpoint: String) throws {
        let ctx = try Context()
        let pull = try ctx.socket(.pull)
        try pull.set(.receiveTimeout, 5000)
        try pull.bind(endpoint)
        let push = try ctx.socket(.push)
        try push.connect(try pull.lastEndpoint)
        #expect(try push.send(multipart: [Message(string: "a"), Message([1, 2, 3]), Message()]))
        let m = try #require(try pull.receiveMultipart())
        #expect(m.frames.map(\.bytes) == [Array("a".utf8), [1, 2, 3], []])
        #expect(!m.truncated)
    }

    @Test("a closed socket monitor does not stall the context when its socket's connection drops")
    func monitorClosedFirst() throws {
        // libzmq 4.3 sends monitor events with a blocking send from the I/O thread: an event
        // into a monitor whose PAIR was closed without stopping it stalled every socket.
        let ctx = try Context()
        let server = try Context()
        var pub: Socket? = try server.socket(.pub)
        try pub!.bind("tcp://127.0.0.1:*")
        let endpoint = try pub!.lastEndpoint
        let sub = try ctx.socket(.sub)
        let monitor = try SocketMonitor(sub, events: 0xFFFF)
        try sub.connect(endpoint)
        Thread.sleep(forTimeInterval: 0.2)
        monitor.close()
        pub = nil  // the SUB's connection drops: events (disconnected, retried) for the monitor
        Thread.sleep(forTimeInterval: 0.3)
        // Another socket of the same context still works.
        let pull = try server.socket(.pull)
        try pull.set(.receiveTimeout, 5000)
        try pull.bind("tcp://127.0.0.1:*")
        let push = try ctx.socket(.push)
        try push.connect(try pull.lastEndpoint)
        #expect(try push.send(multipart: [Message(string: "still alive")]))
        #expect(try pull.receiveMultipart()?.frames.first?.bytes == Array("still alive".utf8))
    }

    @Test("a zero-copy frame is delivered intact and its owner is released")
    func zeroCopy() throws {
        final class Owner: @unchecked Sendable {
            // @unchecked Sendable: filled in init, then only read (by libzmq's I/O thread too).
            let values: UnsafeMutableBufferPointer<Float>
            init(_ n: Int) {
                values = .allocate(capacity: n)
                for i in 0..<n { values[i] = Float(i) }
            }
            deinit { values.deallocate() }
        }
        let ctx = try Context()
        let pull = try ctx.socket(.pull)
        try pull.set(.receiveTimeout, 5000)
        try pull.bind("tcp://127.0.0.1:*")
        let push = try ctx.socket(.push)
        try push.connect(try pull.lastEndpoint)
        weak var weakOwner: Owner?
        do {
            let owner = Owner(1 << 18)
            weakOwner = owner
            try push.send(Message(noCopy: owner.values.baseAddress!, count: owner.values.count * 4, owner: owner))
        }
        let m = try #require(try pull.receive())
        #expect(m.count == (1 << 18) * 4)
        m.withUnsafeBytes { b in
            #expect(b.loadUnaligned(fromByteOffset: 4 * 1000, as: Float.self) == 1000)
        }
        // libzmq frees the buffer on its I/O thread once it is sent.
        let deadline = Date().addingTimeInterval(5)
        while weakOwner != nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(weakOwner == nil)
    }

    @Test("a socket handed from thread to thread works; two threads inside calls on it at once trap")
    func oneOwnerAtATime() async throws {
        let ctx = try Context()
        let pull = try ctx.socket(.pull)
        try pull.bind("inproc://handed-over")
        nonisolated(unsafe) let handed = pull
        // Handed over to another thread, used there, handed back: fine.
        try await Task.detached { try handed.set(.receiveTimeout, 10) }.value
        #expect(try pull.receive() == nil)

        // The child traps on purpose: without the runtime's backtracer, which would symbolicate
        // this large test binary for tens of seconds on a loaded 2-core machine while the exit
        // test holds one of the cooperative pool's two threads. The child inherits the variable.
        let backtrace = getenv("SWIFT_BACKTRACE").map { String(cString: $0) }
        setenv("SWIFT_BACKTRACE", "enable=no", 1)
        defer { if let backtrace { setenv("SWIFT_BACKTRACE", backtrace, 1) } else { unsetenv("SWIFT_BACKTRACE") } }
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let ctx = try Context()
            let pull = try ctx.socket(.pull)
            try pull.set(.receiveTimeout, 5_000)
            try pull.bind("inproc://two-at-once")
            nonisolated(unsafe) let shared = pull
            let t = Thread { _ = try? shared.receive() }  // blocks inside a call for up to 5 s
            t.start()
            usleep(200_000)
            try pull.set(.receiveTimeout, 1)  // a second thread inside a call on the same socket
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("used by two threads at once"))
    }

    @Test("a non-blocking receive with nothing waiting is a value, not an error")
    func wouldBlock() throws {
        let ctx = try Context()
        let pull = try ctx.socket(.pull)
        try pull.bind("inproc://empty")
        #expect(try pull.receive(dontWait: true) == nil)
        let push = try ctx.socket(.push)
        try push.set(.sendHighWaterMark, 1)
        // Not connected to anyone, with IMMEDIATE: the send would block.
        try push.set(.immediate, true)
        try push.connect("tcp://127.0.0.1:1")
        #expect(try push.send([1], dontWait: true) == false)
    }

    @Test("zmq_poll reports the readable socket; a pipe doorbell wakes it")
    func polling() throws {
        let ctx = try Context()
        let a = try ctx.socket(.pair), b = try ctx.socket(.pair)
        try a.bind("inproc://poll-test")
        try b.connect("inproc://poll-test")
        let bell = Wakeup()
        let poller = Poller()
        let ia = poller.add(a)
        let ib = poller.add(b)
        let ifd = poller.add(fileDescriptor: bell.fileDescriptor)
        #expect(try poller.poll(timeoutMilliseconds: 0) == 0)
        try b.send([42])
        #expect(try poller.poll(timeoutMilliseconds: 1000) == 1)
        #expect(poller.isReadable(ia))
        #expect(!poller.isReadable(ib))
        _ = try a.receive()
        bell.ring()
        #expect(try poller.poll(timeoutMilliseconds: 1000) == 1)
        #expect(poller.isReadable(ifd))
        bell.drain()
        #expect(try poller.poll(timeoutMilliseconds: 0) == 0)
    }

    @Test("a shut-down context ends blocking calls with an orderly ETERM")
    func termination() async throws {
        let ctx = try Context()
        let done = Thread_safeFlag()
        let thread = Thread {
            do {
                let s = try ctx.socket(.pull)
                try s.bind("inproc://term-test")
                _ = try s.receive()
            } catch let e as ZMQError {
                if e.isContextTerminated { done.set() }
            } catch {}
        }
        thread.start()
        try await Task.sleep(for: .milliseconds(100))
        ctx.shutdown()
        let deadline = Date().addingTimeInterval(5)
        while !done.value && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(done.value)
    }

    @Test("every socket gets a finite linger; options round-trip")
    func options() throws {
        let ctx = try Context()
        let s = try ctx.socket(.pub)
        #expect(try s.get(.linger) == Socket.defaultLinger)
        try s.set(.sendHighWaterMark, 7)
        #expect(try s.get(.sendHighWaterMark) == 7)
        try s.set(.maxMessageSize, 1 << 20)
        #expect(try s.get(.maxMessageSize) == 1 << 20)
        #expect(throws: ZMQError.self) { try s.bind("nonsense://x") }
    }

    @Test("an oversized frame is dropped by ZMQ_MAXMSGSIZE before it reaches the receiver")
    func maxMessageSize() throws {
        let ctx = try Context()
        let pull = try ctx.socket(.pull)
        try pull.set(.maxMessageSize, 1024)
        try pull.set(.receiveTimeout, 300)
        try pull.bind("tcp://127.0.0.1:*")
        let push = try ctx.socket(.push)
        try push.connect(try pull.lastEndpoint)
        try push.send([UInt8](repeating: 7, count: 4096))
        #expect(try pull.receive() == nil)
    }

    @Test("CURVE key pairs are generated and checked")
    func curveKeys() throws {
        let kp = try CurveKeyPair.generate()
        #expect(kp.publicKey.count == 40)
        #expect(CurveKeyPair.isValidKey(kp.publicKey))
        #expect(try CurveKeyPair.publicKey(forSecret: kp.secretKey) == kp.publicKey)
        #expect(!CurveKeyPair.isValidKey("short"))
    }
}

final class Thread_safeFlag: @unchecked Sendable {
    // @unchecked Sendable: guarded by `lock`.
    private let lock = NSLock()
    private var flag = false
    func set() { lock.lock(); flag = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}
