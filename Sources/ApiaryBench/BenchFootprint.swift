import ApiaryAggregator
import ApiaryClient
import ApiaryCommandLine
import ApiaryCore
import ArgumentParser
import Foundation
import Logging

/// footprint: the resident memory of one client process holding a 100k-parameter model (a
/// child running the real ClientRuntime, `footprint-client`), idle and while training, for
/// `apiary client` (this binary) and for the edge binary `apiary-edge` side by side, against
/// the same binaries idle without a client (the process floor), measured in the same run.
/// The edge binary is `APIARY_EDGE_BIN` (`make edge` builds it into .build-edge/release: static
/// builds have a build folder of their own), else a sibling `apiary-edge` of this executable.
enum FootprintBench {
    static let goalMiB = 15.0
    /// The edge binary's idle goal (issue 16).
    static let edgeGoalMiB = 12.0
    /// How long the training clients train while their resident set is sampled.
    static let trainingSeconds = 3.0

    /// One binary's figures.
    struct Sample {
        var floorRSS = 0, floorAnon = 0
        var idleRSS = 0, idleHWM = 0, idleAnon = 0, idleFile = 0
        var threads = "?"
        var trainingRSS = 0, trainingHWM = 0
        var binaryBytes = 0
    }

    static func run(parameters: Int, logger: Logger, progress: (String) -> Void) -> [BenchResult] {
        let size = parameters >= 1000 ? "\(parameters / 1000)k" : "\(parameters)"
        let name = "footprint/\(size)", edgeName = "footprint/edge-\(size)"
        progress(name)
        let edgeBinary = ProcessInfo.processInfo.environment["APIARY_EDGE_BIN"]
            ?? URL(fileURLWithPath: benchExecutablePath()).deletingLastPathComponent().appendingPathComponent("apiary-edge").path
        do {
            let layout = try BenchModel.layout(parameters)
            let config = BenchModel.aggregatorConfig(mergesEverything: false)
            let agg = try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0.5, count: parameters), logger: logger)
            let eps = try agg.start()
            defer { agg.stop() }
            let endpoints = ["--model", eps.model, "--snapshot", eps.snapshot, "--update", eps.update, "--parameters", "\(parameters)"]

            let apiary = try measure(executable: nil, prefix: ["bench", "footprint-client"], endpoints: endpoints)
            var results = [result(name: name, apiary, parameters: parameters)]
            progress(edgeName)
            guard FileManager.default.isExecutableFile(atPath: edgeBinary) else {
                results.append(.failed(edgeName, group: "footprint", unit: "MiB", boundUnit: "MiB",
                                       error: "no edge binary at \(edgeBinary): build it with `make edge` and set APIARY_EDGE_BIN=.build-edge/release/apiary-edge"))
                return results
            }
            let edge = try measure(executable: edgeBinary, prefix: ["footprint-client"], endpoints: endpoints)
            results.append(edgeResult(name: edgeName, edge, apiary: apiary, parameters: parameters))
            return results
        } catch {
            return [.failed(name, group: "footprint", unit: "MiB", boundUnit: "MiB", error: "\(error)")]
        }
    }

    /// The floor, the idle client and the training client of one binary, one process at a time.
    static func measure(executable: String?, prefix: [String], endpoints: [String]) throws -> Sample {
        var s = Sample()
        let path = try executable ?? benchHelperPath()
        s.binaryBytes = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0

        let floor = try BenchChild(arguments: prefix + ["--idle-only"], executable: executable)
        guard floor.expect("idle", timeout: 30) != nil else { throw BenchError.failed("\(path): the idle process did not start") }
        usleep(1_000_000)
        s.floorRSS = ProcStatus.rss(pid: floor.pid)
        s.floorAnon = ProcStatus.bytes("RssAnon", pid: floor.pid) ?? 0
        floor.stop()

        let idle = try BenchChild(arguments: prefix + endpoints, executable: executable)
        guard idle.expect("holding", timeout: 30) != nil else { idle.stop(); throw BenchError.failed("\(path): the client did not get the model") }
        // Idle: the trainer waits; let a heartbeat broadcast or two arrive as well.
        usleep(1_500_000)
        s.idleRSS = ProcStatus.rss(pid: idle.pid)
        s.idleHWM = ProcStatus.bytes("VmHWM", pid: idle.pid) ?? 0
        // Private memory, and pages of mapped files (the executable and any shared libraries).
        s.idleAnon = ProcStatus.bytes("RssAnon", pid: idle.pid) ?? 0
        s.idleFile = ProcStatus.bytes("RssFile", pid: idle.pid) ?? 0
        s.threads = (try? String(contentsOfFile: "/proc/\(idle.pid)/status", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("Threads:") }.map { String($0.dropFirst(8)).trimmingCharacters(in: .whitespaces) } ?? "?"
        idle.stop()

        // Training: every round reads and writes the whole model and sends it; the aggregator
        // merges and broadcasts the new model back. The largest resident set sampled counts.
        let busy = try BenchChild(arguments: prefix + endpoints + ["--train"], executable: executable)
        defer { busy.stop() }
        guard busy.expect("holding", timeout: 30) != nil else { throw BenchError.failed("\(path): the training client did not get the model") }
        let end = Date().addingTimeInterval(trainingSeconds)
        while Date() < end {
            s.trainingRSS = max(s.trainingRSS, ProcStatus.rss(pid: busy.pid))
            usleep(50_000)
        }
        s.trainingHWM = ProcStatus.bytes("VmHWM", pid: busy.pid) ?? 0
        return s
    }

    /// `apiary client` (this binary): the figure since the benchmark began, with its training figures.
    static func result(name: String, _ s: Sample, parameters: Int) -> BenchResult {
        let figure = mib(s.idleRSS)
        return BenchResult(
            name: name, group: "footprint", figure: figure, unit: "MiB (VmRSS of an idle apiary client process)",
            bound: mib(s.floorRSS), boundUnit: "MiB (VmRSS of the same binary idle without a client)",
            ratio: figure / mib(s.floorRSS), ratioMeaning: "figure / bound (lower is better; 1 = the client adds nothing)",
            goal: "figure <= \(Int(goalMiB)) MiB", met: figure <= goalMiB,
            params: ["parameters": .int(parameters), "model_mib": .double(Double(parameters * 4) / Double(1 << 20)),
                     "peak_rss_mib": .double(mib(s.idleHWM)), "threads": .string(s.threads),
                     "client_adds_mib": .double(mib(s.idleRSS - s.floorRSS)),
                     "rss_anon_mib": .double(mib(s.idleAnon)), "rss_file_mib": .double(mib(s.idleFile)),
                     "floor_rss_anon_mib": .double(mib(s.floorAnon)),
                     "training_rss_mib": .double(mib(s.trainingRSS)), "training_peak_rss_mib": .double(mib(s.trainingHWM)),
                     "binary_mib": .double(mib(s.binaryBytes))],
            note: figure <= goalMiB ? nil
                : "\(String(format: "%.1f", mib(s.idleFile))) MiB of the resident set are mapped library and executable pages (Swift runtime, Foundation, the apiary binary), shared with other processes; private memory is \(String(format: "%.1f", mib(s.idleAnon))) MiB")
    }

    /// The edge binary against its goal (the bound), side by side with `apiary client` (same
    /// model, same aggregator, same run: its figures are in the params and the note).
    static func edgeResult(name: String, _ e: Sample, apiary a: Sample, parameters: Int) -> BenchResult {
        let figure = mib(e.idleRSS)
        return BenchResult(
            name: name, group: "footprint", figure: figure, unit: "MiB (VmRSS of an idle apiary-edge client process)",
            bound: edgeGoalMiB, boundUnit: "MiB (the edge goal of issue 16)",
            ratio: figure / edgeGoalMiB, ratioMeaning: "figure / goal (<= 1 meets it)",
            goal: "figure <= \(Int(edgeGoalMiB)) MiB", met: figure <= edgeGoalMiB,
            params: ["parameters": .int(parameters), "threads": .string(e.threads),
                     "edge_training_rss_mib": .double(mib(e.trainingRSS)), "edge_training_peak_rss_mib": .double(mib(e.trainingHWM)),
                     "edge_floor_rss_mib": .double(mib(e.floorRSS)),
                     "edge_rss_anon_mib": .double(mib(e.idleAnon)), "edge_rss_file_mib": .double(mib(e.idleFile)),
                     "edge_binary_mib": .double(mib(e.binaryBytes)),
                     "apiary_idle_rss_mib": .double(mib(a.idleRSS)), "apiary_training_rss_mib": .double(mib(a.trainingRSS)),
                     "edge_vs_apiary_idle": .double(figure / mib(a.idleRSS)),
                     "apiary_binary_mib": .double(mib(a.binaryBytes))],
            note: "idle \(String(format: "%.1f", figure)) vs \(String(format: "%.1f", mib(a.idleRSS))) MiB; training \(String(format: "%.1f", mib(e.trainingRSS))) vs \(String(format: "%.1f", mib(a.trainingRSS))) MiB; binary \(String(format: "%.1f", mib(e.binaryBytes))) vs \(String(format: "%.1f", mib(a.binaryBytes))) MiB (edge vs apiary)")
    }
}

/// `apiary bench footprint-client`: one real client (ClientRuntime) that joins and idles or
/// trains; prints `holding VERSION` once it holds the model. `--idle-only` just idles (the floor).
struct BenchFootprintClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "footprint-client", abstract: "Helper of `apiary bench`: a client holding the model, idle or training.", shouldDisplay: false)

    @OptionGroup var options: FootprintClientOptions

    func run() async throws {
        try await options.run()
    }
}
