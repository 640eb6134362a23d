/// The one shape of Apiary's errors, after swift-service-lifecycle's `ServiceRunnerError`: a
/// `code` to branch on (a struct, not an enum, so that codes can be added without breaking a
/// caller's `switch`), the reason in words that name the config key, path or endpoint, the
/// underlying error kept as a value (a `ZMQError`, a file system error) rather than as text,
/// and the file and line where it was made.
///
/// Each library has its own domain: `AggregatorError`, `ClientError`, `GatewayError` and
/// `LedgerError` are `ApiaryError`s of theirs, with their codes as static members of `Code`:
///
///     catch let e as AggregatorError where e.code == .addressInUse { ... }
public struct ApiaryError<Domain: ApiaryErrorDomain>: Error, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        /// A code of this domain; each domain declares its own as static members.
        public init(_ name: String) { self.name = name }

        public var description: String { name }
    }

    public let code: Code
    /// What went wrong, in words.
    public let reason: String
    /// The error that caused it, when there is one.
    public let underlying: (any Error)?
    public let file: String
    public let line: Int

    public init(_ code: Code, _ reason: String, underlying: (any Error)? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    public var description: String { Domain.describe(code: code.description, reason: reason) }
}

/// A family of errors (one per library): how its errors read.
public protocol ApiaryErrorDomain: Sendable {
    /// The text of an error of this domain with `code` and `reason` (by default the reason).
    static func describe(code: String, reason: String) -> String
}

extension ApiaryErrorDomain {
    public static func describe(code: String, reason: String) -> String { reason }
}
