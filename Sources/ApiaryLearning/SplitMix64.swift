/// A small, fast, seeded pseudo-random generator (SplitMix64, Steele, Lea & Flood 2014).
///
/// Every sampling helper of this module (`nextDouble`, `nextInt(below:)`, `shuffle`,
/// `nextGamma`, ...) is implemented here rather than through the standard library's generic
/// `random(in:using:)`, whose algorithms are not guaranteed stable across Swift versions, so
/// that the same seed gives the same stream on every run and platform.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    /// The internal state; the next output is a function of it alone.
    public private(set) var state: UInt64

    /// A generator whose stream is determined by `seed`.
    public init(seed: UInt64) {
        state = seed
    }

    /// A generator seeded from several values (e.g. a base seed, a client id, a round and an
    /// epoch): each part is folded into the seed through the SplitMix64 finaliser, so nearby
    /// tuples give unrelated streams and the order of the parts matters.
    public init(deriving parts: [UInt64]) {
        var h: UInt64 = 0x243F_6A88_85A3_08D3
        for p in parts {
            h = Self.mix(h ^ p)
            h = h &+ 0x9E37_79B9_7F4A_7C15
        }
        state = h
    }

    /// Variadic form of `init(deriving:)`.
    public init(deriving parts: UInt64...) {
        self.init(deriving: parts)
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state = state &+ 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// The SplitMix64 output finaliser, a bijective 64-bit mixing function.
    @inlinable
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension SplitMix64 {
    /// A uniform double in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// A uniform double in the open interval (0, 1) (never 0, so its logarithm is finite).
    public mutating func nextOpenDouble() -> Double {
        (Double(next() >> 11) + 0.5) * 0x1p-53
    }

    /// A uniform integer in `0..<bound` without modulo bias (Lemire's multiply-and-reject
    /// method). `bound` must be positive.
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    /// Shuffles `array` in place (Fisher–Yates, from the back).
    public mutating func shuffle<T>(_ array: inout [T]) {
        var i = array.count - 1
        while i > 0 {
            let j = nextInt(below: i + 1)
            array.swapAt(i, j)
            i -= 1
        }
    }

    /// A uniformly random permutation of `0..<n`.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<max(n, 0))
        shuffle(&p)
        return p
    }
}
