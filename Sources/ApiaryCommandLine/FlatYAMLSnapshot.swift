import Configuration
import Synchronization

/// A config file read with FlatYAML, as swift-configuration's YAMLSnapshot reads one with Yams:
/// nested keys joined with dots (`client.id`), a list of scalars as an array, every value
/// converted only when asked for, by the same rules (`FileProvider<FlatYAMLSnapshot>`). What
/// the edge build (no `YAML` trait) reads config files with.
public final class FlatYAMLSnapshot: Sendable {
    public struct ParsingOptions: FileParsingOptions {
        public static var `default`: Self { .init() }
        public init() {}
    }

    enum Value: Sendable, CustomStringConvertible {
        case scalar(FlatYAML.Scalar)
        case sequence([FlatYAML.Scalar])

        var description: String {
            switch self {
            case .scalar(let s): s.text
            case .sequence(let items): items.map(\.text).joined(separator: ",")
            }
        }
    }

    /// The errors of YAMLSnapshot, with its messages (swift-configuration's ConfigError is not public).
    enum SnapshotError: Error, CustomStringConvertible {
        case notAMapping
        case notConvertible(name: String, type: ConfigType)
        case unexpectedScalarValueInArray([String], Int)

        var description: String {
            switch self {
            case .notAMapping: "Top level YAML value is not a mapping."
            case .notConvertible(let name, let type): "Config value for key '\(name)' failed to convert to type \(type)."
            case .unexpectedScalarValueInArray(let key, let index):
                "Unexpected scalar value in array at \(key.joined(separator: ".")) at index: \(index)."
            }
        }
    }

    public let providerName: String
    let values: [String: Value]

    init(values: [String: Value], providerName: String) {
        self.values = values
        self.providerName = providerName
    }

    /// Every leaf of `root` under its dotted key (YAMLSnapshot's parseValues).
    static func flatten(_ root: FlatYAML.Node) throws -> [String: Value] {
        guard case .mapping(let entries) = root else { throw SnapshotError.notAMapping }
        var out: [String: Value] = [:]
        var pending: [([String], FlatYAML.Entry)] = entries.map { ([], $0) }
        while !pending.isEmpty {
            let (prefix, entry) = pending.removeFirst()
            let key = prefix + [entry.key]
            switch entry.value {
            case .mapping(let sub): pending.append(contentsOf: sub.map { (key, $0) })
            case .sequence(let items): out[key.joined(separator: ".")] = .sequence(items)
            case .scalar(let s): out[key.joined(separator: ".")] = .scalar(s)
            }
        }
        return out
    }

    /// The value of `key` as `type`, converted as YAMLSnapshot converts a Yams scalar.
    func convert(_ value: Value, key: AbsoluteConfigKey, type: ConfigType) throws -> ConfigValue {
        func mismatch() -> any Error { SnapshotError.notConvertible(name: key.description, type: type) }
        func array<T>(_ transform: (FlatYAML.Scalar) -> T?) throws -> [T] {
            guard case .sequence(let items) = value else { throw mismatch() }
            return try items.enumerated().map { index, item in
                guard let v = transform(item) else { throw SnapshotError.unexpectedScalarValueInArray(key.components, index) }
                return v
            }
        }
        func scalar() throws -> FlatYAML.Scalar {
            guard case .scalar(let s) = value else { throw mismatch() }
            return s
        }
        let content: ConfigContent
        switch type {
        case .string: content = .string(try scalar().text)
        case .int:
            guard let v = FlatYAML.int(try scalar()) else { throw mismatch() }
            content = .int(v)
        case .double:
            guard let v = FlatYAML.double(try scalar()) else { throw mismatch() }
            content = .double(v)
        case .bool:
            guard let v = FlatYAML.bool(try scalar()) else { throw mismatch() }
            content = .bool(v)
        case .bytes, .byteChunkArray:
            // No config key is bytes (YAMLSnapshot would decode base64).
            throw mismatch()
        case .stringArray: content = .stringArray(try array { $0.text })
        case .intArray: content = .intArray(try array(FlatYAML.int))
        case .doubleArray: content = .doubleArray(try array(FlatYAML.double))
        case .boolArray: content = .boolArray(try array(FlatYAML.bool))
        }
        return ConfigValue(content, isSecret: false)
    }
}

extension FlatYAMLSnapshot: FileConfigSnapshot {
    public convenience init(data: RawSpan, providerName: String, parsingOptions: ParsingOptions) throws {
        let text = data.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        guard let root = try FlatYAML.parse(text) else { throw SnapshotError.notAMapping }
        self.init(values: try Self.flatten(root), providerName: providerName)
    }
}

extension FlatYAMLSnapshot: ConfigSnapshot {
    public func value(forKey key: AbsoluteConfigKey, type: ConfigType) throws -> LookupResult {
        let encoded = key.components.joined(separator: ".")
        guard let value = values[encoded] else { return LookupResult(encodedKey: encoded, value: nil) }
        return LookupResult(encodedKey: encoded, value: try convert(value, key: key, type: type))
    }
}

extension FlatYAMLSnapshot: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "\(providerName)[\(values.count) values]" }

    public var debugDescription: String {
        let pretty = values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        return "\(providerName)[\(values.count) values: \(pretty)]"
    }
}
