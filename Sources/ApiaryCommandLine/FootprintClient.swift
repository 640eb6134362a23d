#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ApiaryClient
import ApiaryCore
import ArgumentParser
import Logging

/// The client of the footprint benchmark (`apiary bench --only footprint`): the real
/// ClientRuntime holding a model of one flat tensor `w` of `parameters` floats (the bench
/// aggregator's layout), idle or training without pause. `apiary bench footprint-client` and
/// `apiary-edge footprint-client` run this same code, so the two binaries are compared on the
/// same work. Prints `idle` (with `--idle-only`: no client at all, the process floor) or
/// `holding VERSION` once it holds the model, on stdout.
public struct FootprintClientOptions: ParsableArguments {
    @Option(help: "The aggregator's model endpoint.") public var model: String = ""
    @Option(help: "The aggregator's snapshot endpoint.") public var snapshot: String = ""
    @Option(help: "The aggregator's update endpoint.") public var update: String = ""
    @Option(help: "Parameters of the model (one tensor w).") public var parameters: Int = 100_000
    @Flag(help: "Start no client: the process floor.") public var idleOnly = false
    @Flag(help: "Train without pause (a gradient step over every parameter per round) instead of idling.") public var train = false

    public init() {}

    public func run() async throws {
        _ = LogSetup.bootstrap(level: .error)
        if idleOnly {
            Self.say("idle")
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
        let layout = try ParameterLayout([TensorSpec(name: "w", shape: [parameters])])
        let config = ClientConfig(clientID: "footprint", modelEndpoint: model, snapshotEndpoint: snapshot, updateEndpoint: update, insecure: true)
        let trainer: any Trainer = train ? QuadraticTrainer(layout: layout) : IdleTrainer(layout: layout)
        let client = try ClientRuntime(config: config, trainer: trainer, logger: Logger(label: "footprint"), onEvent: { e in
            if case .joined(let v) = e { Self.say("holding \(v)") }
        })
        try await client.run()
    }

    /// One line on stdout, unbuffered (the benchmark reads it through a pipe).
    static func say(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
    }
}

/// A trainer that never finishes: the client joins, holds the model and idles.
struct IdleTrainer: Trainer {
    let layout: ParameterLayout

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

/// One gradient step per round on `0.5 * |w - t|^2` with a fixed target `t` (every parameter
/// read and written, as a real local epoch does): what a training client allocates per round
/// is its result, one model-sized vector.
struct QuadraticTrainer: Trainer {
    let layout: ParameterLayout

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        let lr = Float(config.learningRate)
        var w = model.parameters
        for i in w.indices { w[i] -= lr * (w[i] - Float(i % 7) * 0.1) }
        // Yield between rounds: the I/O thread sends while the next round starts.
        try await Task.sleep(for: .milliseconds(20))
        return TrainingResult(parameters: w, sampleCount: 100)
    }
}
