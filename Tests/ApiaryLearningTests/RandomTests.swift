import Testing
import ApiaryLearning

@Suite struct RandomTests {
    @Test func splitMix64KnownAnswer() {
        var rng = SplitMix64(seed: 0)
        #expect(rng.next() == 0xE220_A839_7B1D_CDAF)
        #expect(rng.next() == 0x6E78_9E6A_A1B9_65F4)
    }

    @Test func derivedSeedsAreDistinctAndStable() {
        var a = SplitMix64(deriving: 0, 1, 2, 0)
        var b = SplitMix64(deriving: 0, 1, 2, 0)
        var c = SplitMix64(deriving: 0, 2, 1, 0)
        let x = a.next()
        #expect(x == b.next())
        #expect(x != c.next())
    }

    @Test func boundedIntegersAndPermutations() {
        var rng = SplitMix64(seed: 42)
        var counts = [Int](repeating: 0, count: 7)
        for _ in 0..<7000 { counts[rng.nextInt(below: 7)] += 1 }
        #expect(counts.allSatisfy { $0 > 850 && $0 < 1150 })
        let p = rng.permutation(100)
        #expect(p.sorted() == Array(0..<100))
        #expect(p != Array(0..<100))
    }

    @Test(arguments: [0.3, 0.5, 1.0, 3.0])
    func gammaMeanMatchesShape(shape: Double) {
        var rng = SplitMix64(seed: 7)
        let n = 20_000
        var sum = 0.0
        for _ in 0..<n {
            let g = rng.nextGamma(shape: shape)
            #expect(g >= 0)
            sum += g
        }
        // Standard error of the mean is sqrt(shape / n): well inside 5 % for these shapes.
        #expect(abs(sum / Double(n) - shape) < 0.05 * shape)
    }

    @Test func dirichletSumsToOne() {
        var rng = SplitMix64(seed: 3)
        for alpha in [0.01, 0.5, 100] {
            let p = rng.nextDirichlet(concentration: alpha, count: 20)
            #expect(abs(p.reduce(0, +) - 1) < 1e-9)
            #expect(p.allSatisfy { $0 >= 0 })
        }
    }
}
