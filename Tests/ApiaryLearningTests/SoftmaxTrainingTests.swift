import ApiaryCore
import Foundation
import Testing
import ApiaryLearning

@Suite struct SoftmaxTrainingTests {
    @Test func layoutIsWThenB() {
        let layout = SoftmaxRegression.digitsLayout
        #expect(layout.tensors.map(\.name) == ["W", "b"])
        #expect(layout.tensors.map(\.shape) == [[64, 10], [10]])
        #expect(layout.offsets == [0, 640])
        #expect(layout.parameterCount == 650)
    }

    @Test func centralisedTrainingReachesNinetyPercent() async throws {
        let w = try Fixtures.workload()
        let trainer = SoftmaxRegression(dataset: w.fullTrainSet, clientID: 0)
        #expect(trainer.layout == SoftmaxRegression.digitsLayout)
        var model = ModelSnapshot(layout: trainer.layout, parameters: trainer.initialParameters, version: 0, runID: 1)
        let config = TrainingConfig(learningRate: 0.1, localEpochs: 1, batchSize: 16)
        var losses: [Double] = []
        for round in 1...20 {
            let r = try await trainer.train(model: model, config: config, round: round)
            #expect(r.sampleCount == 1437)
            losses.append(r.loss!)
            model.parameters = r.parameters
            model.version += 1
        }
        #expect(losses[0] < log(10.0))  // the first epoch starts at log(10) and falls
        #expect(losses.last! < losses.first!)
        let accuracy = Evaluation.accuracy(parameters: model.parameters, on: w.testSet)
        #expect(accuracy >= 0.90, "test accuracy \(accuracy)")
    }

    @Test func trainingIsDeterministicPerSeedClientRound() async throws {
        let w = try Fixtures.workload()
        let data = w.trainSet(client: 3)
        let model = Fixtures.snapshot([Float](repeating: 0, count: 650), for: data)
        let config = TrainingConfig()
        let t = SoftmaxRegression(dataset: data, clientID: 3, shuffleSeed: 0, delay: .zero)
        let a = try await t.train(model: model, config: config, round: 2)
        let b = try await t.train(model: model, config: config, round: 2)
        let b2 = try await SoftmaxRegression(dataset: data, clientID: 3, shuffleSeed: 0).train(model: model, config: config, round: 2)
        #expect(a.parameters == b.parameters)
        #expect(a.parameters == b2.parameters)
        #expect(a.loss == b.loss)
        let otherRound = try await t.train(model: model, config: config, round: 3)
        let otherClient = try await SoftmaxRegression(dataset: data, clientID: 4).train(model: model, config: config, round: 2)
        let otherSeed = try await SoftmaxRegression(dataset: data, clientID: 3, shuffleSeed: 1).train(model: model, config: config, round: 2)
        #expect(a.parameters != otherRound.parameters)
        #expect(a.parameters != otherClient.parameters)
        #expect(a.parameters != otherSeed.parameters)
    }

    @Test func delayIsSleptAndCancellable() async throws {
        let data = try Fixtures.workload().trainSet(client: 0)
        let model = Fixtures.snapshot([Float](repeating: 0, count: 650), for: data)
        let clock = ContinuousClock()
        let t0 = clock.now
        _ = try await SoftmaxRegression(dataset: data, delay: .milliseconds(60)).train(model: model, config: TrainingConfig(), round: 1)
        #expect(clock.now - t0 >= .milliseconds(60))

        let slow = SoftmaxRegression(dataset: data, delay: .seconds(30))
        let task = Task { try await slow.train(model: model, config: TrainingConfig(), round: 1) }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        let t1 = clock.now
        await #expect(throws: CancellationError.self) { try await task.value }
        // Well short of the 30 s delay: the sleep was cancelled (the training before it may take
        // seconds on a loaded machine, so no tighter bound).
        #expect(clock.now - t1 < .seconds(20))
    }

    @Test func rejectsWrongLayoutAndConfig() async throws {
        let data = try Fixtures.workload().trainSet(client: 0)
        let t = SoftmaxRegression(dataset: data)
        let other = SoftmaxRegression.layout(featureCount: 64, classCount: 9)
        let bad = ModelSnapshot(layout: other, parameters: [Float](repeating: 0, count: other.parameterCount), version: 0, runID: 1)
        await #expect(throws: SoftmaxTrainingError.self) { try await t.train(model: bad, config: TrainingConfig(), round: 1) }
        #expect(throws: SoftmaxTrainingError.parameterCountMismatch(expected: 650, got: 3)) {
            try t.fit(parameters: [0, 0, 0], config: TrainingConfig(), round: 1)
        }
        #expect(throws: SoftmaxTrainingError.self) {
            try t.fit(parameters: t.initialParameters, config: TrainingConfig(batchSize: 0), round: 1)
        }
        let none = try t.fit(parameters: t.initialParameters, config: TrainingConfig(localEpochs: 0), round: 1)
        #expect(none.parameters == t.initialParameters)
        #expect(none.loss == nil)
    }

    @Test func twentyConcurrentClients() async throws {
        let w = try Fixtures.workload()
        let config = TrainingConfig()
        let zeros = [Float](repeating: 0, count: 650)
        let results = try await withThrowingTaskGroup(of: (Int, TrainingResult).self) { group in
            for c in 0..<w.clientCount {
                let trainer = SoftmaxRegression(dataset: w.trainSet(client: c), clientID: c)
                let model = Fixtures.snapshot(zeros, for: trainer.dataset)
                group.addTask { (c, try await trainer.train(model: model, config: config, round: 1)) }
            }
            var out = [TrainingResult?](repeating: nil, count: w.clientCount)
            for try await (c, r) in group { out[c] = r }
            return out.compactMap { $0 }
        }
        #expect(results.count == 20)
        #expect(results.map(\.sampleCount).reduce(0, +) == 1437)
        #expect(results.allSatisfy { $0.parameters.count == 650 && $0.parameters.allSatisfy { $0.isFinite } })
    }
}
