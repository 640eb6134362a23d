/// Hyper-parameters that the aggregator hands to every client with the snapshot; a client's
/// trainer reads what applies to it.
public struct TrainingConfig: Sendable, Hashable, Codable {
    public var learningRate: Double
    public var localEpochs: Int
    public var batchSize: Int
    /// FedProx proximal term (0 = off).
    public var proximalMu: Double
    /// The operator's settings for the user's own trainer (`training.extra` in the
    /// aggregator's config): string keys, number, string or bool values, passed through
    /// unchanged. Empty when none are set.
    public var extra: [String: TrainingValue]

    public init(learningRate: Double = 0.1, localEpochs: Int = 1, batchSize: Int = 16, proximalMu: Double = 0,
                extra: [String: TrainingValue] = [:]) {
        self.learningRate = learningRate
        self.localEpochs = localEpochs
        self.batchSize = batchSize
        self.proximalMu = proximalMu
        self.extra = extra
    }

    enum CodingKeys: String, CodingKey {
        case learningRate = "learning_rate"
        case localEpochs = "local_epochs"
        case batchSize = "batch_size"
        case proximalMu = "proximal_mu"
        case extra
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        learningRate = try c.decode(Double.self, forKey: .learningRate)
        localEpochs = try c.decode(Int.self, forKey: .localEpochs)
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        proximalMu = try c.decode(Double.self, forKey: .proximalMu)
        // Absent from the snapshots of aggregators older than `training.extra`.
        extra = try c.decodeIfPresent([String: TrainingValue].self, forKey: .extra) ?? [:]
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(localEpochs, forKey: .localEpochs)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(proximalMu, forKey: .proximalMu)
        if !extra.isEmpty { try c.encode(extra, forKey: .extra) }
    }
}

/// One value of `TrainingConfig.extra`: a number, a string or a bool (JSON's scalars).
public enum TrainingValue: Sendable, Hashable, Codable, CustomStringConvertible {
    case number(Double)
    case string(String)
    case bool(Bool)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Bool first: JSON `true` must not become the number 1.
        if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "a training.extra value must be a number, a string or a bool")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .bool(let b): try c.encode(b)
        }
    }

    public var number: Double? { if case .number(let d) = self { d } else { nil } }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }

    public var description: String {
        switch self {
        case .number(let d): "\(d)"
        case .string(let s): s
        case .bool(let b): "\(b)"
        }
    }
}

/// What one local training run produces: the locally trained parameters (same layout as the
/// model it started from) and how many examples it trained on.
public struct TrainingResult: Sendable {
    public var parameters: [Float]
    public var sampleCount: Int
    /// Mean training loss of the run, if the trainer measures it.
    public var loss: Double?
    /// Named numbers the trainer measured (accuracy on its data, say): sent with the update
    /// when the aggregator takes them, and averaged there over recent updates weighted by
    /// `sampleCount`. `loss`, when set, is sent as "loss" unless `metrics` has one.
    /// Names: 1 to 64 characters of `A-Z a-z 0-9 . _ -`; values finite (see `UpdateMetrics`).
    public var metrics: [String: Double]

    public init(parameters: [Float], sampleCount: Int, loss: Double? = nil, metrics: [String: Double] = [:]) {
        self.parameters = parameters
        self.sampleCount = sampleCount
        self.loss = loss
        self.metrics = metrics
    }

    /// What goes on the wire: `metrics`, plus `loss` under "loss".
    public var reportedMetrics: [String: Double] {
        var m = metrics
        if let loss, m["loss"] == nil { m["loss"] = loss }
        return m
    }

    /// No update this time: the client pushes nothing and trains again on the next model
    /// (a gateway with no local progress returns this when a newer upstream model came).
    public static let nothing = TrainingResult(parameters: [], sampleCount: 0)

    public var isNothing: Bool { parameters.isEmpty && sampleCount == 0 }
}

/// What a learner implements to take part in federated training. The client runtime calls
/// `train` with the newest global model it has; the learner trains on its private data and
/// returns new parameters of the same layout. Implementations must not depend on sockets.
public protocol Trainer: Sendable {
    /// The layout of the parameters this trainer produces; the client checks it against the
    /// aggregator's layout when it joins.
    var layout: ParameterLayout { get }

    /// One local training run starting from `model`. `round` counts this client's runs from 1.
    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult
}

/// What an evaluator measured on one model: named numbers ("accuracy", "loss", any of the
/// user's) and how many held-out examples they were measured on.
public struct EvaluatorResult: Sendable {
    public var metrics: [String: Double]
    public var exampleCount: Int

    public init(metrics: [String: Double], exampleCount: Int) {
        self.metrics = metrics
        self.exampleCount = exampleCount
    }
}

/// What a process implements to be an evaluator: a client that does not train, follows the
/// newest model and reports how well it does on held-out data of its own. The client
/// runtime (`ClientRuntime(config:evaluator:)`) calls `evaluate` for each newer model it
/// holds and sends the result as an EVALUATION_REPORT tagged with the model's version.
public protocol Evaluator: Sendable {
    /// The layout of the models it can evaluate (checked against the aggregator's).
    var layout: ParameterLayout { get }
    /// What it evaluates on, shown with its results ("digits test split", say): 1 to 128 bytes.
    var dataset: String { get }

    /// Evaluates `model`; `config` is the aggregator's training plan (its `extra` settings too).
    func evaluate(model: ModelSnapshot, config: TrainingConfig) async throws -> EvaluatorResult
}
