import ApiaryAggregator
import ApiaryCore
import ApiaryLearning
import ApiaryMerge
import ApiaryProtocol
import ApiaryTesting
import Foundation
import Logging

/// algorithms: FedAsync, FedBuff, FedBuff with a server optimizer and synchronous FedAvg, side
/// by side, on the shared workload and two harder ones generated here (digits with Dirichlet
/// 0.1 label skew over 50 clients; FedProx's Synthetic(1,1) over 30 clients), all with the
/// shared delay tiers; then each update codec under FedBuff on the shared workload. Every run
/// has the same wall time and does not stop at the target, so final accuracies compare at
/// equal time; the bound of each row is FedAsync on the same workload (or float32 for codecs).
enum AlgorithmsBench {
    struct Variant: Sendable {
        var name: String
        var configure: @Sendable (inout AggregatorConfig, Int) -> Void
    }

    static let fedasyncRule = FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 128)

    static let variants: [Variant] = [
        Variant(name: "fedasync") { _, _ in },
        Variant(name: "fedbuff") { c, _ in
            c.buffer = FedBuffConfig(bufferSize: 10, maxWait: .seconds(5), optimizer: .init(kind: .sgd, learningRate: 1))
        },
        Variant(name: "fedbuff-adam") { c, _ in
            c.buffer = FedBuffConfig(bufferSize: 10, maxWait: .seconds(5), optimizer: .init(kind: .adam, learningRate: 0.05))
        },
        Variant(name: "fedavg") { c, n in
            c.sync = FedAvgConfig(expectedClients: n, roundTimeout: .seconds(60))
        },
    ]

    struct Run {
        var workload: String
        var variant: String
        var summary: FleetSummary
    }

    static func run(quick: Bool, seconds: Double?, logger: Logger, say: @escaping @Sendable (String) -> Void,
                    progress: (String) -> Void) async throws -> [BenchResult] {
        let wall = seconds ?? (quick ? 3 : 60)
        let delayScale = quick ? 0.05 : 1
        var workloads: [(name: String, workload: Workload, low: Double, high: Double)] = [("shared", try DigitsModel.workload(), 0.85, 0.90)]
        if !quick {
            workloads.append(("dirichlet-0.1", try BenchWorkloads.dirichletDigits(), 0.85, 0.90))
            workloads.append(("synthetic-1-1", try BenchWorkloads.synthetic(), 0.60, 0.70))
        }
        let chosen = quick ? variants.filter { ["fedasync", "fedbuff"].contains($0.name) } : variants
        var runs: [Run] = []
        var results: [BenchResult] = []
        let quiet: @Sendable (String) -> Void = { _ in }
        for w in workloads {
            for v in chosen {
                progress("algorithms/\(w.name)/\(v.name)")
                let s = try await demo(w.workload, variant: v, codec: .init(), wall: wall, delayScale: delayScale, low: w.low, high: w.high,
                                       logger: logger, say: quiet)
                runs.append(Run(workload: w.name, variant: v.name, summary: s))
            }
            let base = runs.first { $0.workload == w.name && $0.variant == "fedasync" }!.summary
            for r in runs where r.workload == w.name {
                results.append(row("algorithms/\(w.name)/\(r.variant)", r.summary, against: base, boundName: "fedasync"))
            }
        }
        // Codecs: FedBuff on the shared workload, each codec the aggregator can ask for.
        let shared = workloads[0]
        let fedbuff = variants.first { $0.name == "fedbuff" }!
        let codecs: [PayloadCodec] = quick ? [.denseFloat32, .int8] : PayloadCodec.allCases
        var codecRuns: [(PayloadCodec, FleetSummary)] = []
        for c in codecs {
            progress("algorithms/codec/\(c.name)")
            let s = try await demo(shared.workload, variant: fedbuff, codec: UpdateCompression(codec: c), wall: wall, delayScale: delayScale,
                                   low: shared.low, high: shared.high, logger: logger, say: quiet)
            codecRuns.append((c, s))
        }
        let f32 = codecRuns[0].1
        for (c, s) in codecRuns {
            let perUpdate = Double(s.bytesReceived) / Double(max(s.updatesMerged, 1))
            let f32PerUpdate = Double(f32.bytesReceived) / Double(max(f32.updatesMerged, 1))
            var goal: String?, met: Bool?
            switch c {
            case .int8:
                goal = "<= 26 % of float32 bytes, <= 0.5 points lost"
                met = perUpdate / f32PerUpdate <= 0.26 && s.finalAccuracy >= f32.finalAccuracy - 0.005
            case .topK:
                goal = ">= 50x fewer bytes than float32, <= 1 point lost"
                met = f32PerUpdate / perUpdate >= 50 && s.finalAccuracy >= f32.finalAccuracy - 0.01
            default: break
            }
            results.append(BenchResult(name: "algorithms/codec/\(c.name)", group: "algorithms", figure: perUpdate, unit: "bytes/update",
                                       bound: f32PerUpdate, boundUnit: "bytes/update (float32)", ratio: perUpdate / f32PerUpdate,
                                       ratioMeaning: "bytes per update / float32's (whole messages: header, layout and payload)",
                                       goal: quick ? nil : goal, met: quick ? nil : met, params: params(s, low: shared.low),
                                       note: String(format: "final accuracy %.4f vs %.4f with float32", s.finalAccuracy, f32.finalAccuracy)))
        }
        results += sizeRows(quick: quick)
        say(table(runs, codecRuns, wall: wall, workloads: workloads.map { ($0.name, $0.low, $0.high) }))
        return results
    }

    /// What one update of a large model costs on the wire with each codec (no training: a
    /// random delta of 1M values, the protocol's header and layout frames included), against
    /// float32: the digits model is so small that its 124 bytes of header and layout weigh.
    static func sizeRows(quick: Bool) -> [BenchResult] {
        let n = quick ? 100_000 : 1_000_000
        guard let layout = try? ParameterLayout([TensorSpec(name: "w", shape: [n])]) else { return [] }
        var rng = SplitMix64(seed: 5)
        let delta = (0..<n).map { _ in Float(rng.nextNormal() * 0.01) }
        let fixed = Codec.encode(UpdateHeader(runID: 1, baseVersion: 0, seq: 1, sampleCount: 0, clientID: "client-0", isDelta: true)).count
            + Codec.encodeLayout(layout).count
        func bytes(_ c: PayloadCodec) -> Int {
            fixed + delta.withUnsafeBufferPointer { UpdateCodec.encode($0, codec: c, chunk: 262_144) }.reduce(0) { $0 + $1.count }
        }
        let f32 = Double(bytes(.denseFloat32))
        let label = quick ? "100k" : "1M"
        return PayloadCodec.allCases.dropFirst().map { c in
            let b = Double(bytes(c))
            let goal: (String, Bool)? = switch c {
            case .int8: ("<= 26 % of float32", b / f32 <= 0.26)
            case .topK: (">= 50x fewer bytes", f32 / b >= 50)
            default: nil
            }
            return BenchResult(name: "algorithms/codec-\(label)/\(c.name)", group: "algorithms", figure: b, unit: "bytes/update",
                               bound: f32, boundUnit: "bytes/update (float32)", ratio: b / f32,
                               ratioMeaning: "bytes per update / float32's (header, layout and payload)",
                               goal: quick ? nil : goal?.0, met: quick ? nil : goal?.1, params: ["parameters": .int(n)])
        }
    }

    static func demo(_ workload: Workload, variant: Variant, codec: UpdateCompression, wall: Double, delayScale: Double, low: Double,
                     high: Double, logger: Logger, say: @escaping @Sendable (String) -> Void) async throws -> FleetSummary {
        var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                                      rule: fedasyncRule, insecure: true)
        variant.configure(&config, workload.clientCount)
        config.compression = codec
        var o = InProcessFleet.Options(target: high, timeLimit: wall, progressEvery: 1e9, secure: false)
        o.stopAtTarget = false
        o.lowerTarget = low
        return try await InProcessFleet(config: config, workload: workload, clients: workload.clientCount, delayScale: delayScale,
                                        options: o, logger: logger, say: say).run()
    }

    static func params(_ s: FleetSummary, low: Double) -> [String: BenchValue] {
        var p: [String: BenchValue] = ["final_accuracy": .double(s.finalAccuracy), "merged": .int(Int(s.updatesMerged)),
                                       "versions": .int(Int(s.versions)), "bytes_received": .int(Int(s.bytesReceived)),
                                       "clients": .int(s.clients)]
        if let t = s.timeToTarget { p["time_to_target_s"] = .double(t) }
        if let t = s.timeTo085 { p["time_to_\(low)_s"] = .double(t) }
        if let t = s.slowestTier {
            p["slowest_tier_merge_share"] = .double(t.mergeShare)
            p["slowest_tier_merged_fraction"] = .double(t.mergedFraction)
        }
        return p
    }

    static func row(_ name: String, _ s: FleetSummary, against base: FleetSummary, boundName: String) -> BenchResult {
        let ratio = (s.timeToTarget != nil && base.timeToTarget != nil) ? base.timeToTarget! / s.timeToTarget! : nil
        return BenchResult(name: name, group: "algorithms", status: "measured", figure: s.timeToTarget,
                           unit: String(format: "s to %.2f", s.targetAccuracy), bound: base.timeToTarget,
                           boundUnit: "s (\(boundName))", ratio: ratio, ratioMeaning: "\(boundName) time / this time (> 1: sooner)",
                           goal: nil, met: nil, params: params(s, low: 0),
                           note: s.timeToTarget == nil ? String(format: "did not reach %.2f (final %.4f)", s.targetAccuracy, s.finalAccuracy) : nil)
    }

    /// The side-by-side table (what docs/BENCHMARKS.md shows).
    static func table(_ runs: [Run], _ codecs: [(PayloadCodec, FleetSummary)], wall: Double,
                      workloads: [(String, Double, Double)]) -> String {
        func t(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "-" }
        var lines = [String(format: "algorithms (each run %.0f s wall time; times in s, '-' = not reached):", wall),
                     "| workload | algorithm | to low | to high | final acc | merges | slowest tier: share of merges, its updates merged | MiB up |",
                     "|---|---|---|---|---|---|---|---|"]
        for r in runs {
            let w = workloads.first { $0.0 == r.workload }!
            let s = r.summary
            lines.append("| \(r.workload) (\(w.1)/\(w.2)) | \(r.variant) | \(t(s.timeTo085)) | \(t(s.timeToTarget)) | "
                         + String(format: "%.4f | %llu | %@ | %.2f |", s.finalAccuracy, s.updatesMerged,
                                  s.slowestTier.map { String(format: "%.1f %%, %.0f %%", 100 * $0.mergeShare, 100 * $0.mergedFraction) } ?? "-",
                                  Double(s.bytesReceived) / 1_048_576))
        }
        lines += ["", "codecs (fedbuff, shared workload):", "| codec | bytes/update | vs float32 | final acc | to 0.90 |", "|---|---|---|---|---|"]
        let f32 = codecs.first.map { Double($0.1.bytesReceived) / Double(max($0.1.updatesMerged, 1)) } ?? 1
        for (c, s) in codecs {
            let b = Double(s.bytesReceived) / Double(max(s.updatesMerged, 1))
            lines.append(String(format: "| %@ | %.0f | %.3f | %.4f | %@ |", c.name, b, b / f32, s.finalAccuracy, t(s.timeToTarget)))
        }
        return lines.joined(separator: "\n")
    }
}
