import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

/// A caller tells start-up failures apart by their code, and keeps the cause as a value.
@Suite("Errors carry codes and their causes", .serialized)
struct ErrorCodeTests {
    private func aggregator(_ config: AggregatorConfig, layout: ParameterLayout = testLayout) throws -> Aggregator {
        try Aggregator(config: config, layout: layout, initialParameters: [Float](repeating: 0, count: layout.parameterCount), logger: quietLogger())
    }

    @Test("an update endpoint in use is addressInUse, with the ZMQError kept as the underlying error")
    func addressInUse() throws {
        let context = try Context()
        let squatter = try context.socket(.pull)
        defer { squatter.close() }
        try squatter.bind("tcp://127.0.0.1:*")
        var config = anyPortConfig()
        config.updateEndpoint = try squatter.lastEndpoint
        let agg = try aggregator(config)
        defer { agg.stop() }
        #expect {
            try agg.start()
        } throws: { e in
            guard let e = e as? AggregatorError, e.code == .addressInUse else { return false }
            return (e.underlying as? ZMQError)?.errno == EADDRINUSE
        }
    }

    @Test("a state directory held by another aggregator is stateDirectoryLocked; a checkpoint of another model is checkpointOfAnotherModel")
    func stateDirectoryCodes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-codes-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        var config = anyPortConfig()
        config.checkpointDirectory = dir.path
        let first = try aggregator(config)
        try first.start()
        let second = try aggregator(config)
        #expect {
            try second.start()
        } throws: { ($0 as? AggregatorError)?.code == .stateDirectoryLocked }
        first.stop()

        let other = try ParameterLayout([TensorSpec(name: "w", shape: [2, 2])])
        let third = try aggregator(config, layout: other)
        #expect {
            try third.start()
        } throws: { ($0 as? AggregatorError)?.code == .checkpointOfAnotherModel }
    }

    @Test("a checkpoint directory that cannot be created is stateUnusable")
    func unusableState() throws {
        var config = anyPortConfig()
        config.checkpointDirectory = "/proc/apiary-cannot-be-here/checkpoints"
        let agg = try aggregator(config)
        #expect {
            try agg.start()
        } throws: { ($0 as? AggregatorError)?.code == .stateUnusable }
    }

    @Test("an out-of-range config is invalidConfig, for the aggregator and the client alike")
    func invalidConfig() throws {
        var config = anyPortConfig()
        config.checkpointKeep = 0
        #expect { _ = try aggregator(config) } throws: { ($0 as? AggregatorError)?.code == .invalidConfig }
        let bad = ClientConfig(clientID: "not a valid id!", modelEndpoint: "tcp://127.0.0.1:1", snapshotEndpoint: "tcp://127.0.0.1:2",
                               updateEndpoint: "tcp://127.0.0.1:3", insecure: true)
        #expect {
            _ = try ClientRuntime(config: bad, trainer: StepTrainer(layout: testLayout), logger: quietLogger())
        } throws: { ($0 as? ClientError)?.code == .invalidConfig }
    }
}
