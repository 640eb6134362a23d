import ApiaryProtocol
import Foundation
import ZeroMQ

/// The clients allowed to connect: CURVE public keys (Z85) and the client id each one is
/// known by. The text format is one `PUBLIC_KEY CLIENT_ID` per line, optionally followed by
/// ` # comment`; a line whose first field starts with `#` and is not a key is a comment (Z85
/// keys may contain `#`); blank lines are ignored.
public struct AuthorizedKeys: Sendable, Hashable {
    /// Public key (Z85) -> client id.
    public private(set) var clients: [String: String]

    public init(_ clients: [String: String] = [:]) {
        self.clients = clients
    }

    /// Parses the text of an authorized-keys file. Throws on the first bad line, naming it.
    public static func parse(_ text: String) throws -> AuthorizedKeys {
        var keys = AuthorizedKeys()
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // '#' is also a Z85 character: a line is a comment when its first field starts with
            // '#' and is not a key; after the two fields, '#' starts a trailing comment.
            var fields = raw.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if let first = fields.first, first.hasPrefix("#"), !CurveKeyPair.isValidKey(String(first)) { continue }
            if fields.count > 2, fields[2].hasPrefix("#") { fields = Array(fields[0..<2]) }
            if fields.isEmpty { continue }
            guard fields.count == 2 else {
                throw AuthorizedKeysError(line: i + 1, reason: "expected 'PUBLIC_KEY CLIENT_ID', got \(fields.count) fields")
            }
            let key = String(fields[0]), id = String(fields[1])
            guard CurveKeyPair.isValidKey(key) else { throw AuthorizedKeysError(line: i + 1, reason: "not a 40-character Z85 CURVE public key") }
            guard ClientID.isValid(id) else { throw AuthorizedKeysError(line: i + 1, reason: "client id '\(id)' is not 1 to 64 characters of A-Z a-z 0-9 . _ -") }
            if let other = keys.clients[key], other != id {
                throw AuthorizedKeysError(line: i + 1, reason: "key already authorized as '\(other)'")
            }
            keys.clients[key] = id
        }
        return keys
    }

    /// Reads and parses a file.
    public static func load(path: String) throws -> AuthorizedKeys {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AuthorizedKeysError(line: 0, reason: "cannot read \(path): \(error.localizedDescription)")
        }
        return try parse(text)
    }

    /// The client id of a key, or nil when it is not authorized.
    public func clientID(forKey key: String) -> String? { clients[key] }

    public mutating func authorize(key: String, clientID: String) { clients[key] = clientID }
}

public struct AuthorizedKeysError: Error, CustomStringConvertible {
    public let line: Int
    public let reason: String
    public var description: String { line > 0 ? "authorized keys, line \(line): \(reason)" : "authorized keys: \(reason)" }
}
