import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryGateway
import Configuration
import Testing

/// `GatewayConfig(reader:)`: the downstream aggregator from the top-level keys, the uplink
/// from `upstream.*`, the push keys over the library's defaults, and what a gateway cannot be.
@Suite("Gateway settings from a config reader")
struct GatewayConfigReaderTests {
    static func reader(_ values: [AbsoluteConfigKey: ConfigValue]) -> ConfigReader {
        ConfigReader(provider: InMemoryProvider(values: values))
    }

    @Test("downstream keys, upstream.* keys and gateway.* keys each land on their side; the rest are defaults")
    func sides() throws {
        let c = try GatewayConfig(reader: Self.reader([
            "endpoints.update": "tcp://127.0.0.1:6558", "fedasync.alpha": 0.4,
            "upstream.client.id": "gw-7", "upstream.endpoints.update": "tcp://10.1.1.1:5558",
            "gateway.push_every_merges": 5,
        ]))
        #expect(c.downstream.updateEndpoint == "tcp://127.0.0.1:6558" && c.downstream.rule.alpha == 0.4)
        #expect(c.upstream.clientID == "gw-7" && c.upstream.updateEndpoint == "tcp://10.1.1.1:5558")
        #expect(c.upstream.modelEndpoint == ClientConfig(clientID: "x").modelEndpoint, "upstream keys left out are the client's defaults")
        let d = GatewayConfig(downstream: AggregatorConfig(), upstream: ClientConfig(clientID: "x"))
        #expect(c.pushEveryMerges == 5 && c.pushInterval == d.pushInterval)
    }

    @Test("a shard, synchronous rounds, FedBuff, no uplink id or a push bound below 1 is an error naming the cause", arguments: [
        (["shards.model": .init(.stringArray(["a", "b"]), isSecret: false), "shards.snapshot": .init(.stringArray(["a", "b"]), isSecret: false),
          "shards.update": .init(.stringArray(["a", "b"]), isSecret: false), "shards.index": 0, "upstream.client.id": "g"] as [AbsoluteConfigKey: ConfigValue],
         "parameter shard"),
        (["algorithm": "fedavg", "sync.expected_clients": 2, "upstream.client.id": "g"], "fedavg"),
        (["algorithm": "fedbuff", "upstream.client.id": "g"], "fedbuff"),
        ([:], "client.id"),
        (["upstream.client.id": "g", "gateway.push_every_merges": 0], "gateway.push_every_merges"),
        (["upstream.client.id": "g", "gateway.push_interval_s": 0.0], "gateway.push_interval_s"),
    ])
    func errors(values: [AbsoluteConfigKey: ConfigValue], cause: String) throws {
        #expect {
            _ = try GatewayConfig(reader: Self.reader(values))
        } throws: { error in
            "\(error)".contains(cause)
        }
    }
}
