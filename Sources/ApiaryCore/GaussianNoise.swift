#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The noise of differential privacy (central on the aggregator, local on a client): standard normal samples from a ChaCha20 key
/// stream (RFC 8439's block function, 20 rounds) whose 256-bit key comes from
/// `SystemRandomNumberGenerator` (the kernel's CSPRNG, `getrandom` on Linux): an observer of
/// the noised model cannot predict or replay the noise. Only tests pass a fixed seed.
/// Not thread-safe: owned by the thread that owns the buffer (or the update).
package struct GaussianNoise: RandomNumberGenerator {
    private var key: [UInt32]
    private var counter: UInt64 = 0
    private var block = [UInt32](repeating: 0, count: 16)
    private var used = 16
    /// The second value of the last Box-Muller pair, when not yet handed out.
    private var spare: Double?

    /// A generator keyed from the system's CSPRNG.
    package init() {
        var system = SystemRandomNumberGenerator()
        key = (0..<8).map { _ in UInt32(truncatingIfNeeded: system.next()) }
    }

    /// A reproducible generator, for tests only.
    package init(seed: UInt64) {
        key = [UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32), 0x6170_6961, 0x7279_2d64, 0x702d_7465, 0x7374, 0, 0]
    }

    /// The key stream of a given 256-bit key (eight little-endian words), for the cipher's test vectors.
    package init(key: [UInt32]) {
        precondition(key.count == 8)
        self.key = key
    }

    package mutating func next() -> UInt64 {
        let lo = nextWord(), hi = nextWord()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    /// One standard normal sample (Box-Muller, in double precision).
    package mutating func standardNormal() -> Double {
        if let s = spare {
            spare = nil
            return s
        }
        // u1 in (0, 1]: log(u1) is finite.
        let u1 = (Double(next() >> 11) + 1) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        let r = (-2 * log(u1)).squareRoot()
        let theta = 2 * Double.pi * u2
        spare = r * sin(theta)
        return r * cos(theta)
    }

    /// Adds `N(0, std^2)` to every value.
    package mutating func add(standardDeviation std: Double, to values: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<values.count { values[i] += Float(std * standardNormal()) }
    }

    private mutating func nextWord() -> UInt32 {
        if used == 16 { refill() }
        defer { used += 1 }
        return block[used]
    }

    private mutating func refill() {
        // "expand 32-byte k", the key, a 64-bit block counter and a zero nonce.
        var s: [UInt32] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574] + key
            + [UInt32(truncatingIfNeeded: counter), UInt32(truncatingIfNeeded: counter >> 32), 0, 0]
        let input = s
        @inline(__always) func quarter(_ a: Int, _ b: Int, _ c: Int, _ d: Int) {
            s[a] &+= s[b]; s[d] ^= s[a]; s[d] = s[d] << 16 | s[d] >> 16
            s[c] &+= s[d]; s[b] ^= s[c]; s[b] = s[b] << 12 | s[b] >> 20
            s[a] &+= s[b]; s[d] ^= s[a]; s[d] = s[d] << 8 | s[d] >> 24
            s[c] &+= s[d]; s[b] ^= s[c]; s[b] = s[b] << 7 | s[b] >> 25
        }
        for _ in 0..<10 {
            quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15)
            quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14)
        }
        for i in 0..<16 { block[i] = s[i] &+ input[i] }
        counter &+= 1
        used = 0
    }
}
