import Foundation
import ApiaryCore
import ApiaryLearning

/// Shared, lazily loaded test data (loaded once per test process).
enum Fixtures {
    private static let workloadResult = Result<Workload, WorkloadError> { () throws(WorkloadError) in
        try SharedWorkload.load()
    }

    /// The bundled shared workload.
    static func workload() throws -> Workload { try workloadResult.get() }

    /// A snapshot of `parameters` in the softmax layout of `dataset`.
    static func snapshot(_ parameters: [Float], for dataset: Dataset, version: UInt64 = 0) -> ModelSnapshot {
        ModelSnapshot(
            layout: SoftmaxRegression.layout(featureCount: dataset.featureCount, classCount: dataset.classCount),
            parameters: parameters, version: version, runID: 1)
    }

    /// Mean Shannon entropy (nats) of the label distribution of each part.
    static func meanLabelEntropy(_ parts: [[Int]], labels: [Int], classCount: Int) -> Double {
        var total = 0.0
        for part in parts {
            var counts = [Double](repeating: 0, count: classCount)
            for i in part { counts[labels[i]] += 1 }
            let n = Double(part.count)
            var h = 0.0
            for c in counts where c > 0 { h -= (c / n) * log(c / n) }
            total += h
        }
        return total / Double(parts.count)
    }
}
