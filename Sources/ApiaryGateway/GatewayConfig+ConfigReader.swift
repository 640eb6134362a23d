import ApiaryAggregator
import ApiaryClient
import Configuration

extension GatewayConfig {
    /// A gateway's settings from a swift-configuration reader (`apiary gateway`): the
    /// downstream aggregator from the top-level keys (`AggregatorConfig(reader:)`), the uplink
    /// from `upstream.*` (`ClientConfig(reader:)`), and `gateway.push_every_merges` and
    /// `gateway.push_interval_s` over `GatewayConfig`'s defaults. CURVE keys are the command's.
    public init(reader r: ConfigReader) throws {
        let down = try AggregatorConfig(reader: r)
        guard down.shard == nil else {
            throw GatewayError.invalidConfig("a gateway is not a parameter shard: leave shards.* out (it can connect to shards upstream)")
        }
        guard down.algorithm == .fedasync else {
            throw GatewayError.invalidConfig("a gateway merges with fedasync: algorithm \(down.algorithm) is not supported")
        }
        self.init(downstream: down, upstream: try ClientConfig(reader: r.scoped(to: "upstream")))
        if let v = r.int(forKey: "gateway.push_every_merges") {
            guard v >= 1 else { throw GatewayError.invalidConfig("gateway.push_every_merges must be at least 1, got \(v)") }
            pushEveryMerges = UInt64(v)
        }
        if let v = r.double(forKey: "gateway.push_interval_s") {
            guard v > 0 else { throw GatewayError.invalidConfig("gateway.push_interval_s must be positive, got \(v)") }
            pushInterval = Duration(configSeconds: v)
        }
    }
}
