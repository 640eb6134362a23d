import ApiaryCommandLine
import Configuration
import Foundation
import SystemPackage
import Testing
import Yams

/// FlatYAML (what the edge binary reads config files with, built without the YAML trait)
/// against Yams and swift-configuration's YAMLSnapshot (what `apiary` reads them with): the
/// same tree for every config file of the repository and for the corners of the subset, the
/// same typed values for every key, and an error, never another reading, outside the subset.
@Suite struct FlatYAMLTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var configFiles: [URL] {
        ["Configs", "Deploy/config"].flatMap { dir -> [URL] in
            let d = root.appendingPathComponent(dir)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []
            return names.filter { $0.hasSuffix(".yaml") }.sorted().map { d.appendingPathComponent($0) }
        }
    }

    /// A comparable rendering of what Yams.load or FlatYAML.loaded gives.
    static func render(_ v: Any?) -> String {
        switch v {
        case nil: return "nil"
        case is NSNull, is FlatYAML.Null: return "null"
        case let b as Bool: return "bool(\(b))"
        case let i as Int: return "int(\(i))"
        case let d as Double: return "double(\(d))"
        case let s as String: return "string(\(s.debugDescription))"
        case let a as [Any]: return "[" + a.map { render($0) }.joined(separator: ", ") + "]"
        case let m as [String: Any]: return "{" + m.keys.sorted().map { "\($0): \(render(m[$0]))" }.joined(separator: ", ") + "}"
        default: return "other(\(type(of: v!)))"
        }
    }

    static func flat(_ text: String) throws -> Any? { try FlatYAML.parse(text).map(FlatYAML.loaded) }

    @Test("every config file of the repository reads the same as with Yams")
    func configFilesMatchYams() throws {
        let files = Self.configFiles
        #expect(files.count >= 5)
        for url in files {
            let text = try String(contentsOf: url, encoding: .utf8)
            #expect(Self.render(try Self.flat(text)) == Self.render(try Yams.load(yaml: text)), "\(url.lastPathComponent)")
        }
    }

    @Test("scalars resolve as Yams resolves them", arguments: [
        "a: yes", "a: No", "a: on", "a: OFF", "a: true", "a: 'yes'", "a: \"on\"",
        "a: 0", "a: 07", "a: 0o17", "a: 0x1F", "a: 0b101", "a: -12", "a: +3", "a: 1_000", "a: 1:30",
        "a: 1.5", "a: -0.5", "a: 1e3", "a: 1.5e-3", "a: .5", "a: .inf", "a: -.Inf", "a: 1.",
        "a: ~", "a: null", "a:", "a: ''", "a: \"\"", "a: 'null'",
        "a: hello world", "a: tcp://127.0.0.1:5557", "a: 'it''s'", "a: \"x # y\"", "a: x # comment",
        "a: \"tab\\there \\u00e9\"", "a: [1, b, 'c, d', 2.5, yes]", "a: []", "a: {}", "a: [ ]",
        "a:\n  - x\n  - 2\n", "a:\n- x\n- y\n", "s:\n  k: 1\n  t:\n    u: v\n",
        "---\na: 1\n", "# only a comment\n", "", "a: 1\n...\n",
    ])
    func scalars(text: String) throws {
        #expect(Self.render(try Self.flat(text)) == Self.render(try Yams.load(yaml: text)))
    }

    @Test("outside the subset: an error naming the line, never another reading", arguments: [
        "a: &x 1\nb: *x\n", "a: !!str 1", "a: |\n  text\n", "a: >\n  text\n", "a: {b: 1}", "a: [[1]]",
        "a: 1\na: 2\n", "a:\n\tb: 1\n", "a: 1\n---\nb: 2\n", "a: 'open\n", "a:\n  - b: 1\n",
    ])
    func unsupported(text: String) {
        #expect(throws: FlatYAML.SyntaxError.self) { try FlatYAML.parse(text) }
    }

    @Test("typed reads of every key match YAMLSnapshot's on every config file")
    func typedReadsMatch() async throws {
        for url in Self.configFiles {
            let yams = ConfigReader(providers: [try await FileProvider<YAMLSnapshot>(filePath: FilePath(url.path))])
            let flat = ConfigReader(providers: [try await FileProvider<FlatYAMLSnapshot>(filePath: FilePath(url.path))])
            for key in SettingsSchema.keys.keys.sorted() {
                let k = ConfigKey(key)
                #expect(yams.string(forKey: k) == flat.string(forKey: k), "\(url.lastPathComponent) \(key)")
                #expect(yams.int(forKey: k) == flat.int(forKey: k), "\(url.lastPathComponent) \(key)")
                #expect(yams.double(forKey: k) == flat.double(forKey: k), "\(url.lastPathComponent) \(key)")
                #expect(yams.bool(forKey: k) == flat.bool(forKey: k), "\(url.lastPathComponent) \(key)")
                #expect(yams.stringArray(forKey: k) == flat.stringArray(forKey: k), "\(url.lastPathComponent) \(key)")
            }
        }
    }
}
