import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryMerge
import ApiaryTesting
import Foundation
import Logging

/// attacks (only with `--only attacks`; about 35 minutes): every attack of `AttackKind` at 10 %
/// and 20 % of the fleet against every defence, plus the clean runs, on the shared workload and
/// on the same digits with Dirichlet 0.1 label skew over 20 clients. Each run has the same wall
/// time (`--attack-seconds`, default 12) with the workload's delays scaled by 0.1; it reports
/// the final accuracy (the mean of the evaluations in the run's last 2 s: FedAsync's model
/// moves with every merge, one evaluation alone varies by about a point) and the time to the
/// workload's target.
enum AttacksBench {
    struct Column: Sendable {
        var name: String
        var configure: @Sendable (inout AggregatorConfig) -> Void
    }

    static let fedbuff = FedBuffConfig(bufferSize: 10, maxWait: .seconds(5), optimizer: .init(kind: .sgd, learningRate: 1))

    /// The table's columns: `ApiaryTesting.Defence`s (the robust statistics on a FedBuff
    /// buffer), and FedBuff's plain mean for contrast.
    static let defences: [Column] = [
        Column(name: "none") { Defence.none.apply(to: &$0) },
        Column(name: "norm-clip") { Defence.norm.apply(to: &$0) },
        Column(name: "anomaly") { Defence.anomaly.apply(to: &$0) },
        Column(name: "fedbuff-mean") { $0.buffer = fedbuff },
        Column(name: "median") { c in
            c.buffer = fedbuff
            Defence.median.apply(to: &c)
        },
        Column(name: "trimmed-mean") { c in
            c.buffer = fedbuff
            Defence.trimmedMean.apply(to: &c)
        },
    ]

    struct Cell {
        var accuracy: Double
        var time: Double?
        var rejected: UInt64
    }

    static func run(seconds: Double?, logger: Logger, say: @escaping @Sendable (String) -> Void,
                    progress: (String) -> Void) async throws -> [BenchResult] {
        let wall = seconds ?? 12
        let workloads: [(name: String, workload: Workload, target: Double)] = [
            ("shared", try DigitsModel.workload(), 0.90),
            ("dirichlet-0.1-20", try BenchWorkloads.dirichletDigits(concentration: 0.1, clients: 20), 0.85),
        ]
        let scenarios: [(name: String, plan: AttackPlan?)] = [("clean", nil)]
            + AttackKind.allCases.flatMap { k in [0.1, 0.2].map { f in ("\(k.rawValue) \(Int(f * 100)) %", AttackPlan(kind: k, fraction: f)) } }
        var results: [BenchResult] = []
        var tables: [String] = []
        for w in workloads {
            var cells: [String: Cell] = [:]
            for s in scenarios {
                for d in defences {
                    progress("attacks/\(w.name)/\(s.name)/\(d.name)")
                    var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*",
                                                  updateEndpoint: "tcp://127.0.0.1:*", rule: AlgorithmsBench.fedasyncRule, insecure: true)
                    d.configure(&config)
                    var o = InProcessFleet.Options(target: w.target, timeLimit: wall, progressEvery: 1e9, secure: false)
                    o.stopAtTarget = false
                    let summary = try await InProcessFleet(config: config, workload: w.workload, clients: w.workload.clientCount,
                                                           delayScale: 0.1, attack: s.plan, options: o, logger: logger).run()
                    let tail = summary.series.filter { $0.0 >= summary.elapsed - 2 }.map(\.2)
                    let cell = Cell(accuracy: tail.isEmpty ? summary.finalAccuracy : tail.reduce(0, +) / Double(tail.count),
                                    time: summary.timeToTarget, rejected: summary.updatesRejected)
                    cells["\(s.name)/\(d.name)"] = cell
                    say(String(format: "  %@ %@ %@: accuracy %.4f, to %.2f %@, %llu merged, %llu rejected", w.name, s.name, d.name, cell.accuracy,
                               w.target, cell.time.map { String(format: "%.1f s", $0) } ?? "-", summary.updatesMerged, summary.updatesRejected))
                }
            }
            let clean = cells["clean/none"]!.accuracy
            for s in scenarios.dropFirst() where s.plan!.fraction == 0.2 {
                let best = defences.dropFirst().map { d in (d.name, cells["\(s.name)/\(d.name)"]!) }.max { $0.1.accuracy < $1.1.accuracy }!
                let undefended = cells["\(s.name)/none"]!.accuracy
                results.append(BenchResult(name: "attacks/\(w.name)/\(s.plan!.kind.rawValue)-20", group: "attacks", figure: best.1.accuracy,
                                           unit: "final accuracy (best defence: \(best.0))", bound: clean, boundUnit: "final accuracy (clean, fedasync)",
                                           ratio: best.1.accuracy / clean, ratioMeaning: "best defended accuracy / clean accuracy",
                                           goal: "best defence within 2 points of clean", met: best.1.accuracy >= clean - 0.02,
                                           params: ["undefended_accuracy": .double(undefended), "seconds": .double(wall)]))
            }
            tables.append(table(w.name, w.target, scenarios.map(\.name), cells))
        }
        say(String(format: "attacks (each run %.0f s wall time, delays x 0.1; cells: final accuracy / seconds to the target, '-' = not reached):", wall))
        say(tables.joined(separator: "\n\n"))
        return results
    }

    static func table(_ workload: String, _ target: Double, _ scenarios: [String], _ cells: [String: Cell]) -> String {
        var lines = ["\(workload) (target \(target)):",
                     "| attack | " + defences.map(\.name).joined(separator: " | ") + " |",
                     "|---|" + defences.map { _ in "---|" }.joined()]
        for s in scenarios {
            lines.append("| \(s) | " + defences.map { d in
                let c = cells["\(s)/\(d.name)"]!
                return String(format: "%.3f / %@", c.accuracy, c.time.map { String(format: "%.1f", $0) } ?? "-")
            }.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }
}
