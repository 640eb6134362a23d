/// How the aggregator turns updates into new model versions; the snapshot config's
/// `algorithm` (docs/PROTOCOL.md). It also says what a client sends: the trained model
/// (`fedasync`, `fedavg`) or the delta from the model it trained on (`fedbuff`).
public enum Algorithm: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// Each update is mixed in as it arrives: `x = x + a_t (x_client - x)`.
    case fedasync
    /// Synchronous rounds: a round waits for its clients, then averages by sample count.
    case fedavg
    /// Buffered asynchronous aggregation: K staleness-weighted deltas, then one server step.
    case fedbuff

    /// Whether clients send `trained - base` (header flag bit 1) instead of the trained model.
    public var sendsDeltas: Bool { self == .fedbuff }

    public var description: String { rawValue }

    /// A name a person reads (reports, logs).
    public var title: String {
        switch self {
        case .fedasync: "FedAsync (asynchronous)"
        case .fedavg: "FedAvg (synchronous rounds)"
        case .fedbuff: "FedBuff (buffered asynchronous)"
        }
    }
}
