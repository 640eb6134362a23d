import ApiaryAggregator
import ApiaryCore
import ApiaryCommandLine
import ApiaryObservability
import ApiaryProtocol
import Foundation
import Synchronization
import ZeroMQ

#if canImport(Glibc)
import Glibc
#endif

// Shared pieces of `apiary bench`: result records, the machine header, clocks, threads,
// /proc readers, the file-descriptor limit and child processes speaking in lines.

/// swift-log's one-time stderr setup, shared with the `apiary` commands.
typealias LogSetup = ApiaryCommandLine.LogSetup

/// A JSON scalar for a benchmark's parameters.
enum BenchValue: Encodable, Sendable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case string(String)
    case bool(Bool)

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .int(let v): try c.encode(v)
        case .double(let v): try c.encode(v.isFinite ? BenchResult.rounded(v) : 0)
        case .string(let v): try c.encode(v)
        case .bool(let v): try c.encode(v)
        }
    }

    var description: String {
        switch self {
        case .int(let v): "\(v)"
        case .double(let v): BenchResult.short(v)
        case .string(let v): v
        case .bool(let v): "\(v)"
        }
    }
}

extension BenchValue: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral, ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral {
    init(integerLiteral v: Int) { self = .int(v) }
    init(stringLiteral v: String) { self = .string(v) }
    init(floatLiteral v: Double) { self = .double(v) }
    init(booleanLiteral v: Bool) { self = .bool(v) }
}

/// One measured figure next to the bound it is compared with (measured in the same run).
struct BenchResult: Encodable, Sendable {
    /// `group/case`, e.g. `merge/10M`.
    var name: String
    var group: String
    /// "measured", "failed" or "not_measured".
    var status = "measured"
    var figure: Double?
    var unit: String
    var bound: Double?
    var boundUnit: String
    var ratio: Double?
    /// What the ratio is, e.g. "figure / bound (1 = as fast as raw libzmq)".
    var ratioMeaning: String
    var goal: String?
    var met: Bool?
    var params: [String: BenchValue] = [:]
    var note: String?

    enum CodingKeys: String, CodingKey {
        case name, group, status, figure, unit, bound, ratio, goal, met, params, note
        case boundUnit = "bound_unit"
        case ratioMeaning = "ratio_meaning"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(group, forKey: .group)
        try c.encode(status, forKey: .status)
        // Explicit nulls: every entry has the same keys.
        try c.encode(figure.map(Self.rounded), forKey: .figure)
        try c.encode(unit, forKey: .unit)
        try c.encode(bound.map(Self.rounded), forKey: .bound)
        try c.encode(boundUnit, forKey: .boundUnit)
        try c.encode(ratio.map(Self.rounded), forKey: .ratio)
        try c.encode(ratioMeaning, forKey: .ratioMeaning)
        try c.encode(goal, forKey: .goal)
        try c.encode(met, forKey: .met)
        try c.encode(params, forKey: .params)
        try c.encode(note, forKey: .note)
    }

    static func failed(_ name: String, group: String, unit: String, boundUnit: String, error: String) -> BenchResult {
        BenchResult(name: name, group: group, status: "failed", unit: unit, boundUnit: boundUnit, ratioMeaning: "", note: error)
    }

    /// Four significant digits, so the JSON stays readable.
    static func rounded(_ v: Double) -> Double {
        guard v.isFinite, v != 0 else { return v.isFinite ? v : 0 }
        let digits = 4 - Int((log10(Swift.abs(v))).rounded(.down)) - 1
        let scale = pow(10.0, Double(digits))
        return (v * scale).rounded() / scale
    }

    /// A short human form: 3.61e9 -> "3.61 G".
    static func short(_ v: Double) -> String {
        let a = Swift.abs(v)
        func f(_ x: Double, _ s: String) -> String { String(format: x >= 100 ? "%.0f%@" : x >= 10 ? "%.1f%@" : "%.2f%@", x, s) }
        if a >= 1e9 { return f(v / 1e9, " G") }
        if a >= 1e6 { return f(v / 1e6, " M") }
        if a >= 1e4 { return f(v / 1e3, " k") }
        if a >= 100 { return String(format: "%.0f", v) }
        if a >= 10 { return String(format: "%.1f", v) }
        return String(format: "%.3f", v)
    }
}

/// What the header of the output says about this machine.
struct BenchMachine: Encodable {
    var cpuModel: String
    var cores: Int
    var memoryGiB: Double
    var kernel: String
    var libzmq: String
    var build: String
    var openFileLimit: Int

    enum CodingKeys: String, CodingKey {
        case cpuModel = "cpu_model", cores, memoryGiB = "memory_gib", kernel, libzmq, build
        case openFileLimit = "open_file_limit"
    }

    static func current() -> BenchMachine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let v = Context.libraryVersion
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        return BenchMachine(cpuModel: model, cores: ProcessInfo.processInfo.activeProcessorCount,
                            memoryGiB: BenchResult.rounded(Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)),
                            kernel: release, libzmq: "\(v.major).\(v.minor).\(v.patch)", build: build,
                            openFileLimit: FileLimit.current().soft)
    }
}

// MARK: Clocks and threads

/// Monotonic nanoseconds.
@inline(__always) func benchNow() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

@inline(__always) func seconds(since t0: UInt64, until t1: UInt64 = benchNow()) -> Double {
    Double(t1 &- t0) / 1e9
}

/// A stop flag and counters shared between benchmark threads.
final class BenchFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

final class BenchCounter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int = 1) { value.wrappingAdd(n, ordering: .relaxed) }
    var load: Int { value.load(ordering: .relaxed) }
    func store(_ n: Int) { value.store(n, ordering: .relaxed) }
}

/// Runs `body(i)` for i in 0..<count, each on its own thread; `join()` waits for all.
final class BenchThreads: Sendable {
    private let done = DispatchGroup()

    init(_ count: Int, name: String, _ body: @escaping @Sendable (Int) -> Void) {
        for i in 0..<count {
            done.enter()
            let t = Thread { [done] in
                body(i)
                done.leave()
            }
            t.name = "\(name)-\(i)"
            t.stackSize = 1 << 20
            t.start()
        }
    }

    func join() { done.wait() }

    /// False when the threads did not finish within `seconds`.
    func join(timeout seconds: Double) -> Bool { done.wait(timeout: .now() + seconds) == .success }
}

/// Counts the receipts that aggregators publish (all of them, and the merged ones per
/// aggregator) as they arrive, on a thread each, until `stop()`: finer than the aggregator's
/// stats, which are published once per batch of updates.
final class ReceiptCounters: Sendable {
    /// Merged receipts, by endpoint.
    let merged: [BenchCounter]
    /// Every receipt, of every endpoint.
    let all = BenchCounter()
    private let stopped = BenchFlag()
    private let threads: BenchThreads

    init(models endpoints: [String], name: String) throws {
        let context = try Context(ioThreads: 1)
        let merged = endpoints.map { _ in BenchCounter() }
        let (all, stopped) = (all, stopped)
        self.merged = merged
        threads = BenchThreads(endpoints.count, name: name) { k in
            do {
                let sub = try context.socket(.sub)
                defer { sub.close() }
                try sub.set(.linger, 0)
                try sub.set(.subscribe, Topic.receiptPrefix)
                try sub.set(.receiveTimeout, 50)
                try sub.connect(endpoints[k])
                while !stopped.isSet {
                    guard let m = try sub.receiveMultipart(maxFrames: 4) else { continue }
                    all.add()
                    let decision = try? m.withFrameBytes { f throws(WireError) in try Codec.decodeReceipt(f).decision }
                    if decision == .merged { merged[k].add() }
                }
            } catch {
                FileHandle.standardError.write(Data("\(name) \(k): \(error)\n".utf8))
            }
        }
    }

    func stop() {
        stopped.set()
        threads.join()
    }
}

/// A heap buffer that outlives zero-copy sends referring to it (libzmq releases the owner).
final class BenchBuffer: @unchecked Sendable {
    // @unchecked Sendable: filled once before any send, then only read (also by libzmq threads).
    let base: UnsafeMutableRawPointer
    let count: Int

    init(bytes: Int, alignment: Int = 64) {
        count = bytes
        base = .allocate(byteCount: max(bytes, 1), alignment: alignment)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 1))
    }

    /// `count` float32 values of `value`.
    convenience init(floats n: Int, value: Float) {
        self.init(bytes: n * 4)
        base.bindMemory(to: Float.self, capacity: n).update(repeating: value, count: n)
    }

    var floats: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }

    /// Zero-copy frames of `chunk` floats covering the whole buffer.
    func frames(chunkParameters chunk: Int) -> [Message] {
        let n = count / 4
        var out: [Message] = []
        var off = 0
        repeat {
            let c = min(chunk, n - off)
            out.append(Message(noCopy: UnsafeRawPointer(base + off * 4), count: c * 4, owner: self))
            off += c
        } while off < n
        return out
    }

    deinit { base.deallocate() }
}

// MARK: /proc

enum ProcStatus {
    /// A `kB` field of /proc/PID/status (VmRSS, VmHWM) in bytes; nil when unreadable.
    static func bytes(_ field: String, pid: Int32? = nil) -> Int? {
        let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix(field + ":") {
            let digits = line.dropFirst(field.count + 1).filter(\.isNumber)
            return Int(digits).map { $0 * 1024 }
        }
        return nil
    }

    static func rss(pid: Int32? = nil) -> Int { bytes("VmRSS", pid: pid) ?? 0 }

    /// Open file descriptors of this process.
    static func openFileCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}

/// The benchmarks' model and aggregator.
enum BenchModel {
    /// One flat float32 tensor `w` of `n` values.
    static func layout(_ n: Int) throws -> ParameterLayout { try ParameterLayout([TensorSpec(name: "w", shape: [n])]) }

    /// An aggregator on loopback ports the kernel picks; with `mergesEverything`, constant
    /// staleness and no bound on it, so that every update (all on base 0) merges.
    static func aggregatorConfig(mergesEverything: Bool = true) -> AggregatorConfig {
        // Loopback measurements of the engine, without CURVE (the secure path is in the demo).
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                      insecure: true)
        if mergesEverything { config.rule = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: .max) }
        return config
    }
}

/// Waits until `count()` has not moved for `quiet` seconds (a receiver took everything that
/// was queued), or `timeout` seconds passed.
func waitUntilQuiet(_ count: () -> Int, quiet: Double = 0.3, timeout: Double = 30) {
    let start = benchNow()
    var last = count(), since = benchNow()
    while seconds(since: since) < quiet && seconds(since: start) < timeout {
        usleep(20_000)
        let c = count()
        if c != last { (last, since) = (c, benchNow()) }
    }
}

func mib(_ bytes: Int) -> Double { Double(bytes) / Double(1 << 20) }

// MARK: File-descriptor limit

struct FileLimit {
    var soft: Int
    var hard: Int

    static func current() -> FileLimit {
        var r = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        return FileLimit(soft: Int(clamping: r.rlim_cur), hard: Int(clamping: r.rlim_max))
    }

    /// Raises the soft limit to the hard limit (children inherit it). Returns the limit now
    /// in force.
    @discardableResult
    static func raiseToHard() -> FileLimit {
        var r = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        }
        return current()
    }
}

// MARK: Child processes

/// The running executable.
func benchExecutablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// The executable that runs the helpers (`footprint-client`, `fleet-clients`,
/// `shard-server`): APIARY_BENCH_HELPER, else `apiary-bench` in the folder of the running
/// executable (`swift build` puts `apiary` and `apiary-bench` side by side).
func benchHelperPath() throws -> String {
    if let p = ProcessInfo.processInfo.environment["APIARY_BENCH_HELPER"], !p.isEmpty { return p }
    let p = URL(fileURLWithPath: benchExecutablePath()).deletingLastPathComponent().appendingPathComponent("apiary-bench").path
    guard FileManager.default.isExecutableFile(atPath: p) else {
        throw BenchHelperMissing(path: p)
    }
    return p
}

struct BenchHelperMissing: Error, CustomStringConvertible {
    var path: String
    var description: String {
        "the benchmark's child processes run apiary-bench, and there is none at \(path): build it next to this executable (swift build --product apiary-bench, with the same -c and --scratch-path) or set APIARY_BENCH_HELPER"
    }
}

/// A child helper process (`apiary-bench HELPER ...`) whose stdout is read line by line (with
/// timeouts) and whose stdin takes commands. Killed when dropped.
final class BenchChild {
    let process = Process()
    private let stdinPipe = Pipe()
    private let stdoutPipe = Pipe()
    private var buffer: [UInt8] = []
    private var eof = false

    /// `arguments` as for `apiary bench` (`bench HELPER ...`), run by `executable` when given
    /// (as they are), otherwise by the helper executable `apiary-bench` (without the leading `bench`).
    init(arguments: [String], executable: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: try executable ?? benchHelperPath())
        process.arguments = executable == nil && arguments.first == "bench" ? Array(arguments.dropFirst()) : arguments
        process.standardInput = stdinPipe
        process.standardOutput = stdoutPipe
        process.standardError = FileHandle.standardError
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// APIARY_BENCH_DEBUG=1 echoes what children say to stderr.
    static let debug = ProcessInfo.processInfo.environment["APIARY_BENCH_DEBUG"] != nil

    /// The next line of the child's stdout; nil on end of file or after `timeout` seconds.
    func readLine(timeout: Double) -> String? {
        let fd = stdoutPipe.fileHandleForReading.fileDescriptor
        let deadline = benchNow() + UInt64(timeout * 1e9)
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<i], as: UTF8.self)
                buffer.removeSubrange(...i)
                if BenchChild.debug { FileHandle.standardError.write(Data("  [child \(pid)] \(line)\n".utf8)) }
                return line
            }
            if eof { return nil }
            let now = benchNow()
            guard now < deadline else { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(min(1000, (deadline - now) / 1_000_000 + 1))
            if poll(&p, 1, ms) <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { eof = true } else { buffer.append(contentsOf: chunk[0..<n]) }
        }
    }

    /// Reads lines until one starts with `prefix`; returns it (nil on timeout or EOF).
    func expect(_ prefix: String, timeout: Double) -> String? {
        let deadline = benchNow() + UInt64(timeout * 1e9)
        while benchNow() < deadline {
            guard let line = readLine(timeout: seconds(since: benchNow(), until: deadline)) else { return nil }
            if line.hasPrefix(prefix) { return line }
        }
        return nil
    }

    func send(_ line: String) {
        if BenchChild.debug { FileHandle.standardError.write(Data("  [to \(pid)] \(line)\n".utf8)) }
        try? stdinPipe.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 2) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = benchNow() + UInt64(grace * 1e9)
        while process.isRunning && benchNow() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop(grace: 0.5) }
}

/// Reads commands from stdin on a background thread (for child helpers).
final class BenchCommands: Sendable {
    private let lines = Mutex<[String]>([])
    private let closed = Atomic<Bool>(false)

    init() {
        let t = Thread { [self] in
            while let line = Swift.readLine() { lines.withLock { $0.append(line) } }
            closed.store(true, ordering: .releasing)
        }
        t.name = "bench-stdin"
        t.start()
    }

    /// Waits for the next command (nil once stdin is closed and empty).
    func next(timeout: Double = .infinity) -> String? {
        let deadline = timeout.isFinite ? benchNow() + UInt64(timeout * 1e9) : UInt64.max
        while benchNow() < deadline {
            if let l = lines.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return l }
            if closed.load(ordering: .acquiring) { return nil }
            usleep(5_000)
        }
        return nil
    }
}

/// Writes a line to stdout at once, with write(2): children speak to their parent this way.
/// (Not print + fflush: fflush(NULL) would wait for the stdin lock that a blocked readLine
/// holds.)
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
