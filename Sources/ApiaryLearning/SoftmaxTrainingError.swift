import ApiaryCore

/// Why `SoftmaxRegression` refused to train.
public enum SoftmaxTrainingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The model's layout is not the trainer's (`W` [d, c], `b` [c] for its data set).
    case layoutMismatch(expected: ParameterLayout, got: ParameterLayout)
    /// The parameter vector does not have `expected` elements.
    case parameterCountMismatch(expected: Int, got: Int)
    /// A training hyper-parameter is out of range.
    case invalidConfig(String)

    /// A one-line, human-readable explanation.
    public var description: String {
        switch self {
        case .layoutMismatch(let e, let g): "model layout \(g) does not match the trainer's layout \(e)"
        case .parameterCountMismatch(let e, let g): "expected \(e) parameters, got \(g)"
        case .invalidConfig(let reason): "invalid training configuration: \(reason)"
        }
    }
}
