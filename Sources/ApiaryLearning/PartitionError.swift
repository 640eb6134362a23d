/// Why a partition could not be made.
public enum PartitionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The number of clients is not positive.
    case invalidClientCount(Int)
    /// The number of items is negative.
    case invalidItemCount(Int)
    /// The Dirichlet concentration is not positive and finite.
    case invalidConcentration(Double)
    /// The minimum partition size is negative.
    case invalidMinPartitionSize(Int)
    /// No draw gave every client at least `minPartitionSize` items within `attempts` attempts
    /// (0 attempts: impossible, because `clients * minPartitionSize` exceeds the item count).
    case minPartitionSizeUnreachable(minPartitionSize: Int, attempts: Int)

    /// A one-line, human-readable explanation.
    public var description: String {
        switch self {
        case .invalidClientCount(let n): "the number of clients must be positive, got \(n)"
        case .invalidItemCount(let n): "the number of items must not be negative, got \(n)"
        case .invalidConcentration(let a): "the Dirichlet concentration must be positive and finite, got \(a)"
        case .invalidMinPartitionSize(let m): "the minimum partition size must not be negative, got \(m)"
        case .minPartitionSizeUnreachable(let m, 0):
            "every client cannot get \(m) items: there are too few items"
        case .minPartitionSizeUnreachable(let m, let attempts):
            "no draw gave every client at least \(m) items in \(attempts) attempts"
        }
    }
}
