import ApiaryCore

/// The built-in model of the demo and of `apiary aggregator`/`apiary client` when no model
/// file is given: softmax regression on the bundled digits data (`W` [64, 10], `b` [10], 650
/// parameters, starting at zero), trained on the shared workload's partition.
public enum DigitsModel {
    /// The shared workload: the digits data, its partition into 20 clients, the test split.
    public static func workload() throws -> Workload {
        try SharedWorkload.load()
    }

    public static var layout: ParameterLayout { SoftmaxRegression.digitsLayout }

    public static var initialParameters: [Float] {
        [Float](repeating: 0, count: layout.parameterCount)
    }
}
