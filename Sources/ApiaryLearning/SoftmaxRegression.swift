import ApiaryCore

/// Multinomial logistic (softmax) regression trained by plain minibatch SGD on one client's
/// private data: the local training of the shared workload.
///
/// Parameters are `W` [featureCount, classCount] then `b` [classCount], float32, flat and
/// row-major. Each epoch shuffles the rows, cuts the permutation into consecutive batches of
/// `config.batchSize` (the last one may be smaller), and for each batch applies
/// `g = softmax(x W + b) - onehot(y)`, `W -= lr * x_bᵀ g / |b|`, `b -= lr * Σ_rows g / |b|`,
/// plus `lr * mu * (w - w_global)` when `config.proximalMu > 0` (FedProx).
///
/// The shuffle of epoch `e` of the `round`-th run is a Fisher–Yates permutation drawn from
/// `SplitMix64(deriving: shuffleSeed, clientID, round, e)`. The reference implementation uses
/// `numpy.random.default_rng([shuffle_seed, client_id, k]).permutation(n)`, whose PCG64 seed
/// sequence and bounded-integer algorithm are not reproduced here, so batch orders (and thus
/// trained parameters) differ from the Python reference in detail, though not in distribution.
public struct SoftmaxRegression: Trainer {
    /// `W` [featureCount, classCount], `b` [classCount].
    public let layout: ParameterLayout
    /// The client's private training data (immutable).
    public let dataset: Dataset
    /// The client id, part of the shuffle seed.
    public let clientID: Int
    /// The base shuffle seed.
    public let shuffleSeed: UInt64
    /// Simulated device slowness: slept after the local epochs, before `train` returns.
    public let delay: Duration?

    /// A trainer for `dataset`, with its layout derived from the data set's dimensions.
    public init(dataset: Dataset, clientID: Int = 0, shuffleSeed: UInt64 = 0, delay: Duration? = nil) {
        self.layout = Self.layout(featureCount: dataset.featureCount, classCount: dataset.classCount)
        self.dataset = dataset
        self.clientID = clientID
        self.shuffleSeed = shuffleSeed
        self.delay = delay
    }

    /// The layout `W` [featureCount, classCount], `b` [classCount] (float32). Both counts must
    /// be positive.
    public static func layout(featureCount: Int, classCount: Int) -> ParameterLayout {
        precondition(featureCount > 0 && classCount > 0, "dimensions must be positive")
        do {
            return try ParameterLayout([
                TensorSpec(name: "W", shape: [featureCount, classCount]),
                TensorSpec(name: "b", shape: [classCount]),
            ])
        } catch {
            preconditionFailure("a two-tensor layout with positive shapes is valid: \(error)")
        }
    }

    /// The layout of the digits model: `W` [64, 10], `b` [10].
    public static let digitsLayout = layout(featureCount: Digits.featureCount, classCount: Digits.classCount)

    /// The initial model of the workload: all zeros.
    public var initialParameters: [Float] { [Float](repeating: 0, count: layout.parameterCount) }

    /// One local training run from `model` (see the type's documentation), then sleeps for
    /// `delay` if any. `round` is this client's 1-based run count and seeds the shuffle.
    /// - Returns: the trained parameters, `sampleCount` = the local row count, and `loss` = the
    ///   mean cross-entropy over all samples of all epochs, each measured on the forward pass
    ///   before its batch's update (nil when nothing was trained).
    /// - Throws: `SoftmaxTrainingError` for a wrong layout or invalid configuration;
    ///   `CancellationError` if the task is cancelled before training or during the delay.
    public func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        try Task.checkCancellation()
        guard model.layout == layout else {
            throw SoftmaxTrainingError.layoutMismatch(expected: layout, got: model.layout)
        }
        let result = try fit(parameters: model.parameters, config: config, round: round)
        if let delay, delay > .zero {
            try await Task.sleep(for: delay)
        }
        return result
    }

    /// The synchronous core of `train`: the local epochs from `parameters`, without the delay.
    /// - Throws: `SoftmaxTrainingError.parameterCountMismatch` if `parameters` does not fit the
    ///   layout; `.invalidConfig` if `batchSize < 1`, `localEpochs < 0`, or the learning rate or
    ///   `proximalMu` is not finite (or `proximalMu < 0`).
    public func fit(parameters: [Float], config: TrainingConfig, round: Int) throws(SoftmaxTrainingError) -> TrainingResult {
        guard parameters.count == layout.parameterCount else {
            throw .parameterCountMismatch(expected: layout.parameterCount, got: parameters.count)
        }
        guard config.batchSize >= 1 else { throw .invalidConfig("batch size must be at least 1, got \(config.batchSize)") }
        guard config.localEpochs >= 0 else { throw .invalidConfig("local epochs must not be negative, got \(config.localEpochs)") }
        guard config.learningRate.isFinite else { throw .invalidConfig("learning rate must be finite") }
        guard config.proximalMu.isFinite && config.proximalMu >= 0 else {
            throw .invalidConfig("proximal mu must be finite and non-negative")
        }
        let n = dataset.count
        guard n > 0 && config.localEpochs > 0 else {
            return TrainingResult(parameters: parameters, sampleCount: n, loss: nil)
        }

        var w = parameters
        var grad = [Float](repeating: 0, count: layout.parameterCount)
        var z = [Float](repeating: 0, count: dataset.classCount)
        var perm = [Int](repeating: 0, count: n)
        var lossSum = 0.0
        for epoch in 0..<config.localEpochs {
            var rng = SplitMix64(deriving: shuffleSeed, Self.bits(clientID), Self.bits(round), Self.bits(epoch))
            for i in 0..<n { perm[i] = i }
            rng.shuffle(&perm)
            lossSum += SoftmaxKernel.sgdEpoch(
                parameters: &w, global: parameters, dataset: dataset, order: perm,
                batchSize: config.batchSize, learningRate: Float(config.learningRate),
                proximalMu: Float(config.proximalMu), gradient: &grad, scratchLogits: &z)
        }
        let loss = lossSum / Double(n * config.localEpochs)
        return TrainingResult(parameters: w, sampleCount: n, loss: loss)
    }

    private static func bits(_ v: Int) -> UInt64 { UInt64(bitPattern: Int64(v)) }
}
