import ApiaryCore
import Configuration

extension ClientConfig {
    /// A client's settings from a swift-configuration reader (`apiary client` and `apiary-edge`:
    /// a YAML file with environment overrides), as `AggregatorConfig(reader:)` does: it starts
    /// from `ClientConfig`'s defaults and overrides only the keys present. `client.id` is
    /// required unless `clientID` gives one (a command-line option wins over the key). CURVE
    /// keys are the command's (they name files). A bad value throws `ClientError`
    /// (`invalidConfig`) naming the key.
    public init(reader r: ConfigReader, clientID: String? = nil) throws {
        guard let id = clientID ?? r.string(forKey: "client.id") else { throw ClientError.invalidConfig("client.id is required (or CLIENT_ID)") }
        self.init(clientID: id)
        if let v = r.string(forKey: "endpoints.model") { modelEndpoint = v }
        if let v = r.string(forKey: "endpoints.snapshot") { snapshotEndpoint = v }
        if let v = r.string(forKey: "endpoints.update") { updateEndpoint = v }
        if let v = Self.seconds(r, "client.receipt_timeout_s") { receiptTimeout = v }
        if let v = r.int(forKey: "client.max_pending_updates") {
            guard v >= 1 else { throw ClientError.invalidConfig("client.max_pending_updates must be at least 1, got \(v)") }
            maxPendingUpdates = v
        }
        if let v = Self.seconds(r, "client.snapshot_timeout_s") { snapshotTimeout = v }
        if let v = Self.seconds(r, "client.new_model_wait_s") { newModelWait = v }
        if let v = Self.seconds(r, "client.max_backoff_s") { maxBackoff = v }
    }

    private static func seconds(_ r: ConfigReader, _ key: String) -> Duration? {
        r.double(forKey: ConfigKey(key)).map(Duration.init(configSeconds:))
    }
}
