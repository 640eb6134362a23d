import ApiaryCore
import Foundation

/// merge: FedAsync.mix throughput against a plain loop `y = (1 - a) * y + a * x` over the
/// same arrays, in the same process (the memory-bandwidth bound).
enum MergeBench {
    static let weight = 0.3

    /// The bound: the plainest loop that computes the same mix. Kept out of line so that
    /// neither side is specialised for the other's arrays.
    @inline(never)
    static func plainLoop(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int, _ a: Float) {
        let b = 1 - a
        for i in 0..<n { y[i] = b * y[i] + a * x[i] }
    }

    @inline(never)
    static func apiaryMix(_ y: UnsafeMutableBufferPointer<Float>, _ x: UnsafeRawBufferPointer, _ w: Double) {
        FedAsync.mix(into: y, update: x, weight: w)
    }

    struct Timing {
        var best = Double.infinity
        var all: [Double] = []
        mutating func add(_ s: Double) {
            best = min(best, s)
            all.append(s)
        }
        var median: Double { all.isEmpty ? .nan : all.sorted()[all.count / 2] }
    }

    static func run(sizes: [(label: String, n: Int)], seconds budget: Double, goalLabel: String) -> [BenchResult] {
        sizes.map { size in
            let n = size.n
            let model = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
            // One extra float so the update can also be read 1 byte off alignment.
            let updateStorage = UnsafeMutableRawPointer.allocate(byteCount: n * 4 + 64, alignment: 64)
            defer {
                model.deallocate()
                updateStorage.deallocate()
            }
            // Values in [-1, 1) from a cheap generator (SystemRandomNumberGenerator is a system
            // call per value).
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            func next() -> Float {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(1 << 31)
            }
            for i in 0..<n { model[i] = next() }
            let upd = updateStorage.bindMemory(to: Float.self, capacity: n + 16)
            for i in 0..<(n + 16) { upd[i] = next() }
            let aligned = UnsafeRawBufferPointer(start: updateStorage, count: n * 4)
            let a = Float(weight)

            var mix = Timing(), plain = Timing()
            // Warm up (page faults, caches), then alternate the two so that both see the
            // same machine state; stop after `budget` seconds or 50 rounds, at least 3.
            apiaryMix(model, aligned, weight)
            plainLoop(model.baseAddress!, upd, n, a)
            let start = benchNow()
            var rounds = 0
            while rounds < 3 || (seconds(since: start) < budget && rounds < 50) {
                var t = benchNow()
                apiaryMix(model, aligned, weight)
                mix.add(seconds(since: t))
                t = benchNow()
                plainLoop(model.baseAddress!, upd, n, a)
                plain.add(seconds(since: t))
                rounds += 1
            }
            // The unaligned path (a frame read in place can start anywhere).
            var unaligned = Timing()
            let off = UnsafeRawBufferPointer(start: updateStorage + 1, count: n * 4)
            for _ in 0..<max(3, min(rounds, 10)) {
                let t = benchNow()
                apiaryMix(model, off, weight)
                unaligned.add(seconds(since: t))
            }
            let figure = Double(n) / mix.best
            let bound = Double(n) / plain.best
            let ratio = figure / bound
            let isGoal = size.label == goalLabel
            return BenchResult(
                name: "merge/\(size.label)", group: "merge", figure: figure, unit: "parameters/s",
                bound: bound, boundUnit: "parameters/s (plain loop y = (1-a)*y + a*x, same arrays)",
                ratio: ratio, ratioMeaning: "figure / bound (1 = as fast as the plain loop)",
                goal: isGoal ? "ratio >= 0.9" : nil, met: isGoal ? ratio >= 0.9 : nil,
                params: ["parameters": .int(n), "rounds": .int(rounds), "weight": .double(weight),
                         "mix_median_s": .double(mix.median), "plain_median_s": .double(plain.median),
                         "unaligned_parameters_per_s": .double(Double(n) / unaligned.best),
                         "unaligned_ratio": .double(Double(n) / unaligned.best / bound),
                         "mix_gb_per_s": .double(Double(n) * 12 / mix.best / 1e9)])
        }
    }
}
