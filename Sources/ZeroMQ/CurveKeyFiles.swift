#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ApiaryCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Key files in the ZeroMQ certificate style:
///
///     # comment
///     public-key = "<40 Z85 characters>"
///     secret-key = "<40 Z85 characters>"      (secret files only)
///
/// The secret file is written with mode 0600, the public file 0644.
public enum CurveKeyFile {
    public struct FileError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes `NAME.secret` and `NAME.public` into `directory` (created if needed); returns
    /// their paths. Refuses to overwrite an existing secret file.
    public static func write(_ pair: CurveKeyPair, name: String, directory: String) throws -> (secret: String, public: String) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let secretPath = joinPath(directory, "\(name).secret")
        let publicPath = joinPath(directory, "\(name).public")
        guard !FileManager.default.fileExists(atPath: secretPath) else {
            throw FileError(description: "\(secretPath) exists; not overwriting a secret key")
        }
        let secret = "# Apiary CURVE key pair for \(name). SECRET: keep it private (mode 0600).\npublic-key = \"\(pair.publicKey)\"\nsecret-key = \"\(pair.secretKey)\"\n"
        let pub = "# Apiary CURVE public key for \(name).\npublic-key = \"\(pair.publicKey)\"\n"
        // Create the secret file with 0600 before writing anything into it.
        try writeSecret(secret, to: secretPath)
        try Data(pub.utf8).write(to: URL(fileURLWithPath: publicPath))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: publicPath)
        return (secretPath, publicPath)
    }

    /// Reads a key pair from a secret file. Throws if either key is missing or malformed, or
    /// if the public key does not belong to the secret key.
    public static func readPair(path: String) throws -> CurveKeyPair {
        let fields = try keyFields(path)
        guard let sec = fields["secret-key"] else { throw FileError(description: "\(path): no secret-key") }
        let derived = try CurveKeyPair.publicKey(forSecret: sec)
        if let pub = fields["public-key"], pub != derived {
            throw FileError(description: "\(path): public-key does not match secret-key")
        }
        return CurveKeyPair(publicKey: derived, secretKey: sec)
    }

    /// Reads the public key from a public (or secret) key file.
    public static func readPublicKey(path: String) throws -> String {
        guard let pub = try keyFields(path)["public-key"] else { throw FileError(description: "\(path): no public-key") }
        return pub
    }

    private static func keyFields(_ path: String) throws -> [String: String] {
        let text = try readText(path)
        var out: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = trimmed(raw, isBlank)
            if line.hasPrefix("#") || line.isEmpty { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { trimmed($0, isBlank) }
            guard parts.count == 2 else { continue }
            let value = trimmed(parts[1], { $0 == "\"" })
            guard CurveKeyPair.isValidKey(value) else {
                throw FileError(description: "\(path): \(parts[0]) is not a 40-character Z85 key")
            }
            out[parts[0]] = value
        }
        return out
    }

    // Without Foundation's NSString and CharacterSet (FoundationEssentials has neither), so
    // that a client links FoundationEssentials only.

    /// The file's text; the error names the path and the system's reason ("No such file or
    /// directory", "Permission denied").
    private static func readText(_ path: String) throws -> String {
        let bytes: [UInt8]
        do {
            bytes = try FileBytes.read(path: path)
        } catch {
            throw FileError(description: "cannot read key file: \(error.description)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw FileError(description: "cannot read key file \(path): not UTF-8 text") }
        return text
    }

    /// Creates `path` with mode 0600 (it must not exist), writes `text` and syncs it to disk.
    private static func writeSecret(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw FileError(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { posixWrite(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            bytes = bytes.dropFirst(n)
        }
        guard fsync(fd) == 0 else { throw FileError(description: "cannot sync \(path): \(String(cString: strerror(errno)))") }
    }

    /// `directory/name` (`name` alone for an empty directory), as NSString's appendingPathComponent.
    private static func joinPath(_ directory: String, _ name: String) -> String {
        if directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// Spaces and tabs (CharacterSet.whitespaces: the Unicode space separators and tab).
    private static func isBlank(_ c: Character) -> Bool {
        c == "\t" || c.unicodeScalars.allSatisfy { $0.properties.generalCategory == .spaceSeparator }
    }

    private static func trimmed(_ s: some StringProtocol, _ drop: (Character) -> Bool) -> String {
        guard let first = s.firstIndex(where: { !drop($0) }), let last = s.lastIndex(where: { !drop($0) }) else { return "" }
        return String(s[first...last])
    }
}

/// write(2), out of CurveKeyFile, whose `write` shadows it.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, buffer, count)
}
