import ApiaryClient
import ApiaryCore
import Configuration
import Testing

/// `ClientConfig(reader:)`: the library's defaults, a key overrides only itself, an id is
/// required, a bad value names its key.
@Suite("Client settings from a config reader")
struct ClientConfigReaderTests {
    static func reader(_ values: [AbsoluteConfigKey: ConfigValue]) -> ConfigReader {
        ConfigReader(provider: InMemoryProvider(values: values))
    }

    @Test("only an id: the library's defaults; a key overrides only itself; the id argument wins over client.id")
    func defaults() throws {
        let c = try ClientConfig(reader: Self.reader(["client.id": "gw-1"]))
        let d = ClientConfig(clientID: "gw-1")
        #expect(c.clientID == "gw-1" && c.modelEndpoint == d.modelEndpoint && c.snapshotEndpoint == d.snapshotEndpoint)
        #expect(c.updateEndpoint == d.updateEndpoint && c.receiptTimeout == nil && c.maxPendingUpdates == d.maxPendingUpdates)
        #expect(c.snapshotTimeout == d.snapshotTimeout && c.newModelWait == d.newModelWait && c.maxBackoff == d.maxBackoff)
        let o = try ClientConfig(reader: Self.reader(["client.id": "gw-1", "client.max_backoff_s": 2.5, "endpoints.update": "tcp://10.0.0.1:7"]),
                                 clientID: "cli")
        #expect(o.clientID == "cli" && o.maxBackoff == .milliseconds(2500) && o.updateEndpoint == "tcp://10.0.0.1:7")
        #expect(o.modelEndpoint == d.modelEndpoint && o.snapshotTimeout == d.snapshotTimeout)
    }

    @Test("no id, or a bound below 1, is an invalid-config error naming the key")
    func errors() throws {
        for (values, key) in [([:], "client.id"), (["client.id": "a", "client.max_pending_updates": 0], "client.max_pending_updates")]
            as [([AbsoluteConfigKey: ConfigValue], String)] {
            #expect {
                _ = try ClientConfig(reader: Self.reader(values))
            } throws: { error in
                "\(error)".contains(key) && (error as? ClientError)?.code == .invalidConfig
            }
        }
    }
}
