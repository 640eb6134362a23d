import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ArgumentParser
import Foundation
import Logging

/// footprint: the resident memory of one idle client process holding a 100k-parameter model
/// (a child `apiary bench footprint-client` running the real ClientRuntime), against the same
/// binary sitting idle without a client (the process floor), measured in the same run.
enum FootprintBench {
    static let goalMiB = 15.0

    static func run(parameters: Int, logger: Logger, progress: (String) -> Void) -> BenchResult {
        let name = "footprint/\(parameters >= 1000 ? "\(parameters / 1000)k" : "\(parameters)")"
        progress(name)
        do {
            let layout = try BenchModel.layout(parameters)
            let config = BenchModel.aggregatorConfig(mergesEverything: false)
            let agg = try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0.5, count: parameters), logger: logger)
            let eps = try agg.start()
            defer { agg.stop() }

            let floor = try BenchChild(arguments: ["bench", "footprint-client", "--idle-only"])
            guard floor.expect("idle", timeout: 30) != nil else { throw BenchError.failed("the idle process did not start") }
            usleep(1_000_000)
            let floorRSS = ProcStatus.rss(pid: floor.pid)
            let floorAnon = ProcStatus.bytes("RssAnon", pid: floor.pid) ?? 0
            floor.stop()

            let child = try BenchChild(arguments: ["bench", "footprint-client", "--model", eps.model, "--snapshot", eps.snapshot,
                                                   "--update", eps.update, "--parameters", "\(parameters)"])
            defer { child.stop() }
            guard child.expect("holding", timeout: 30) != nil else { throw BenchError.failed("the client did not get the model") }
            // Idle: the trainer waits; let a heartbeat broadcast or two arrive as well.
            usleep(1_500_000)
            let rss = ProcStatus.rss(pid: child.pid)
            let hwm = ProcStatus.bytes("VmHWM", pid: child.pid) ?? 0
            // Private memory, and pages of mapped files (the executable and the Swift runtime
            // and Foundation libraries, shared with every other process that maps them).
            let anon = ProcStatus.bytes("RssAnon", pid: child.pid) ?? 0
            let file = ProcStatus.bytes("RssFile", pid: child.pid) ?? 0
            let threads = (try? String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8))?
                .split(separator: "\n").first { $0.hasPrefix("Threads:") }.map { String($0.dropFirst(8)).trimmingCharacters(in: .whitespaces) } ?? "?"
            let figure = mib(rss)
            return BenchResult(
                name: name, group: "footprint", figure: figure, unit: "MiB (VmRSS of an idle client process)",
                bound: mib(floorRSS), boundUnit: "MiB (VmRSS of the same binary idle without a client)",
                ratio: figure / mib(floorRSS), ratioMeaning: "figure / bound (lower is better; 1 = the client adds nothing)",
                goal: "figure <= \(Int(goalMiB)) MiB", met: figure <= goalMiB,
                params: ["parameters": .int(parameters), "model_mib": .double(Double(parameters * 4) / Double(1 << 20)),
                         "peak_rss_mib": .double(mib(hwm)), "threads": .string(threads),
                         "client_adds_mib": .double(mib(rss - floorRSS)),
                         "rss_anon_mib": .double(mib(anon)), "rss_file_mib": .double(mib(file)),
                         "floor_rss_anon_mib": .double(mib(floorAnon))],
                note: figure <= goalMiB ? nil
                    : "\(String(format: "%.1f", mib(file))) MiB of the resident set are mapped library and executable pages (Swift runtime, Foundation, the apiary binary), shared with other processes; private memory is \(String(format: "%.1f", mib(anon))) MiB")
        } catch {
            return .failed(name, group: "footprint", unit: "MiB", boundUnit: "MiB", error: "\(error)")
        }
    }
}

/// A trainer that never finishes: the client joins, holds the model and idles.
struct IdleTrainer: Trainer {
    let layout: ParameterLayout

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

/// `apiary bench footprint-client`: one real client (ClientRuntime) that joins and idles;
/// prints `holding VERSION` once it holds the model. `--idle-only` just idles (the floor).
struct BenchFootprintClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "footprint-client", abstract: "Helper of `apiary bench`: an idle client holding the model.", shouldDisplay: false)

    @Option var model: String = ""
    @Option var snapshot: String = ""
    @Option var update: String = ""
    @Option var parameters: Int = 100_000
    @Flag var idleOnly = false

    func run() async throws {
        let logger = LogSetup.bootstrap(level: .error)
        if idleOnly {
            say("idle")
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
        let layout = try BenchModel.layout(parameters)
        let config = ClientConfig(clientID: "footprint", modelEndpoint: model, snapshotEndpoint: snapshot, updateEndpoint: update, insecure: true)
        let client = try ClientRuntime(config: config, trainer: IdleTrainer(layout: layout), logger: logger, onEvent: { e in
            if case .joined(let v) = e { say("holding \(v)") }
        })
        try await client.run()
    }
}
