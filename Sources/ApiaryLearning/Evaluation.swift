import ApiaryCore

/// Evaluates softmax-regression parameters (`W` [d, c] then `b` [c], as `SoftmaxRegression`
/// lays them out) on a data set: predictions are `argmax(x W + b)`, ties going to the lowest
/// class index. No allocation per row; a pass over the 360-row digits test set takes well
/// under a millisecond in release builds.
public enum Evaluation {
    /// Accuracy and mean cross-entropy of a model on a data set.
    public struct Metrics: Sendable, Hashable, Codable {
        /// Fraction of rows predicted correctly, in [0, 1] (0 for an empty data set).
        public var accuracy: Double
        /// Mean cross-entropy (0 for an empty data set).
        public var loss: Double
        /// Number of rows evaluated.
        public var count: Int

        /// Creates metrics from their parts.
        public init(accuracy: Double, loss: Double, count: Int) {
            self.accuracy = accuracy
            self.loss = loss
            self.count = count
        }
    }

    /// Accuracy and mean cross-entropy of `parameters` on `dataset` in one pass.
    /// `parameters.count` must be `featureCount * classCount + classCount` (traps otherwise).
    public static func evaluate(parameters: [Float], on dataset: Dataset) -> Metrics {
        let d = dataset.featureCount
        let c = dataset.classCount
        precondition(parameters.count == d * c + c,
                     "expected \(d * c + c) parameters for a \(d)x\(c) softmax model, got \(parameters.count)")
        let n = dataset.count
        guard n > 0 else { return Metrics(accuracy: 0, loss: 0, count: 0) }
        var correct = 0
        var lossSum = 0.0
        withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { zBuf in
            let z = zBuf.baseAddress!
            parameters.withUnsafeBufferPointer { pBuf in
            dataset.features.withUnsafeBufferPointer { xBuf in
            dataset.labels.withUnsafeBufferPointer { yBuf in
                let W = pBuf.baseAddress!, b = W + d * c
                let X = xBuf.baseAddress!
                for r in 0..<n {
                    SoftmaxKernel.logits(x: X + r * d, weights: W, bias: b, featureCount: d, classCount: c, into: z)
                    let y = yBuf[r]
                    if SoftmaxKernel.argmax(z, classCount: c) == y { correct += 1 }
                    lossSum += Double(SoftmaxKernel.crossEntropy(z, classCount: c, label: y))
                }
            }}}
        }
        return Metrics(accuracy: Double(correct) / Double(n), loss: lossSum / Double(n), count: n)
    }

    /// `evaluate(parameters:on:)` for a model snapshot.
    public static func evaluate(_ model: ModelSnapshot, on dataset: Dataset) -> Metrics {
        evaluate(parameters: model.parameters, on: dataset)
    }

    /// Fraction of rows of `dataset` that `parameters` classify correctly (0 when empty).
    /// Traps when the parameter count does not fit the data set's dimensions.
    public static func accuracy(parameters: [Float], on dataset: Dataset) -> Double {
        evaluate(parameters: parameters, on: dataset).accuracy
    }

    /// Mean cross-entropy of `parameters` on `dataset` (0 when empty).
    /// Traps when the parameter count does not fit the data set's dimensions.
    public static func loss(parameters: [Float], on dataset: Dataset) -> Double {
        evaluate(parameters: parameters, on: dataset).loss
    }
}
