import Foundation

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
        let secretPath = (directory as NSString).appendingPathComponent("\(name).secret")
        let publicPath = (directory as NSString).appendingPathComponent("\(name).public")
        guard !FileManager.default.fileExists(atPath: secretPath) else {
            throw FileError(description: "\(secretPath) exists; not overwriting a secret key")
        }
        let secret = "# Apiary CURVE key pair for \(name). SECRET: keep it private (mode 0600).\npublic-key = \"\(pair.publicKey)\"\nsecret-key = \"\(pair.secretKey)\"\n"
        let pub = "# Apiary CURVE public key for \(name).\npublic-key = \"\(pair.publicKey)\"\n"
        // Create the secret file with 0600 before writing anything into it.
        guard FileManager.default.createFile(atPath: secretPath, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw FileError(description: "cannot create \(secretPath)")
        }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: secretPath))
        try h.write(contentsOf: Data(secret.utf8))
        try h.synchronize()
        try h.close()
        try Data(pub.utf8).write(to: URL(fileURLWithPath: publicPath))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: publicPath)
        return (secretPath, publicPath)
    }

    /// Reads a key pair from a secret file. Throws if either key is missing or malformed, or
    /// if the public key does not belong to the secret key.
    public static func readPair(path: String) throws -> CurveKeyPair {
        let fields = try read(path)
        guard let sec = fields["secret-key"] else { throw FileError(description: "\(path): no secret-key") }
        let derived = try CurveKeyPair.publicKey(forSecret: sec)
        if let pub = fields["public-key"], pub != derived {
            throw FileError(description: "\(path): public-key does not match secret-key")
        }
        return CurveKeyPair(publicKey: derived, secretKey: sec)
    }

    /// Reads the public key from a public (or secret) key file.
    public static func readPublicKey(path: String) throws -> String {
        guard let pub = try read(path)["public-key"] else { throw FileError(description: "\(path): no public-key") }
        return pub
    }

    private static func read(_ path: String) throws -> [String: String] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw FileError(description: "cannot read key file \(path): \(error.localizedDescription)")
        }
        var out: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            let value = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            guard CurveKeyPair.isValidKey(value) else {
                throw FileError(description: "\(path): \(parts[0]) is not a 40-character Z85 key")
            }
            out[parts[0]] = value
        }
        return out
    }
}
