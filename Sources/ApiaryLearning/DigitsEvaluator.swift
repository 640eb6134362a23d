import ApiaryCore

/// The built-in evaluator of the digits softmax model: accuracy and mean cross-entropy on a
/// held-out data set (the bundled test split, say). `apiary evaluate` runs it as an
/// evaluator process (`ClientRuntime(config:evaluator:)`).
public struct DigitsEvaluator: Evaluator {
    public let layout: ParameterLayout
    public let dataset: String
    public let data: Dataset

    /// Evaluates on `data`, shown as `name` with the results.
    public init(data: Dataset, name: String) {
        self.data = data
        self.dataset = name
        self.layout = SoftmaxRegression.layout(featureCount: data.featureCount, classCount: data.classCount)
    }

    public func evaluate(model: ModelSnapshot, config: TrainingConfig) async throws -> EvaluatorResult {
        let m = Evaluation.evaluate(model, on: data)
        return EvaluatorResult(metrics: ["accuracy": m.accuracy, "loss": m.loss], exampleCount: data.count)
    }
}
