import ApiaryCore
import ApiaryLearning
import Foundation

/// A two-layer perceptron for the digits data: 64 inputs, a ReLU hidden layer, 10 softmax
/// outputs. Its tensors are named like PyTorch's `nn.Linear` layers (`fc1.weight` is
/// [hidden, 64]) and laid out in the flat vector in name order, the order
/// `apiary aggregator --model` gives a safetensors file of the same model.
struct MLP: Sendable {
    static let inputs = 64
    static let classes = 10
    let hidden: Int

    var layout: ParameterLayout {
        try! ParameterLayout([
            TensorSpec(name: "fc1.bias", shape: [hidden]),
            TensorSpec(name: "fc1.weight", shape: [hidden, Self.inputs]),
            TensorSpec(name: "fc2.bias", shape: [Self.classes]),
            TensorSpec(name: "fc2.weight", shape: [Self.classes, hidden]),
        ])
    }

    /// Offsets of the four tensors in the flat vector (name order).
    var offsets: (b1: Int, w1: Int, b2: Int, w2: Int) {
        let b1 = 0, w1 = hidden, b2 = w1 + hidden * Self.inputs, w2 = b2 + Self.classes
        return (b1, w1, b2, w2)
    }

    /// He-initialised weights and zero biases, from a seed (every run starts the same).
    func initialParameters(seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        var p = [Float](repeating: 0, count: layout.parameterCount)
        let o = offsets
        let s1 = Float((2.0 / Double(Self.inputs)).squareRoot()), s2 = Float((2.0 / Double(hidden)).squareRoot())
        for i in 0..<(hidden * Self.inputs) { p[o.w1 + i] = s1 * gaussian(&rng) }
        for i in 0..<(Self.classes * hidden) { p[o.w2 + i] = s2 * gaussian(&rng) }
        return p
    }

    private func gaussian(_ rng: inout SplitMix64) -> Float {
        // Box-Muller on two uniforms in (0, 1].
        let u1 = Double(rng.next() >> 11 + 1) / Double(1 << 53), u2 = Double(rng.next() >> 11) / Double(1 << 53)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// Forward pass of one example: hidden activations (after ReLU) into `h`, class
    /// probabilities into `out`.
    func forward(_ p: UnsafeBufferPointer<Float>, x: UnsafeBufferPointer<Float>, h: UnsafeMutableBufferPointer<Float>,
                 out: UnsafeMutableBufferPointer<Float>) {
        let o = offsets
        for j in 0..<hidden {
            var z = p[o.b1 + j]
            let row = o.w1 + j * Self.inputs
            for i in 0..<Self.inputs { z += p[row + i] * x[i] }
            h[j] = max(0, z)
        }
        var top = -Float.infinity
        for k in 0..<Self.classes {
            var z = p[o.b2 + k]
            let row = o.w2 + k * hidden
            for j in 0..<hidden { z += p[row + j] * h[j] }
            out[k] = z
            top = max(top, z)
        }
        var sum: Float = 0
        for k in 0..<Self.classes { out[k] = exp(out[k] - top); sum += out[k] }
        for k in 0..<Self.classes { out[k] /= sum }
    }

    /// Mini-batch SGD with hand-written backpropagation (cross-entropy loss, optional L2
    /// weight decay): `epochs` passes over `data` in a seeded order. Returns the new
    /// parameters and the mean loss of the last epoch.
    func sgd(from start: [Float], on data: Dataset, epochs: Int, batchSize: Int, learningRate: Float, weightDecay: Float,
             seed: UInt64) -> (parameters: [Float], loss: Double) {
        var p = start
        var grad = [Float](repeating: 0, count: p.count)
        var h = [Float](repeating: 0, count: hidden), out = [Float](repeating: 0, count: Self.classes)
        var dh = [Float](repeating: 0, count: hidden)
        var order = Array(0..<data.count)
        var rng = SplitMix64(seed: seed)
        let o = offsets
        var lastLoss = 0.0
        for _ in 0..<epochs {
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            var epochLoss = 0.0
            for batchStart in stride(from: 0, to: order.count, by: batchSize) {
                let batch = order[batchStart..<min(batchStart + batchSize, order.count)]
                for i in grad.indices { grad[i] = 0 }
                p.withUnsafeBufferPointer { pp in
                    data.features.withUnsafeBufferPointer { features in
                        grad.withUnsafeMutableBufferPointer { g in
                            h.withUnsafeMutableBufferPointer { h in
                                out.withUnsafeMutableBufferPointer { out in
                                    dh.withUnsafeMutableBufferPointer { dh in
                                        for n in batch {
                                            let x = UnsafeBufferPointer(rebasing: features[(n * Self.inputs)..<((n + 1) * Self.inputs)])
                                            forward(pp, x: x, h: h, out: out)
                                            let label = data.labels[n]
                                            epochLoss -= Double(log(max(out[label], 1e-12)))
                                            // Output layer: dz = softmax - onehot.
                                            for j in 0..<hidden { dh[j] = 0 }
                                            for k in 0..<Self.classes {
                                                let dz = out[k] - (k == label ? 1 : 0)
                                                g[o.b2 + k] += dz
                                                let row = o.w2 + k * hidden
                                                for j in 0..<hidden {
                                                    g[row + j] += dz * h[j]
                                                    dh[j] += dz * pp[row + j]
                                                }
                                            }
                                            // Hidden layer through the ReLU.
                                            for j in 0..<hidden where h[j] > 0 {
                                                g[o.b1 + j] += dh[j]
                                                let row = o.w1 + j * Self.inputs
                                                for i in 0..<Self.inputs { g[row + i] += dh[j] * x[i] }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                let scale = learningRate / Float(batch.count)
                for i in p.indices { p[i] -= scale * grad[i] + learningRate * weightDecay * p[i] }
            }
            lastLoss = epochLoss / Double(max(1, data.count))
        }
        return (p, lastLoss)
    }

    /// Accuracy and mean cross-entropy of `parameters` on `data`.
    func evaluate(_ parameters: [Float], on data: Dataset) -> (accuracy: Double, loss: Double) {
        var h = [Float](repeating: 0, count: hidden), out = [Float](repeating: 0, count: Self.classes)
        var correct = 0, loss = 0.0
        parameters.withUnsafeBufferPointer { pp in
            data.features.withUnsafeBufferPointer { features in
                h.withUnsafeMutableBufferPointer { h in
                    out.withUnsafeMutableBufferPointer { out in
                        for n in 0..<data.count {
                            let x = UnsafeBufferPointer(rebasing: features[(n * Self.inputs)..<((n + 1) * Self.inputs)])
                            forward(pp, x: x, h: h, out: out)
                            let best = (0..<Self.classes).max { out[$0] < out[$1] }!
                            if best == data.labels[n] { correct += 1 }
                            loss -= Double(log(max(out[data.labels[n]], 1e-12)))
                        }
                    }
                }
            }
        }
        return (Double(correct) / Double(max(1, data.count)), loss / Double(max(1, data.count)))
    }
}

/// The MLP as an Apiary `Trainer`: each run trains the newest global model on this client's
/// private partition and reports its loss and accuracy on that data with the update.
/// `training.extra` may set `weight_decay` (a number).
struct MLPTrainer: Trainer {
    let model: MLP
    let data: Dataset
    let seed: UInt64

    var layout: ParameterLayout { model.layout }

    func train(model snapshot: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        guard snapshot.layout == layout else { throw MLPError("the aggregator serves \(snapshot.layout.summary()), this trainer an MLP of \(layout.summary())") }
        let decay = Float(config.extra["weight_decay"]?.number ?? 0)
        let (parameters, loss) = model.sgd(from: snapshot.parameters, on: data, epochs: max(1, config.localEpochs), batchSize: max(1, config.batchSize),
                                           learningRate: Float(config.learningRate), weightDecay: decay, seed: seed &+ UInt64(round))
        let local = model.evaluate(parameters, on: data)
        return TrainingResult(parameters: parameters, sampleCount: data.count, loss: loss, metrics: ["accuracy": local.accuracy])
    }
}

struct MLPError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
