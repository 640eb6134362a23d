/// An immutable labelled data set for classification: `count` rows of `featureCount` float32
/// features stored row-major in one flat array, and one integer label per row in
/// `0..<classCount`.
public struct Dataset: Sendable, Hashable {
    /// Row-major features, `count * featureCount` values.
    public let features: [Float]
    /// One label per row, each in `0..<classCount`.
    public let labels: [Int]
    /// Number of features per row.
    public let featureCount: Int
    /// Number of classes; labels lie in `0..<classCount`.
    public let classCount: Int

    /// Creates a data set after checking its shape.
    /// - Throws: `DatasetError.shapeMismatch` when `featureCount` or `classCount` is not positive
    ///   or `features.count != labels.count * featureCount`; `DatasetError.labelOutOfRange` when
    ///   a label is outside `0..<classCount`.
    public init(features: [Float], labels: [Int], featureCount: Int, classCount: Int) throws(DatasetError) {
        guard featureCount > 0 else { throw .shapeMismatch("featureCount must be positive, got \(featureCount)") }
        guard classCount > 0 else { throw .shapeMismatch("classCount must be positive, got \(classCount)") }
        guard features.count == labels.count * featureCount else {
            throw .shapeMismatch("\(features.count) features for \(labels.count) rows of \(featureCount)")
        }
        if let bad = labels.first(where: { $0 < 0 || $0 >= classCount }) {
            throw .labelOutOfRange(label: bad, classCount: classCount)
        }
        self.init(unchecked: features, labels: labels, featureCount: featureCount, classCount: classCount)
    }

    /// Creates a data set whose shape the caller has already checked.
    init(unchecked features: [Float], labels: [Int], featureCount: Int, classCount: Int) {
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
    }

    /// Number of rows.
    public var count: Int { labels.count }

    /// Whether the data set has no rows.
    public var isEmpty: Bool { labels.isEmpty }

    /// The rows at `indices`, in that order (repeats allowed). Each index must be in
    /// `0..<count`; an out-of-range index is a programming error and traps.
    public func subset(indices: [Int]) -> Dataset {
        let d = featureCount
        var x = [Float]()
        x.reserveCapacity(indices.count * d)
        var y = [Int]()
        y.reserveCapacity(indices.count)
        features.withUnsafeBufferPointer { src in
            for r in indices {
                precondition(r >= 0 && r < count, "row index \(r) is outside 0..<\(count)")
                x.append(contentsOf: UnsafeBufferPointer(rebasing: src[(r * d)..<(r * d + d)]))
                y.append(labels[r])
            }
        }
        return Dataset(unchecked: x, labels: y, featureCount: d, classCount: classCount)
    }

    /// How many rows carry each label: element `k` counts label `k`.
    public var labelCounts: [Int] {
        var counts = [Int](repeating: 0, count: classCount)
        for y in labels { counts[y] += 1 }
        return counts
    }
}
