/// Hyper-parameters that the aggregator hands to every client with the snapshot; a client's
/// trainer reads what applies to it.
public struct TrainingConfig: Sendable, Hashable, Codable {
    public var learningRate: Double
    public var localEpochs: Int
    public var batchSize: Int
    /// FedProx proximal term (0 = off).
    public var proximalMu: Double

    public init(learningRate: Double = 0.1, localEpochs: Int = 1, batchSize: Int = 16, proximalMu: Double = 0) {
        self.learningRate = learningRate
        self.localEpochs = localEpochs
        self.batchSize = batchSize
        self.proximalMu = proximalMu
    }

    enum CodingKeys: String, CodingKey {
        case learningRate = "learning_rate"
        case localEpochs = "local_epochs"
        case batchSize = "batch_size"
        case proximalMu = "proximal_mu"
    }
}

/// What one local training run produces: the locally trained parameters (same layout as the
/// model it started from) and how many examples it trained on.
public struct TrainingResult: Sendable {
    public var parameters: [Float]
    public var sampleCount: Int
    /// Mean training loss of the run, if the trainer measures it.
    public var loss: Double?

    public init(parameters: [Float], sampleCount: Int, loss: Double? = nil) {
        self.parameters = parameters
        self.sampleCount = sampleCount
        self.loss = loss
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
