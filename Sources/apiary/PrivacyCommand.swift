import ApiaryCore
import ArgumentParser
import Foundation

/// `apiary privacy epsilon`: what the aggregator's RDP accountant (`RDPAccountant`) makes of a
/// run before it starts: epsilon at delta after N steps of the (Poisson-subsampled) Gaussian
/// mechanism. Also what the accountant is checked with against Google's dp-accounting
/// (Tests/privacy/check_accountant.py).
struct PrivacyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "privacy",
        abstract: "Differential-privacy accounting.",
        subcommands: [Epsilon.self]
    )

    struct Epsilon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "epsilon",
            abstract: "Epsilon at delta after N steps of the Gaussian mechanism (RDP accountant, as Google's dp-accounting RdpAccountant).",
            discussion: """
                One step is one fedbuff flush under privacy.mode central; with --local, one client's
                privatized update under privacy.mode local (sensitivity 2C: the multiplier z / 2, no sampling).
                  apiary privacy epsilon --noise-multiplier 1.1 --sampling-rate 0.01 --steps 1000 --delta 1e-5   # 1.71...
                  apiary privacy epsilon --noise-multiplier 5 --steps 100 --delta 1e-5 --json                 # no amplification (q = 1)
                  apiary privacy epsilon --local --noise-multiplier 10 --steps 50                              # one client, 50 updates
                """
        )

        @Option(name: .long, help: "z: noise standard deviation over the clipping bound (privacy.noise_multiplier).")
        var noiseMultiplier: Double

        @Option(name: .long, help: "q: Poisson sampling rate of a client per step, in (0, 1] (privacy.sampling_rate); 1 = no amplification.")
        var samplingRate: Double = 1

        @Option(name: .long, help: "Steps composed (server steps: buffer flushes).")
        var steps: UInt64

        @Option(name: .long, help: "delta, in (0, 1).")
        var delta: Double = 1e-5

        @Flag(name: .long, help: "Local DP: one client's epsilon after --steps privatized updates (privacy.mode local).")
        var local = false

        @Flag(name: .long, help: "One JSON object instead of text.")
        var json = false

        func validate() throws {
            guard noiseMultiplier.isFinite, noiseMultiplier > 0 else { throw ValidationError("--noise-multiplier must be a positive number") }
            guard samplingRate.isFinite, samplingRate > 0, samplingRate <= 1 else { throw ValidationError("--sampling-rate must be in (0, 1]") }
            guard !local || samplingRate == 1 else { throw ValidationError("--local takes no --sampling-rate: every privatized update is released") }
            guard delta.isFinite, delta > 0, delta < 1 else { throw ValidationError("--delta must be in (0, 1)") }
        }

        func run() async throws {
            let e = local
                ? LocalDPConfig(clipNorm: 1, noiseMultiplier: noiseMultiplier).epsilon(updates: steps, delta: delta)
                : RDPAccountant.epsilon(noiseMultiplier: noiseMultiplier, samplingRate: samplingRate, steps: steps, delta: delta)
            if json {
                print(#"{"epsilon":\#(e.isFinite ? "\(e)" : "null"),"delta":\#(delta),"noise_multiplier":\#(noiseMultiplier),"sampling_rate":\#(samplingRate),"steps":\#(steps)}"#)
            } else {
                if local {
                    print("epsilon \(e) at delta \(delta) for one client after \(steps) locally privatized updates (noise multiplier \(noiseMultiplier), sensitivity 2C)")
                } else {
                    print("epsilon \(e) at delta \(delta) after \(steps) steps (noise multiplier \(noiseMultiplier), \(samplingRate < 1 ? "Poisson sampling q = \(samplingRate)" : "no sampling amplification"))")
                }
            }
        }
    }
}
