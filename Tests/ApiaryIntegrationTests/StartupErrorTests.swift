import ApiaryCore
import Foundation
import Testing
import ApiaryTesting

/// Issue 15, items 3 and 4, through the `apiary` binary: a config mistake or an unusable path
/// stops the process at start with status 1 and one line naming the key and the cause.
@Suite("Start-up: config mistakes and unusable paths stop the process with one clear line", .serialized)
struct StartupErrorTests {
    /// Runs `apiary ARGS` in `dir` with `environment` added; returns status and output. A
    /// process still running after `timeout` seconds (one that started although it should not
    /// have) is killed and reported as status -1.
    func run(_ args: [String], in dir: URL, environment: [String: String] = [:], timeout: Double = 10) async throws -> (status: Int32, output: String) {
        let r = try await Child.run(args, environment: environment, directory: dir, timeout: timeout)
        return (r.status, r.output)
    }

    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-startup-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// Loopback endpoints on free ports, no CURVE, and the given extra environment.
    func insecureEnv(_ extra: [String: String] = [:]) throws -> [String: String] {
        let ports = try freePorts(3)
        return ["ENDPOINTS_MODEL": "tcp://127.0.0.1:\(ports[0])", "ENDPOINTS_SNAPSHOT": "tcp://127.0.0.1:\(ports[1])",
                "ENDPOINTS_UPDATE": "tcp://127.0.0.1:\(ports[2])", "SECURITY_INSECURE": "true"].merging(extra) { $1 }
    }

    static let mistakes: [(yaml: String, env: [String: String], names: [String])] = [
        ("fedasync:\n  alpah: 0.5\n", [:], ["fedasync.alpah", "did you mean 'fedasync.alpha'"]),
        ("checkpont:\n  directory: state\n", [:], ["checkpont", "did you mean 'checkpoint'"]),
        ("fedasync:\n  alpha: high\n", [:], ["fedasync.alpha", "expected a number", "'high'"]),
        ("fedasync:\n  max_staleness: 1.5\n", [:], ["fedasync.max_staleness", "expected an integer", "1.5"]),
        ("http:\n  port: abc\n", [:], ["http.port", "expected an integer", "'abc'"]),
        ("fedasync:\n  alpha: 0.5\n", ["FEDASYNC_ALPHA": "abc"], ["FEDASYNC_ALPHA", "fedasync.alpha", "expected a number", "'abc'"]),
        ("log:\n  level: info\n", ["SECURITY_INSECURE": "maybe"], ["SECURITY_INSECURE", "security.insecure", "true or false"]),
    ]

    @Test("an unknown key or a value of the wrong type (file or environment) stops the aggregator: status 1, one line naming it",
          arguments: mistakes.indices)
    func configMistake(index: Int) async throws {
        let m = Self.mistakes[index]
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yaml")
        try Data(m.yaml.utf8).write(to: file)
        let env = try insecureEnv(m.env)
        for command in [["aggregator"], ["client", "--id", "c1"], ["config", "check"]] {
            let (status, out) = try await run(command + ["--config", file.path], in: dir, environment: env)
            #expect(status == 1, "\(command): \(out)")
            let lines = out.split(separator: "\n")
            #expect(lines.count == 1, "\(command): \(out)")
            for name in m.names { #expect(out.contains(name), "\(command): \(out)") }
        }
        // Nothing was started or written.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["bad.yaml"])
    }

    @Test("an unknown update codec, or top-k without fedbuff, stops the aggregator: status 1, one line naming it")
    func codecMistake() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (yaml, names) in [("compression:\n  codec: zstd\n", ["compression.codec", "'zstd'", "int8"]),
                              ("compression:\n  codec: topk\n", ["compression.codec topk", "needs algorithm fedbuff"]),
                              ("algorithm: fedbuff\ncompression:\n  codec: topk\n  topk_fraction: 2\n", ["compression.topk_fraction", "(0, 1]"])] {
            let file = dir.appendingPathComponent("bad.yaml")
            try Data(yaml.utf8).write(to: file)
            let (status, out) = try await run(["aggregator", "--config", file.path], in: dir, environment: try insecureEnv())
            #expect(status == 1, "\(yaml): \(out)")
            let errors = out.split(separator: "\n").filter { !$0.contains("INSECURE") }
            #expect(errors.count == 1, "\(yaml): \(out)")
            for name in names { #expect(out.contains(name), "\(yaml): \(out)") }
        }
    }

    @Test("a status port in use stops the aggregator before it starts a run: status 1, one line, nothing written")
    func statusPortInUse() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let port = try freePorts(1)[0]
        let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(taken) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(taken, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(bound == 0 && listen(taken, 1) == 0)
        let env = try insecureEnv(["HTTP_PORT": "\(port)", "CHECKPOINT_DIRECTORY": dir.appendingPathComponent("state").path])
        let (status, out) = try await run(["aggregator"], in: dir, environment: env)
        #expect(status == 1, "\(out)")
        let lines = out.split(separator: "\n")
        #expect(lines.count == 1 && out.contains("127.0.0.1:\(port) (http.host, http.port)") && out.contains("in use"), "\(out)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("state").path), "no run was started")
    }

    @Test("central DP without fedbuff, or with a robust aggregate, and local DP with a central-DP key or no noise, stop the start with one line naming the keys")
    func privacyNeedsFedBuffMean() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String: String], String)] = [
            (["PRIVACY_MODE": "central"], "privacy.mode central needs algorithm fedbuff"),
            (["PRIVACY_MODE": "central", "ALGORITHM": "fedbuff", "FEDBUFF_AGGREGATE": "median"], "privacy.mode central needs fedbuff.aggregate mean"),
            (["PRIVACY_MODE": "central", "ALGORITHM": "fedbuff", "PRIVACY_SAMPLING": "poisson"], "privacy.sampling poisson needs privacy.sampling_rate"),
            (["ALGORITHM": "fedbuff", "FEDBUFF_AGGREGATE": "krum"], "fedbuff.aggregate must be one of mean, median, trimmed_mean"),
            (["PRIVACY_MODE": "local", "PRIVACY_EPSILON_BUDGET": "8"], "privacy.epsilon_budget applies to central DP"),
            (["PRIVACY_MODE": "local", "PRIVACY_NOISE_MULTIPLIER": "0"], "privacy.noise_multiplier must be a positive number"),
            (["PRIVACY_MODE": "locale"], "privacy.mode must be one of off, central, local"),
        ]
        for (vars, message) in cases {
            let env = try insecureEnv(vars.merging(["CHECKPOINT_DIRECTORY": dir.appendingPathComponent("state").path]) { a, _ in a })
            let (status, out) = try await run(["aggregator"], in: dir, environment: env)
            #expect(status == 1 && out.contains(message), "\(vars): \(out)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("state").path), "no run was started")
        }
    }

    @Test("every shipped config passes the strict check")
    func shippedConfigs() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var files: [String] = []
        for sub in ["Configs", "Deploy/config"] {
            let d = root.appendingPathComponent(sub)
            files += try FileManager.default.contentsOfDirectory(atPath: d.path).filter { $0.hasSuffix(".yaml") }.map { d.appendingPathComponent($0).path }
        }
        #expect(files.count >= 9)
        for f in files {
            let (status, out) = try await run(["config", "check", "--config", f], in: root)
            #expect(status == 0, "\(f): \(out)")
        }
    }

    @Test("every key the commands read is one the strict check knows (Sources/ApiaryCommandLine/SettingsSchema.swift)")
    func schemaCoversReads() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let schema = try String(contentsOf: root.appendingPathComponent("Sources/ApiaryCommandLine/SettingsSchema.swift"), encoding: .utf8)
        let read = try Regex(#"(?:forKey: |Settings\.duration\((?:r|reader), |duration\(r, |positive\(r, |r\.seconds\(|r\.positive\(|seconds\(r, )"([a-z_.]+)""#)
        var keys: Set<String> = []
        for sub in ["Sources/apiary", "Sources/ApiaryCommandLine", "Sources/ApiaryAggregator", "Sources/ApiaryClient", "Sources/ApiaryGateway"] {
            let dir = root.appendingPathComponent(sub)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where name.hasSuffix(".swift") && name != "SettingsSchema.swift" {
                let text = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
                for m in text.matches(of: read) { if let k = m.output[1].substring { keys.insert(String(k)) } }
            }
        }
        #expect(keys.count > 60)
        #expect(keys.contains("client.snapshot_timeout_s") && keys.contains("data.partition"))
        for k in keys.sorted() { #expect(schema.contains("\"\(k)\""), "\(k) is read but not in SettingsSchema.keys") }
    }

    @Test("a checkpoint directory that cannot be created is named with its key, path and cause, before anything listens")
    func uncreatableCheckpointDirectory() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("a file, not a directory".utf8).write(to: dir.appendingPathComponent("blocker"))
        let statusPort = try freePorts(1)[0]
        let env = try insecureEnv(["CHECKPOINT_DIRECTORY": dir.appendingPathComponent("blocker/checkpoints").path,
                                   "HTTP_PORT": "\(statusPort)"])
        let (status, out) = try await run(["aggregator"], in: dir, environment: env)
        #expect(status == 1, "\(out)")
        #expect(out.contains("checkpoint.directory"), "\(out)")
        #expect(out.contains("blocker/checkpoints") && out.contains("Not a directory"), "\(out)")
        #expect(!out.contains("NSCocoaErrorDomain"), "\(out)")
        // The status server never came up: no Hummingbird shutdown noise before the error.
        #expect(!out.contains("Server shutdown error") && !out.contains("CancellationError") && !out.contains("status server listening"), "\(out)")
        #expect(out.split(separator: "\n").filter { $0.contains("error") || $0.hasPrefix("Error") }.count == 1, "\(out)")
    }

    @Test("an unusable ledger path is named with its key, path and cause; the state directory is left untouched")
    func unwritableLedger() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ledger = dir.appendingPathComponent("missing/ledger.sqlite").path
        let checkpoints = dir.appendingPathComponent("state")
        let env = try insecureEnv(["LEDGER_PATH": ledger, "CHECKPOINT_DIRECTORY": checkpoints.path, "HTTP_PORT": "\(try freePorts(1)[0])"])
        let (status, out) = try await run(["aggregator"], in: dir, environment: env)
        #expect(status == 1, "\(out)")
        #expect(out.contains("ledger.path") && out.contains(ledger) && out.contains("does not exist"), "\(out)")
        #expect(!out.contains("SQLite error 14"), "\(out)")
        #expect(!out.contains("Server shutdown error") && !out.contains("CancellationError"), "\(out)")
        #expect(Checkpoint.files(in: checkpoints).isEmpty, "a failed start wrote a checkpoint")
    }

    @Test("a port in use fails the start before the status server starts")
    func portInUse() async throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = try insecureEnv(["HTTP_PORT": "\(try freePorts(1)[0])"])
        // The first aggregator holds the ports; the second cannot bind them.
        let first = try Child(["aggregator"], environment: env, name: "holder")
        try await eventually("the first aggregator to start", within: 20) { first.log.contains("aggregator started") }
        var env2 = env
        env2["HTTP_PORT"] = "\(try freePorts(1)[0])"
        let (status, out) = try await run(["aggregator"], in: dir, environment: env2)
        #expect(status == 1, "\(out)")
        #expect(out.contains("Address already in use"), "\(out)")
        #expect(!out.contains("Server shutdown error") && !out.contains("CancellationError") && !out.contains("status server listening"), "\(out)")
        #expect(await first.terminate() == 0)
    }
}
