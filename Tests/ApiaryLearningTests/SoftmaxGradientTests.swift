import Foundation
import ApiaryCore
import Testing
import ApiaryLearning

@Suite struct SoftmaxGradientTests {
    /// A tiny data set: 6 rows, 3 features, 4 classes.
    private func tinyDataset() throws -> Dataset {
        var rng = SplitMix64(seed: 11)
        let features = (0..<18).map { _ in Float(rng.nextDouble() * 2 - 1) }
        return try Dataset(features: features, labels: [0, 1, 2, 3, 1, 2], featureCount: 3, classCount: 4)
    }

    /// Mean cross-entropy in Double, written independently of the kernel.
    private func loss(_ w: [Double], _ data: Dataset) -> Double {
        let d = data.featureCount, c = data.classCount
        var total = 0.0
        for r in 0..<data.count {
            var z = (0..<c).map { k in w[d * c + k] }
            for j in 0..<d { for k in 0..<c { z[k] += Double(data.features[r * d + j]) * w[j * c + k] } }
            let m = z.max()!
            let lse = m + log(z.reduce(0) { $0 + exp($1 - m) })
            total += lse - z[data.labels[r]]
        }
        return total / Double(data.count)
    }

    @Test func fullBatchStepMatchesFiniteDifferences() throws {
        let data = try tinyDataset()
        var rng = SplitMix64(seed: 12)
        let w0 = (0..<16).map { _ in Float(rng.nextDouble() - 0.5) }
        let trainer = SoftmaxRegression(dataset: data)
        // One full-batch step with lr = 1: w1 = w0 - grad.
        let config = TrainingConfig(learningRate: 1, localEpochs: 1, batchSize: 64)
        let result = try trainer.fit(parameters: w0, config: config, round: 1)
        let analytic = zip(w0, result.parameters).map { Double($0) - Double($1) }

        let wd = w0.map(Double.init)
        let eps = 1e-5
        for q in 0..<wd.count {
            var plus = wd, minus = wd
            plus[q] += eps
            minus[q] -= eps
            let numeric = (loss(plus, data) - loss(minus, data)) / (2 * eps)
            #expect(abs(numeric - analytic[q]) < 1e-5, "parameter \(q): numeric \(numeric) analytic \(analytic[q])")
        }
        // The reported loss is the loss at w0 (forward pass before the only update).
        #expect(abs(result.loss! - loss(wd, data)) < 1e-5)
        #expect(result.sampleCount == 6)
    }

    @Test func proximalTermAddsMuTimesDrift() throws {
        // Two identical rows, batch 1: the first step does not depend on the order and sees no
        // proximal pull (w == w_global); the second adds lr * mu * (w1 - w0).
        let row: [Float] = [0.5, -0.25, 1]
        let two = try Dataset(features: row + row, labels: [2, 2], featureCount: 3, classCount: 4)
        let one = try Dataset(features: row, labels: [2], featureCount: 3, classCount: 4)
        var rng = SplitMix64(seed: 13)
        let w0 = (0..<16).map { _ in Float(rng.nextDouble() - 0.5) }
        let lr = 0.5, mu = 0.3
        let plain = TrainingConfig(learningRate: lr, localEpochs: 1, batchSize: 1)
        var prox = plain
        prox.proximalMu = mu
        let w1 = try SoftmaxRegression(dataset: one).fit(parameters: w0, config: plain, round: 1).parameters
        let w2 = try SoftmaxRegression(dataset: two).fit(parameters: w0, config: plain, round: 1).parameters
        let w2p = try SoftmaxRegression(dataset: two).fit(parameters: w0, config: prox, round: 1).parameters
        for q in 0..<16 {
            let expected = Double(w2[q]) - lr * mu * (Double(w1[q]) - Double(w0[q]))
            #expect(abs(Double(w2p[q]) - expected) < 1e-6)
        }
    }

    @Test func softmaxIsStableForHugeLogits() throws {
        let data = try Dataset(features: [1000], labels: [0], featureCount: 1, classCount: 2)
        // Logits (1000 * 100, 0): a naive exp overflows.
        let params: [Float] = [100, 0, 0, 0]
        let m = Evaluation.evaluate(parameters: params, on: data)
        #expect(m.accuracy == 1)
        #expect(m.loss.isFinite && m.loss >= 0)
        let r = try SoftmaxRegression(dataset: data).fit(parameters: params, config: TrainingConfig(), round: 1)
        #expect(r.parameters.allSatisfy { $0.isFinite })
        #expect(r.loss!.isFinite)
    }
}
