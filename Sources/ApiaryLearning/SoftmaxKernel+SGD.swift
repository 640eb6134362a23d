extension SoftmaxKernel {
    /// One epoch of minibatch SGD over `dataset` in the row order `order`, updating
    /// `parameters` in place. Each batch of consecutive entries of `order` (the last may be
    /// shorter) applies `w -= lr * mean_batch(gradient) + lr * mu * (w - global)`, the proximal
    /// part only when `proximalMu > 0`. `gradient` (parameter count) and `scratchLogits` (class count)
    /// are scratch buffers, so nothing is allocated per batch or row.
    /// - Returns: the sum of the per-row cross-entropies, each on the forward pass before its
    ///   batch's update.
    static func sgdEpoch(
        parameters: inout [Float], global: [Float], dataset: Dataset, order: [Int],
        batchSize: Int, learningRate lr: Float, proximalMu mu: Float,
        gradient: inout [Float], scratchLogits: inout [Float]
    ) -> Double {
        let d = dataset.featureCount
        let c = dataset.classCount
        let p = parameters.count
        let n = order.count
        var lossSum = 0.0
        parameters.withUnsafeMutableBufferPointer { wBuf in
        gradient.withUnsafeMutableBufferPointer { gBuf in
        scratchLogits.withUnsafeMutableBufferPointer { zBuf in
        order.withUnsafeBufferPointer { orderBuf in
        global.withUnsafeBufferPointer { globalBuf in
        dataset.features.withUnsafeBufferPointer { xBuf in
        dataset.labels.withUnsafeBufferPointer { yBuf in
            let W = wBuf.baseAddress!, b = W + d * c
            let G = gBuf.baseAddress!, gb = G + d * c
            let z = zBuf.baseAddress!
            let X = xBuf.baseAddress!
            let W0 = globalBuf.baseAddress!
            var start = 0
            while start < n {
                let end = min(start + batchSize, n)
                for q in 0..<p { G[q] = 0 }
                for t in start..<end {
                    let r = orderBuf[t]
                    let x = X + r * d
                    let y = yBuf[r]
                    logits(x: x, weights: W, bias: b, featureCount: d, classCount: c, into: z)
                    lossSum += Double(softmaxInPlace(z, classCount: c, label: y))
                    z[y] -= 1  // g = softmax - onehot
                    for j in 0..<d {
                        let xj = x[j]
                        if xj == 0 { continue }
                        let row = G + j * c
                        for k in 0..<c { row[k] += xj * z[k] }
                    }
                    for k in 0..<c { gb[k] += z[k] }
                }
                let step = lr / Float(end - start)
                if mu > 0 {
                    let prox = lr * mu
                    for q in 0..<p { W[q] -= step * G[q] + prox * (W[q] - W0[q]) }
                } else {
                    for q in 0..<p { W[q] -= step * G[q] }
                }
                start = end
            }
        }}}}}}}
        return lossSum
    }
}
