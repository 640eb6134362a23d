/// How much a stale update counts: `S(s)` in FedAsync (Xie, Koyejo, Gupta 2019), where the
/// staleness `s` is the number of versions merged since the client's base model.
public enum StalenessFunction: Sendable, Hashable, Codable, CustomStringConvertible {
    /// `S(s) = 1`.
    case constant
    /// `S(s) = (s + 1)^(-a)`, `a >= 0`.
    case polynomial(a: Double)
    /// `S(s) = 1` if `s <= b`, else `1 / (a * (s - b) + 1)`; `a >= 0`, `b >= 0`.
    case hinge(a: Double, b: Double)

    /// The weight `S(s)` for staleness `s`, in [0, 1] (it underflows to 0 only for
    /// astronomically stale updates).
    public func weight(staleness s: UInt64) -> Double {
        let x = Double(s)
        switch self {
        case .constant:
            return 1
        case .polynomial(let a):
            return pow(x + 1, -a)
        case .hinge(let a, let b):
            return x <= b ? 1 : 1 / (a * (x - b) + 1)
        }
    }

    /// Checks the parameters; returns a reason when they are out of range.
    public func validationError() -> String? {
        switch self {
        case .constant: return nil
        case .polynomial(let a):
            return a.isFinite && a >= 0 ? nil : "polynomial staleness needs a finite a >= 0, got \(a)"
        case .hinge(let a, let b):
            return a.isFinite && a >= 0 && b.isFinite && b >= 0 ? nil : "hinge staleness needs finite a >= 0 and b >= 0, got a=\(a) b=\(b)"
        }
    }

    public var description: String {
        switch self {
        case .constant: "constant"
        case .polynomial(let a): "polynomial(a=\(a))"
        case .hinge(let a, let b): "hinge(a=\(a), b=\(b))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
