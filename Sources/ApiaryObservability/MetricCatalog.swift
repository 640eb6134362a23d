import ApiaryAggregator

/// What one metric means: the `# HELP` and `# TYPE` lines of the Prometheus exposition, the
/// histogram buckets, and the operator documentation (docs/OBSERVABILITY.md lists them all).
public struct MetricDescription: Sendable, Hashable {
    /// The Prometheus metric type.
    public enum Kind: String, Sendable, Hashable {
        case counter, gauge, histogram
    }

    /// The full metric name (`apiary_...`).
    public var name: String
    /// Counter, gauge or histogram.
    public var kind: Kind
    /// One line for `# HELP`.
    public var help: String
    /// Label names (empty for most).
    public var labels: [String]
    /// Upper bounds of the histogram buckets (in seconds for durations); empty for others.
    public var buckets: [Double]

    /// Describes a metric.
    public init(name: String, kind: Kind, help: String, labels: [String] = [], buckets: [Double] = []) {
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = labels
        self.buckets = buckets
    }
}

/// Every metric Apiary exports: the aggregator's own (`AggregatorMetricName`, recorded on
/// the aggregator thread) and the ones this module derives (connected clients, checkpoint
/// age, evaluation results).
public enum MetricCatalog {
    /// Gauge: distinct clients whose updates arrived within the activity window.
    public static let connectedClients = "apiary_connected_clients"
    /// Gauge: seconds since the last durable checkpoint (absent without checkpoints).
    public static let checkpointAge = "apiary_checkpoint_age_seconds"
    /// Gauge: test accuracy of the global model at the last evaluation.
    public static let evalAccuracy = "apiary_eval_accuracy"
    /// Gauge: test loss of the global model at the last evaluation.
    public static let evalLoss = "apiary_eval_loss"
    /// Gauge: the model version the last evaluation looked at.
    public static let evalModelVersion = "apiary_eval_model_version"
    /// Counter: evaluations run.
    public static let evaluations = "apiary_evaluations_total"
    /// Gauge: seconds since this process started serving status.
    public static let uptime = "apiary_uptime_seconds"
    /// Gauge with a `name` label: a client metric averaged over the recent merged updates that
    /// carried it, weighted by their training examples.
    public static let clientMetric = "apiary_client_metric"
    /// Gauge with `evaluator`, `dataset` and `name` labels: an evaluator's latest report.
    public static let evaluatorMetric = "apiary_evaluator_metric"
    /// Gauge with `evaluator` and `dataset` labels: the model version of that latest report.
    public static let evaluatorModelVersion = "apiary_evaluator_model_version"

    /// Gauge: epsilon spent (at privacy.delta) by central DP's noised server steps.
    public static let privacyEpsilon = "apiary_privacy_epsilon"
    /// Gauge: noised server steps the accountant has composed.
    public static let privacySteps = "apiary_privacy_steps"
    /// Gauge: 1 when the next step would exceed privacy.epsilon_budget (no more steps), else 0.
    public static let privacyBudgetExhausted = "apiary_privacy_budget_exhausted"

    /// All of them, in the order the documentation lists them.
    public static let all: [MetricDescription] = {
        typealias N = AggregatorMetricName
        return [
            .init(name: N.updatesReceived, kind: .counter, help: "Client updates received, well-formed or not."),
            .init(name: N.updatesMerged, kind: .counter, help: "Client updates merged into the global model."),
            .init(name: N.handshakeFailures, kind: .counter,
                  help: "Peers whose CURVE/ZMTP handshake failed, by cause (unauthorized_key, cryptographic, mechanism_mismatch, protocol, no_detail).",
                  labels: ["cause"]),
            .init(name: N.updatesRejected, kind: .counter, help: "Client updates not merged, by reason (duplicates included).",
                  labels: ["reason"]),
            .init(name: N.updateStaleness, kind: .histogram,
                  help: "Staleness of merged updates: versions merged since the client's base model.",
                  buckets: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
            .init(name: N.mixingWeight, kind: .histogram, help: "Mixing weight alpha * S(staleness) of merged updates.",
                  buckets: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]),
            .init(name: N.mergeDuration, kind: .histogram, help: "Seconds to validate and merge one update on the aggregator thread.",
                  buckets: [0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
            .init(name: N.modelVersion, kind: .gauge, help: "Version of the global model (merges since the run began)."),
            .init(name: connectedClients, kind: .gauge, help: "Distinct clients whose updates arrived within the activity window."),
            .init(name: N.bytesReceived, kind: .counter, help: "Bytes of client updates received."),
            .init(name: N.bytesSent, kind: .counter, help: "Bytes sent: model broadcasts, snapshots and receipts."),
            .init(name: N.snapshotsServed, kind: .counter, help: "Snapshot requests answered (joining or lagging clients)."),
            .init(name: N.broadcasts, kind: .counter, help: "Model broadcasts on the PUB socket."),
            .init(name: N.checkpointVersion, kind: .gauge, help: "Newest model version in a durable checkpoint."),
            .init(name: N.checkpointTimestamp, kind: .gauge, help: "Unix time of the last durable checkpoint."),
            .init(name: checkpointAge, kind: .gauge, help: "Seconds since the last durable checkpoint."),
            .init(name: evalAccuracy, kind: .gauge, help: "Accuracy of the global model on the held-out set at the last evaluation."),
            .init(name: evalLoss, kind: .gauge, help: "Loss of the global model on the held-out set at the last evaluation."),
            .init(name: evalModelVersion, kind: .gauge, help: "Model version of the last evaluation."),
            .init(name: evaluations, kind: .counter, help: "Evaluations of the global model run."),
            .init(name: privacyEpsilon, kind: .gauge, help: "Central DP: epsilon spent at privacy.delta by the noised server steps (RDP accountant)."),
            .init(name: privacySteps, kind: .gauge, help: "Central DP: noised server steps (buffer flushes) the accountant has composed."),
            .init(name: privacyBudgetExhausted, kind: .gauge, help: "Central DP: 1 when one more step would exceed privacy.epsilon_budget (updates are refused), else 0."),
            .init(name: uptime, kind: .gauge, help: "Seconds since the status server started."),
            .init(name: clientMetric, kind: .gauge,
                  help: "A metric clients sent with their updates, averaged over recent merged updates weighted by examples.",
                  labels: ["name"]),
            .init(name: evaluatorMetric, kind: .gauge, help: "A metric of an evaluator's latest report on its dataset.",
                  labels: ["evaluator", "dataset", "name"]),
            .init(name: evaluatorModelVersion, kind: .gauge, help: "Model version an evaluator's latest report evaluated.",
                  labels: ["evaluator", "dataset"]),
        ]
    }()

    /// The description of `name`, if Apiary exports it.
    public static func description(of name: String) -> MetricDescription? {
        byName[name]
    }

    private static let byName: [String: MetricDescription] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
}
