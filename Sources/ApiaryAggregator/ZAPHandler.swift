import Foundation
import Logging
import Synchronization
import ZeroMQ

/// A ZAP handler (RFC 27) for CURVE: admits only the public keys in an allowlist and names
/// each connection by its client id (which then arrives on every message as the `User-Id`
/// property). Runs on its own thread with a REP socket on `inproc://zeromq.zap.01` in the
/// aggregator's context; it must be started before any CURVE server socket binds.
///
/// The allowlist comes from an authorized-keys file, re-read when the file changes (checked
/// once a second), and/or from keys given in code (the demo's). A changed file applies to new
/// connections; connections already open stay open.
final class ZAPHandler: Sendable {
    private struct State: Sendable {
        var keys: AuthorizedKeys
        var fileStamp: Date?
        var allowed = 0
        var denied: [String] = []
        /// Refusals other than the self-test's probes.
        var refusedCount = 0
        /// Keys of the start-up self-test's probe: their refusal is expected, not an intrusion.
        var probes: Set<String> = []
    }

    private let state: Mutex<State>
    private let stopFlag = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let path: String?
    private let fixed: AuthorizedKeys
    private let logger: Logger

    /// Reads the authorized keys (the file's and `extraKeys`); `start(in:)` serves them. Throws
    /// when the file cannot be read or parsed.
    init(authorizedKeysPath: String?, extraKeys: AuthorizedKeys, logger: Logger) throws {
        self.path = authorizedKeysPath
        self.fixed = extraKeys
        self.logger = logger
        var keys = extraKeys
        var stamp: Date?
        if let p = authorizedKeysPath {
            for (k, v) in try AuthorizedKeys.load(path: p).clients { keys.authorize(key: k, clientID: v) }
            stamp = ZAPHandler.modificationDate(p)
        }
        state = Mutex(State(keys: keys, fileStamp: stamp))
    }

    /// Starts the handler's thread in `context`; returns once its socket is bound (before any
    /// CURVE server socket of the context binds). Throws when the endpoint cannot be bound.
    func start(in context: Context) throws {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let ready = DispatchSemaphore(value: 0)
        let bindError = Mutex<String?>(nil)
        let t = Thread { [self] in
            let socket: Socket
            do {
                socket = try context.socket(.rep)
                try socket.set(.linger, 0)
                try socket.bind("inproc://zeromq.zap.01")
            } catch {
                bindError.withLock { $0 = "\(error)" }
                ready.signal()
                done.signal()
                return
            }
            ready.signal()
            self.serve(socket)
            socket.close()
            done.signal()
        }
        t.name = "apiary-zap"
        t.start()
        ready.wait()
        if let e = bindError.withLock({ $0 }) { throw AggregatorError.startFailed("ZAP handler: \(e)") }
        logger.info("ZAP handler started", metadata: ["authorized_keys": "\(state.withLock { $0.keys.clients.count })", "file": "\(path ?? "none")"])
    }

    /// Connections admitted so far.
    var allowedCount: Int { state.withLock { $0.allowed } }

    /// Connections refused so far, the self-test's probe not counted.
    var refusedCount: Int { state.withLock { $0.refusedCount } }

    /// Public keys refused so far (most recent last).
    var deniedKeys: [String] { state.withLock { $0.denied } }

    /// Marks `key` as the self-test's probe: its refusal is logged at debug, not as a warning.
    func expectProbe(_ key: String) { state.withLock { _ = $0.probes.insert(key) } }

    func stop() {
        guard started.load(ordering: .acquiring) else { return }
        stopFlag.store(true, ordering: .releasing)
        done.wait()
    }

    private func serve(_ socket: Socket) {
        let poller = Poller()
        poller.add(socket)
        var lastCheck = Date()
        while !stopFlag.load(ordering: .acquiring) {
            do {
                if try poller.poll(timeoutMilliseconds: 100) > 0, let request = try socket.receiveMultipart(dontWait: true, maxFrames: 16) {
                    try socket.send(multipart: reply(to: request.frames.map(\.bytes)).map { Message($0) })
                }
            } catch let e as ZMQError where e.isContextTerminated {
                return
            } catch {
                logger.error("ZAP handler error: \(error)")
            }
            if Date().timeIntervalSince(lastCheck) >= 1 {
                lastCheck = Date()
                reloadIfChanged()
            }
        }
    }

    /// RFC 27: version, request id, domain, address, identity, mechanism, credentials...
    /// -> version, request id, status code, status text, user id, metadata.
    private func reply(to f: [[UInt8]]) -> [[UInt8]] {
        guard f.count >= 6, f[0] == Array("1.0".utf8) else {
            return [Array("1.0".utf8), f.count > 1 ? f[1] : [], Array("400".utf8), Array("malformed ZAP request".utf8), [], []]
        }
        let requestID = f[1]
        let mechanism = String(decoding: f[5], as: UTF8.self)
        guard mechanism == "CURVE", f.count >= 7, f[6].count == 32 else {
            return [Array("1.0".utf8), requestID, Array("400".utf8), Array("CURVE required".utf8), [], []]
        }
        let key = z85(f[6])
        let id = state.withLock { s -> String? in
            let id = s.keys.clientID(forKey: key)
            if id != nil {
                s.allowed += 1
            } else {
                s.denied.append(key)
                if s.denied.count > 100 { s.denied.removeFirst(s.denied.count - 100) }
            }
            return id
        }
        guard let id else {
            if state.withLock({ $0.probes.contains(key) }) {
                logger.debug("self-test probe refused, as it should be", metadata: ["key": "\(key)"])
                return [Array("1.0".utf8), requestID, Array("400".utf8), Array("unknown key".utf8), [], []]
            }
            state.withLock { $0.refusedCount += 1 }
            logger.warning("connection refused: unknown CURVE key (add it to the authorized keys to admit this client)", metadata: ["key": "\(key)", "address": "\(String(decoding: f[3], as: UTF8.self))"])
            return [Array("1.0".utf8), requestID, Array("400".utf8), Array("unknown key".utf8), [], []]
        }
        return [Array("1.0".utf8), requestID, Array("200".utf8), Array("OK".utf8), Array(id.utf8), []]
    }

    private func reloadIfChanged() {
        guard let path else { return }
        let stamp = ZAPHandler.modificationDate(path)
        guard stamp != state.withLock({ $0.fileStamp }) else { return }
        do {
            var keys = fixed
            for (k, v) in try AuthorizedKeys.load(path: path).clients { keys.authorize(key: k, clientID: v) }
            let count = keys.clients.count
            state.withLock {
                $0.keys = keys
                $0.fileStamp = stamp
            }
            logger.notice("authorized keys reloaded", metadata: ["file": "\(path)", "keys": "\(count)"])
        } catch {
            // Keep the previous list: a half-written file must not lock everyone out (or in).
            state.withLock { $0.fileStamp = stamp }
            logger.error("authorized keys not reloaded, keeping the previous list: \(error)")
        }
    }

    /// The modification time of the file behind any symlinks: a Kubernetes Secret volume
    /// updates by swapping a symlink, which leaves the link's own time unchanged.
    private static func modificationDate(_ path: String) -> Date? {
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        return (try? FileManager.default.attributesOfItem(atPath: real))?[.modificationDate] as? Date
    }
}

/// Z85 encoding of 32 key bytes (the ZAP request carries the binary key).
func z85(_ bytes: [UInt8]) -> String {
    let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
    var out: [UInt8] = []
    var i = 0
    while i + 4 <= bytes.count {
        var value = UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
        var chunk = [UInt8](repeating: 0, count: 5)
        for j in stride(from: 4, through: 0, by: -1) {
            chunk[j] = alphabet[Int(value % 85)]
            value /= 85
        }
        out += chunk
        i += 4
    }
    return String(decoding: out, as: UTF8.self)
}
