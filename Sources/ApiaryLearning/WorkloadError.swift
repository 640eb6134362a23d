/// Why the shared workload could not be loaded.
public enum WorkloadError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The bundled resource with this file name is missing from the module bundle.
    case resourceNotFound(String)
    /// The resource exists but could not be read.
    case unreadableResource(String, reason: String)
    /// The partition file does not decode or is inconsistent (bad keys, counts or indices).
    case malformedPartition(String)
    /// The data set behind the workload could not be loaded.
    case dataset(DatasetError)

    /// A one-line, human-readable explanation.
    public var description: String {
        switch self {
        case .resourceNotFound(let name): "resource '\(name)' not found in the ApiaryLearning bundle"
        case .unreadableResource(let name, let reason): "resource '\(name)' could not be read: \(reason)"
        case .malformedPartition(let reason): "malformed partition: \(reason)"
        case .dataset(let error): error.description
        }
    }
}
