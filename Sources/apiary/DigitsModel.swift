import ApiaryCore
import ApiaryLearning

/// The built-in model of the demo and of `apiary aggregator`/`apiary client`: softmax
/// regression on the bundled digits data, trained on the shared workload's partition.
enum DigitsModel {
    static func workload() throws -> Workload {
        try SharedWorkload.load()
    }

    static var layout: ParameterLayout {
        SoftmaxRegression.layout(featureCount: 64, classCount: 10)
    }

    static var initialParameters: [Float] {
        [Float](repeating: 0, count: layout.parameterCount)
    }
}
