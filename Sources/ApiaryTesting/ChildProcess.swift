import Foundation
import ZeroMQ

// Shared by the test targets, and part of the ApiaryTesting product for users' own tests.
// Everything here waits without blocking a thread of Swift's cooperative pool: `swift test` runs tests in parallel on that pool, which is as wide as the
// machine has cores (two here), so one test that blocks a thread for a minute (a benchmark
// child, a browser, a demo) would stall every in-process client and aggregator task of the
// other tests for that minute.

/// A condition that did not come true in time; `what` names it.
public struct Timeout: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass.
/// The whole suite runs tests in parallel on two cores: give conditions time.
public func eventually(_ what: String, within seconds: Double = 40, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if try condition() { return }
        // Checked once more after the deadline: a task held off the pool for the whole wait
        // (a loaded machine) must not fail a condition that became true meanwhile.
        guard Date() < deadline else { throw Timeout(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Runs blocking `work` on a thread of its own, so that it never holds one of the pool's.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// The checkout this file belongs to (where this package was built from).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The built `apiary` executable (APIARY_BIN, or .build/debug/apiary of this checkout).
public func apiaryBinary() throws -> String {
    if let p = ProcessInfo.processInfo.environment["APIARY_BIN"] { return p }
    let p = repositoryRoot.appendingPathComponent(".build/debug/apiary").path
    guard FileManager.default.isExecutableFile(atPath: p) else { throw Timeout(what: "the apiary binary at \(p) (run swift build first)") }
    return p
}

/// Hands out loopback ports below the kernel's ephemeral range (32768-60999 on Linux), each
/// at most once per test process. Binding to port 0 would give an ephemeral port, and the
/// kernel hands the same range to every outgoing connection's source port and to every
/// `tcp://127.0.0.1:*` bind of a demo or benchmark child: a port found free that way is often
/// taken again before the test's child binds it ("Address already in use"). Below 32768 only
/// explicit binds compete, and this process never hands a port out twice; each process starts
/// at its own random offset so that two test processes rarely walk the same ports.
private final class PortAllocator: @unchecked Sendable {
    static let shared = PortAllocator()
    static let range = 10_000..<32_000
    private let lock = NSLock()
    private var next = Int.random(in: PortAllocator.range)

    /// `count` consecutive ports, each bound once to check that nobody holds it now.
    func take(_ count: Int) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        let ctx = try Context()
        for _ in 0..<2_000 {
            if next + count > Self.range.upperBound { next = Self.range.lowerBound }
            let base = next
            next += count
            var held: [Socket] = []
            defer { held.forEach { $0.close() } }
            do {
                for p in base..<(base + count) {
                    let s = try ctx.socket(.pull)
                    try s.set(.linger, 0)
                    held.append(s)
                    try s.bind("tcp://127.0.0.1:\(p)")
                }
                return base
            } catch {
                continue
            }
        }
        throw Timeout(what: "\(count) consecutive free ports")
    }
}

/// `n` free loopback ports (see `PortAllocator` for why not port 0).
public func freePorts(_ n: Int) throws -> [Int] {
    try (0..<n).map { _ in try PortAllocator.shared.take(1) }
}

/// Three consecutive free ports P, P+1, P+2 on 127.0.0.1 (what `apiary client --aggregator
/// tcp://HOST:P` expects of the aggregator: snapshot P, model P+1, update P+2).
public func consecutivePorts() throws -> Int {
    try PortAllocator.shared.take(3)
}

/// A child process whose standard output and error go to files (never a pipe that could fill
/// and stall it), waited for asynchronously, and SIGKILLed if the test drops it still running.
public final class Child: @unchecked Sendable {
    // @unchecked Sendable: `process` is only started in init; the rest are immutable.
    public let process = Process()
    /// Standard output, and standard error too unless `separateErrors`.
    public let output: URL
    /// Standard error when `separateErrors`, else nil.
    public let errors: URL?

    /// Starts `executable` (default: the apiary binary) with `arguments`, the test's
    /// environment plus `environment`, in `directory`.
    public init(_ arguments: [String], environment: [String: String] = [:], name: String, executable: String? = nil,
                directory: URL? = nil, separateErrors: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: try executable ?? apiaryBinary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        if let directory { process.currentDirectoryURL = directory }
        let stem = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        output = stem.appendingPathExtension("log")
        errors = separateErrors ? stem.appendingPathExtension("err") : nil
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let out = try FileHandle(forWritingTo: output)
        defer { try? out.close() }
        process.standardOutput = out
        if let errors {
            FileManager.default.createFile(atPath: errors.path, contents: nil)
            let err = try FileHandle(forWritingTo: errors)
            defer { try? err.close() }
            process.standardError = err
            try process.run()
        } else {
            process.standardError = out
            try process.run()
        }
    }

    public var isRunning: Bool { process.isRunning }

    /// Its exit status once it has exited within `seconds`, else nil (it keeps running).
    public func exit(within seconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        guard !process.isRunning else { return nil }
        process.waitUntilExit()  // reaped already: returns at once
        return process.terminationStatus
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; returns the exit status.
    @discardableResult
    public func terminate(grace: Double = 5) async -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        if let status = await exit(within: grace) { return status }
        return await kill9()
    }

    /// SIGKILL; returns the exit status.
    @discardableResult
    public func kill9() async -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        return await exit(within: 3600) ?? -1
    }

    /// What it has written so far (output and, unless separate, errors).
    /// Decoded leniently: a read can end inside a character the child is still writing.
    public var log: String { Self.text(output) }
    /// What it has written to standard error, when separate.
    public var errorLog: String { errors.map(Self.text) ?? "" }

    private static func text(_ url: URL) -> String {
        (try? Data(contentsOf: url)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: output)
        if let errors { try? FileManager.default.removeItem(at: errors) }
    }

    /// Runs `apiary ARGS` (or `executable`) to its end, or SIGKILLs it after `timeout` seconds
    /// and reports status -1; returns status, output and errors (errors empty unless separate).
    public static func run(_ arguments: [String], environment: [String: String] = [:], executable: String? = nil, directory: URL? = nil,
                           separateErrors: Bool = false, timeout: Double = 120) async throws -> (status: Int32, output: String, errors: String) {
        let c = try Child(arguments, environment: environment, name: "run", executable: executable, directory: directory, separateErrors: separateErrors)
        var status: Int32 = -1
        if let s = await c.exit(within: timeout) { status = s } else { await c.kill9() }
        return (status, c.log, c.errorLog)
    }
}
