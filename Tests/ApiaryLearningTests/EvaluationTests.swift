import Foundation
import ApiaryCore
import Testing
import ApiaryLearning

@Suite struct EvaluationTests {
    @Test func zeroModelPredictsClassZero() throws {
        let test = try Fixtures.workload().testSet
        let m = Evaluation.evaluate(parameters: [Float](repeating: 0, count: 650), on: test)
        let zeros = test.labels.filter { $0 == 0 }.count
        #expect(m.count == 360)
        #expect(m.accuracy == Double(zeros) / 360)  // all ties -> class 0
        #expect(abs(m.loss - log(10.0)) < 1e-5)
    }

    @Test func argmaxAndTies() throws {
        // 2 features, 3 classes; W picks class = feature index, b favours class 2 slightly.
        let data = try Dataset(features: [1, 0, 0, 1, 0, 0], labels: [0, 1, 2], featureCount: 2, classCount: 3)
        let W: [Float] = [5, 0, 0, 0, 5, 0]
        #expect(Evaluation.accuracy(parameters: W + [0, 0, 0.1], on: data) == 1)
        // Ties between classes 1 and 2 for the third row go to class 1.
        #expect(abs(Evaluation.accuracy(parameters: W + [0, 0, 0], on: data) - 2.0 / 3) < 1e-12)
        let snapshot = Fixtures.snapshot(W + [0, 0, 0.1], for: data)
        #expect(Evaluation.evaluate(snapshot, on: data) == Evaluation.evaluate(parameters: W + [0, 0, 0.1], on: data))
        #expect(Evaluation.loss(parameters: W + [0, 0, 0.1], on: data) > 0)
    }

    @Test func emptyDataSet() throws {
        let empty = try Dataset(features: [], labels: [], featureCount: 2, classCount: 3)
        #expect(Evaluation.evaluate(parameters: [Float](repeating: 0, count: 9), on: empty) == .init(accuracy: 0, loss: 0, count: 0))
    }

    @Test func evaluationIsDeterministic() throws {
        // (Its speed is the evaluator's concern off the merge path, not a unit test's: no
        // wall-clock bound here.)
        let test = try Fixtures.workload().testSet
        var rng = SplitMix64(seed: 1)
        let params = (0..<650).map { _ in Float(rng.nextDouble() - 0.5) }
        let first = Evaluation.evaluate(parameters: params, on: test)
        for _ in 0..<5 { #expect(Evaluation.evaluate(parameters: params, on: test) == first) }
        #expect(first.count == test.count && (0...1).contains(first.accuracy))
    }
}
