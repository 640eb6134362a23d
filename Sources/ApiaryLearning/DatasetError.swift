/// Why a data set could not be built, loaded or parsed.
public enum DatasetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The bundled resource with this file name is missing from the module bundle.
    case resourceNotFound(String)
    /// The resource exists but could not be read.
    case unreadableResource(String, reason: String)
    /// The resource was read but its content is invalid at the given 1-based line.
    case malformed(resource: String, line: Int, reason: String)
    /// Features, labels and dimensions do not agree.
    case shapeMismatch(String)
    /// A label lies outside `0..<classCount`.
    case labelOutOfRange(label: Int, classCount: Int)

    /// A one-line, human-readable explanation.
    public var description: String {
        switch self {
        case .resourceNotFound(let name): "resource '\(name)' not found in the ApiaryLearning bundle"
        case .unreadableResource(let name, let reason): "resource '\(name)' could not be read: \(reason)"
        case .malformed(let name, let line, let reason): "\(name):\(line): \(reason)"
        case .shapeMismatch(let reason): "data set shape mismatch: \(reason)"
        case .labelOutOfRange(let label, let classCount): "label \(label) is outside 0..<\(classCount)"
        }
    }
}
