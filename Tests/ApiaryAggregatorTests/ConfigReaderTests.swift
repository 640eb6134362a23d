import ApiaryAggregator
import ApiaryCommandLine
import ApiaryCore
import Configuration
import Foundation
import Testing

/// `AggregatorConfig(reader:)`: the library's defaults are the only ones, a key overrides only
/// itself, and a bad value is an error naming its key.
@Suite("Aggregator settings from a config reader")
struct ConfigReaderTests {
    static func reader(_ values: [AbsoluteConfigKey: ConfigValue]) -> ConfigReader {
        ConfigReader(provider: InMemoryProvider(values: values))
    }

    @Test("no keys: exactly the library's defaults")
    func defaults() throws {
        let c = try AggregatorConfig(reader: Self.reader([:]))
        let d = AggregatorConfig()
        #expect(c.rule == d.rule && c.training == d.training && c.compression == d.compression)
        #expect(c.publishInterval == d.publishInterval && c.heartbeatInterval == d.heartbeatInterval)
        #expect(c.dedupWindow == d.dedupWindow && c.updateQueueLimit == d.updateQueueLimit && c.updateQueueBytes == d.updateQueueBytes)
        #expect(c.checkpointInterval == d.checkpointInterval && c.checkpointEveryVersions == d.checkpointEveryVersions)
        #expect(c.ledgerRetention == d.ledgerRetention && c.maxUpdateNorm == nil && c.normPolicy == d.normPolicy)
        #expect(c.checkpointDirectory == nil && c.ledgerPath == nil && c.sync == nil && c.buffer == nil && c.shard == nil)
        #expect(c.algorithm == .fedasync)
    }

    @Test("a key overrides only itself; the sub-configs start from their own defaults")
    func override() throws {
        let c = try AggregatorConfig(reader: Self.reader(["fedasync.alpha": 0.3, "algorithm": "fedbuff", "fedbuff.buffer_size": 4]))
        var rule = AggregatorConfig().rule
        rule.alpha = 0.3
        #expect(c.rule == rule)
        var buffer = FedBuffConfig()
        buffer.bufferSize = 4
        #expect(c.buffer == buffer)
        let sync = try AggregatorConfig(reader: Self.reader(["algorithm": "fedavg", "sync.expected_clients": 5]))
        #expect(sync.sync == FedAvgConfig(expectedClients: 5) && sync.sync?.minClients == 5)
        let hinge = try AggregatorConfig(reader: Self.reader(["fedasync.staleness.function": "hinge", "fedasync.staleness.b": 7.0]))
        #expect(hinge.rule.staleness == .hinge(a: 0.5, b: 7))
    }

    @Test("the shipped Configs/aggregator.yaml shows the library's defaults, not other numbers")
    func shippedFile() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let file = root.appendingPathComponent("Configs/aggregator.yaml").path
        let r = try await Settings.reader(file: file, environment: [:])
        let c = try AggregatorConfig(reader: r)
        let d = AggregatorConfig()
        #expect(c.rule == d.rule && c.training == d.training && c.compression == d.compression)
        #expect(c.publishInterval == d.publishInterval && c.heartbeatInterval == d.heartbeatInterval && c.chunkParameters == d.chunkParameters)
        #expect(c.maxFrameBytes == d.maxFrameBytes && c.maxPayloadFrames == d.maxPayloadFrames && c.receiptTimeout == d.receiptTimeout)
        #expect(c.dedupWindow == d.dedupWindow && c.updateQueueLimit == d.updateQueueLimit && c.updateQueueBytes == d.updateQueueBytes)
        #expect(c.ioThreads == d.ioThreads && c.checkpointInterval == d.checkpointInterval)
        #expect(c.checkpointEveryVersions == d.checkpointEveryVersions && c.checkpointKeep == d.checkpointKeep)
        #expect(c.ledgerRetention == d.ledgerRetention && c.normPolicy == d.normPolicy)
        // The sections of the other algorithms, read as if chosen.
        #expect(try FedBuffConfig(reader: r) == FedBuffConfig())
        #expect(try PrivacyConfig(reader: r) == PrivacyConfig())
        #expect(try ServerOptimizer.Config(reader: r) == ServerOptimizer.Config())
    }

    @Test("a value out of range is an error naming its key, not clamped", arguments: [
        (["algorithm": "fedavg", "sync.expected_clients": 3, "sync.min_clients": 5] as [AbsoluteConfigKey: ConfigValue], "sync.min_clients"),
        (["ledger.max_rows": -1], "ledger.max_rows"),
        (["limits.dedup_window": 0], "limits.dedup_window"),
        (["fedasync.staleness.function": "cubic"], "fedasync.staleness.function"),
        (["algorithm": "fedbuff", "fedbuff.aggregate": "krum"], "fedbuff.aggregate"),
    ])
    func errors(values: [AbsoluteConfigKey: ConfigValue], key: String) throws {
        #expect {
            _ = try AggregatorConfig(reader: Self.reader(values))
        } throws: { error in
            "\(error)".contains(key) && (error as? AggregatorError)?.code == .invalidConfig
        }
    }
}
