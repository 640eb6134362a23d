import ApiaryClient
import ArgumentParser
import Configuration

/// How a client process (`apiary client`, `apiary evaluate`) reaches its aggregator: the
/// endpoints and the CURVE key files, over what the config file says.
public struct ConnectionOptions: ParsableArguments {
    @Flag(name: .long, help: "Connect without CURVE encryption and authentication.")
    public var insecure = false

    @Option(name: .long, help: "The aggregator's snapshot endpoint tcp://HOST:PORT; model and update are PORT+1 and PORT+2. Overrides endpoints.*.")
    public var aggregator: String?

    @Option(name: .long, help: "This client's secret key file; overrides security.secret_key_file. Default: keys/<id>.secret.")
    public var key: String?

    @Option(name: .long, help: "The aggregator's public key file; overrides security.server_public_key_file. Default: keys/aggregator.public.")
    public var serverKey: String?

    public init() {}

    /// Sets the endpoints (`--aggregator`) and the CURVE keys (nil and `insecure` with `--insecure`
    /// or `security.insecure`) of `config`, whose client id is already final.
    public func apply(to config: inout ClientConfig, reader: ConfigReader) throws {
        if let aggregator { try Settings.applyAggregator(aggregator, to: &config) }
        config.curve = try Settings.clientCurve(reader, insecureFlag: insecure, clientID: config.clientID, key: key, serverKey: serverKey)
        config.insecure = config.curve == nil
    }
}
