import ApiaryObservability
import ArgumentParser
import Foundation
import Logging

/// The speed suite: every figure is printed next to the bound it is compared with, measured
/// in the same run, and their ratio. `apiary bench` and `apiary-bench` run it.
public struct BenchSuiteCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the benchmarks (the default).")

    /// What `--help` says about the suite (both executables).
    public static let discussion = """
        Benchmarks: merge, ingest, shards, broadcast, fleet, footprint, time-to-accuracy, algorithms (FedAsync, FedBuff, FedBuff+Adam, FedAvg on three workloads; update codecs). Measure in a \
        release build: swift build -c release --product apiary-bench --scratch-path .build-release, \
        then .build-release/release/apiary-bench (or build --product apiary too and run apiary bench). \
        Child processes run apiary-bench from the same folder (or APIARY_BENCH_HELPER). See docs/BENCHMARKS.md.
        """

    public init() {}

    @Flag(name: .long, help: "Print one JSON object as the last line of stdout (the table goes to stderr).")
    var json = false

    @Option(name: .long, help: "Comma-separated benchmarks (merge, ingest, shards, broadcast, fleet, footprint, time-to-accuracy, algorithms; attacks only when named) or cases (ingest/1M, shards/4M).")
    var only: String?

    @Flag(name: .long, help: "Run each benchmark for a moment on small sizes (a smoke test; figures are not meaningful).")
    var quick = false

    @Option(name: .long, help: "algorithms: wall time of each run in seconds (default 60; 3 with --quick).")
    var algorithmSeconds: Double?

    @Option(name: .long, help: "attacks: wall time of each run in seconds (default 12).")
    var attackSeconds: Double?

    /// `attacks` runs only when named (`--only attacks`, about 30 minutes: `make attack-bench`).
    static let groups = ["merge", "ingest", "shards", "broadcast", "fleet", "footprint", "time-to-accuracy", "algorithms", "attacks"]

    public func validate() throws {
        for s in selection where !Self.groups.contains(s.split(separator: "/").first.map(String.init) ?? s) {
            throw ValidationError("unknown benchmark '\(s)'; known: \(Self.groups.joined(separator: ", "))")
        }
    }

    var selection: [String] {
        (only ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Whether the case `group/label` (or the whole group, when label is nil) was asked for.
    func wants(_ group: String, _ label: String? = nil) -> Bool {
        let s = selection
        if s.isEmpty || s.contains(group) { return true }
        if let label { return s.contains("\(group)/\(label)") }
        return s.contains { $0.hasPrefix(group + "/") }
    }

    public func run() async throws {
        let logger = LogSetup.bootstrap(level: .error)
        let machine = BenchMachine.current()
        let toStderr = json
        let out: (String) -> Void = { line in
            if toStderr { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { say(line) }
        }
        out("apiary bench\(quick ? " --quick" : ""): \(machine.cpuModel), \(machine.cores) cores, \(machine.memoryGiB) GiB, Linux \(machine.kernel), libzmq \(machine.libzmq), \(machine.build) build")
        if machine.build == "debug" && !quick {
            out("warning: a debug build; measure with .build-release/release/apiary (see docs/BENCHMARKS.md)")
        }
        let progress: (String) -> Void = { name in FileHandle.standardError.write(Data("  running \(name) ...\n".utf8)) }
        var results: [BenchResult] = []
        func emit(_ rs: [BenchResult]) {
            for r in rs {
                out(Self.line(r))
                results.append(r)
            }
        }

        if wants("merge") {
            let sizes: [(String, Int)] = quick ? [("100k", 100_000)] : [("1M", 1_000_000), ("10M", 10_000_000), ("100M", 100_000_000)]
            for s in sizes where wants("merge", s.0) {
                progress("merge/\(s.0)")
                emit(MergeBench.run(sizes: [(s.0, s.1)], seconds: quick ? 0.2 : 3, goalLabel: "10M"))
            }
        }
        if wants("ingest") {
            let io = 1
            var cases: [IngestBench.Case] = quick
                ? [.init(label: "100k", parameters: 100_000, pushers: 2, ioThreads: io, seconds: 0.3, goal: false)]
                : [.init(label: "100k", parameters: 100_000, pushers: 4, ioThreads: io, seconds: 3, goal: false),
                   .init(label: "1M", parameters: 1_000_000, pushers: 4, ioThreads: io, seconds: 3, goal: true),
                   .init(label: "1M-io2", parameters: 1_000_000, pushers: 4, ioThreads: 2, seconds: 3, goal: false),
                   .init(label: "10M", parameters: 10_000_000, pushers: 4, ioThreads: io, seconds: 4, goal: false)]
            cases = cases.filter { wants("ingest", $0.label) }
            emit(IngestBench.run(cases, logger: logger, progress: progress))
        }
        if wants("shards") {
            let cases: [ShardsBench.Case] = quick
                ? [.init(label: "100k", parameters: 100_000, shardCounts: [1, 2], pushers: 2, seconds: 0.3, rounds: 1)]
                : [.init(label: "1M", parameters: 1_000_000, shardCounts: [1, 2, 3], pushers: 4, seconds: 3, rounds: 2),
                   .init(label: "4M", parameters: 4_000_000, shardCounts: [1, 2, 3], pushers: 4, seconds: 3, rounds: 2)]
            emit(ShardsBench.run(cases.filter { wants("shards", $0.label) }, progress: progress, say: out))
        }
        if wants("broadcast") {
            var cases: [BroadcastBench.Case] = []
            if quick {
                cases = [.init(label: "100k-10", parameters: 100_000, subscribers: 10, ioThreads: 1, repetitions: 1)]
            } else {
                for (pl, p) in [("1M", 1_000_000), ("10M", 10_000_000)] {
                    for s in [10, 100, 1000] {
                        let bytes = p * 4 * s
                        cases.append(.init(label: "\(pl)-\(s)", parameters: p, subscribers: s, ioThreads: 1,
                                           repetitions: bytes >= 4_000_000_000 ? 1 : bytes >= 400_000_000 ? 3 : 5))
                    }
                }
            }
            cases = cases.filter { wants("broadcast", $0.label) }
            emit(BroadcastBench.run(cases, logger: logger, progress: progress))
        }
        if wants("fleet") {
            let c = quick
                ? FleetBench.Case(target: 200, parameters: 1000, clientsPerProcess: 2500, rateSeconds: 0.5, serveTimeout: 20, ioThreads: 1)
                : FleetBench.Case(target: 10_000, parameters: 1000, clientsPerProcess: 2500, rateSeconds: 5, serveTimeout: 60, ioThreads: 2)
            if wants("fleet", "\(c.target)") { emit([FleetBench.run(c, logger: logger, progress: progress)]) }
        }
        if wants("footprint") {
            emit(FootprintBench.run(parameters: 100_000, logger: logger, progress: progress))
        }
        if wants("time-to-accuracy") {
            progress("time-to-accuracy")
            let json = self.json
            let say: @Sendable (String) -> Void = { line in
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
            do {
                emit(try await TimeToAccuracyBench.run(quick: quick, logger: logger, say: say))
            } catch {
                emit([BenchResult(name: "time-to-accuracy/async-vs-sync", group: "time-to-accuracy", status: "failed",
                                  unit: "s", boundUnit: "s", ratioMeaning: "sync time / async time", goal: nil, met: nil,
                                  note: "\(error)")])
            }
        }

        if wants("algorithms") {
            let json = self.json
            let say: @Sendable (String) -> Void = { line in
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
            do {
                emit(try await AlgorithmsBench.run(quick: quick, seconds: algorithmSeconds, logger: logger, say: say, progress: progress))
            } catch {
                emit([BenchResult(name: "algorithms", group: "algorithms", status: "failed", unit: "s", boundUnit: "s",
                                  ratioMeaning: "", goal: nil, met: nil, note: "\(error)")])
            }
        }

        if selection.contains("attacks") {
            let json = self.json
            let say: @Sendable (String) -> Void = { line in
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
            do {
                emit(try await AttacksBench.run(seconds: attackSeconds, logger: logger, say: say, progress: progress))
            } catch {
                emit([BenchResult(name: "attacks", group: "attacks", status: "failed", unit: "accuracy", boundUnit: "accuracy",
                                  ratioMeaning: "", goal: nil, met: nil, note: "\(error)")])
            }
        }

        let failed = results.filter { $0.status == "failed" }.count
        let goals = results.filter { $0.met != nil }
        out("goals met: \(goals.filter { $0.met == true }.count) of \(goals.count)\(failed > 0 ? "; \(failed) failed" : "")")
        if json {
            let report = BenchReport(machine: machine, quick: quick, benchmarks: results)
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            say(String(decoding: try enc.encode(report), as: UTF8.self))
        }
    }

    static func line(_ r: BenchResult) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        if r.status == "measured", r.figure == nil {
            return "\(pad(r.name, 30)) not reached; bound \(BenchResult.short(r.bound ?? 0)) \(r.boundUnit)\(r.note.map { ": \($0)" } ?? "")"
        }
        guard r.status == "measured" else {
            return "\(pad(r.name, 30)) \(r.status == "failed" ? "FAILED" : "not yet measured"): \(r.note ?? "")"
        }
        func short(_ u: String) -> String { u.components(separatedBy: " (").first ?? u }
        let unit = short(r.unit), boundUnit = short(r.boundUnit)
        var s = "\(pad(r.name, 30)) \(pad(BenchResult.short(r.figure ?? 0) + " " + unit, 28)) bound \(pad(BenchResult.short(r.bound ?? 0) + " " + boundUnit, 22)) ratio \(String(format: "%.2f", r.ratio ?? 0))"
        if let g = r.goal { s += "   goal \(g): \(r.met == true ? "met" : "NOT met")" }
        if let n = r.note, r.met == false { s += "\n\(pad("", 32))\(n)" }
        return s
    }
}

struct BenchReport: Encodable {
    var machine: BenchMachine
    var quick: Bool
    var benchmarks: [BenchResult]
}
