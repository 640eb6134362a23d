import ApiaryCore
import ArgumentParser
import Foundation

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Work with checkpoint files (safetensors with the resume state in __metadata__).",
        subcommands: [CheckpointInspectCommand.self]
    )
}

struct CheckpointInspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a checkpoint's layout, version, run, rule, dedup table size, time and checksum status.",
        discussion: """
            Exits 0 for a valid checkpoint. For an invalid one it prints a one-line error on stderr \
            and exits 1; when only the checksum is wrong it prints the report first, with the checksum \
            status "mismatch", then the error.
            """
    )

    @Argument(help: "The checkpoint file (checkpoint-<version>.safetensors).")
    var path: String

    @Flag(name: .long, help: "Print the report as one JSON object.")
    var json = false

    func run() throws {
        let url = URL(fileURLWithPath: path)
        let r: CheckpointInspection
        do {
            r = try Checkpoint.inspect(url)
        } catch {
            throw fail("\(path): \(error)")
        }
        guard let state = r.state else {
            let e = r.checksumOK ? (r.stateError?.description ?? "unreadable metadata")
                : CheckpointError.checksumMismatch(expected: r.storedChecksum, got: r.computedChecksum).description
            throw fail("\(path): \(e)")
        }
        let report = Report(path: path, inspection: r, state: state)
        print(json ? report.jsonLine() : report.text())
        if !r.checksumOK {
            throw fail("\(path): \(CheckpointError.checksumMismatch(expected: r.storedChecksum, got: r.computedChecksum))")
        }
    }

    /// Prints `message` as one line on stderr; throw the result to exit 1.
    private func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("apiary checkpoint inspect: \(message)\n".utf8))
        return .failure
    }
}

/// The report of `apiary checkpoint inspect`; the JSON keys are a stable interface.
private struct Report: Encodable {
    struct Rule: Encodable {
        var alpha: Double
        var staleness_function: String
        var staleness_a: Double
        var staleness_b: Double
        var max_staleness: UInt64
    }

    struct Tensor: Encodable {
        var name: String
        var dtype: String
        var shape: [Int]
        var data_offsets: [Int]
    }

    struct Checksum: Encodable {
        var status: String
        var stored: String
        var computed: String
    }

    /// The central-DP accountant (absent without one).
    struct Privacy: Encodable {
        var epsilon: Double
        var delta: Double
        var steps: UInt64
    }

    var path: String
    var bytes: Int
    var header_bytes: Int
    var format: String
    var version: UInt64
    var run_id: String
    var rule: Rule
    var dedup_window: UInt64
    var dedup_clients: Int
    var dedup_outcomes: Int
    /// Non-zero client epochs (clients that send one; PROTOCOL.md 3.4).
    var dedup_epochs: Int
    var created_at_ms: Int64
    var created_at: String
    var checksum: Checksum
    var layout_fingerprint: String
    var parameters: Int
    var tensors: [Tensor]
    var privacy: Privacy?

    init(path: String, inspection r: CheckpointInspection, state s: CheckpointState) {
        self.path = path
        bytes = r.byteCount
        header_bytes = r.headerLength
        format = r.metadata["format"] ?? ""
        version = s.version
        run_id = Checkpoint.hex64(s.runID)
        let (name, a, b): (String, Double, Double) = switch s.rule.staleness {
        case .constant: ("constant", 0, 0)
        case .polynomial(let a): ("polynomial", a, 0)
        case .hinge(let a, let b): ("hinge", a, b)
        }
        rule = Rule(alpha: s.rule.alpha, staleness_function: name, staleness_a: a, staleness_b: b,
                    max_staleness: s.rule.maxStaleness)
        dedup_window = s.dedupWindow
        dedup_clients = s.dedup.count
        dedup_outcomes = s.dedup.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.outcomes.count } }
        dedup_epochs = s.dedup.values.reduce(0) { $0 + $1.keys.count { $0 != 0 } }
        created_at_ms = s.createdAtMilliseconds
        let date = Date(timeIntervalSince1970: Double(s.createdAtMilliseconds) / 1000)
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        created_at = f.string(from: date)
        checksum = Checksum(status: r.checksumOK ? "ok" : "mismatch", stored: Checkpoint.hex32(r.storedChecksum),
                            computed: Checkpoint.hex32(r.computedChecksum))
        layout_fingerprint = Checkpoint.hex64(s.layout.fingerprint)
        parameters = s.layout.parameterCount
        tensors = s.layout.tensors.indices.map { i in
            let t = s.layout.tensors[i]
            let o = r.dataOffsets(ofTensor: i)
            return Tensor(name: t.name, dtype: "F32", shape: t.shape, data_offsets: [o.lowerBound, o.upperBound])
        }
        privacy = s.privacy.map { Privacy(epsilon: $0.epsilon, delta: $0.delta, steps: $0.steps) }
    }

    func jsonLine() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let d = try? e.encode(self) else { return "{}" }
        return String(decoding: d, as: UTF8.self)
    }

    func text() -> String {
        func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        let checksumLine = checksum.status == "ok"
            ? "ok (\(checksum.stored))"
            : "MISMATCH (stored \(checksum.stored), computed \(checksum.computed))"
        let staleness = switch rule.staleness_function {
        case "polynomial": "polynomial(a=\(rule.staleness_a))"
        case "hinge": "hinge(a=\(rule.staleness_a), b=\(rule.staleness_b))"
        default: rule.staleness_function
        }
        var lines = [
            "file:      \(path)",
            "size:      \(bytes) bytes (header \(header_bytes), data \(bytes - 8 - header_bytes))",
            "format:    \(format)",
            "version:   \(version)",
            "run id:    \(run_id)",
            "rule:      fedasync alpha=\(rule.alpha) staleness=\(staleness) max_staleness=\(rule.max_staleness)",
            "dedup:     \(plural(dedup_clients, "client")), \(plural(dedup_outcomes, "outcome")) (window \(dedup_window))"
                + (dedup_epochs == 0 ? "" : ", \(plural(dedup_epochs, "client epoch"))"),
            "created:   \(created_at) (\(created_at_ms) ms)",
            "checksum:  \(checksumLine)",
            "layout:    \(plural(tensors.count, "tensor")), \(plural(parameters, "parameter")), fingerprint \(layout_fingerprint)",
        ]
        if let p = privacy {
            lines.insert("privacy:   epsilon \(p.epsilon) at delta \(p.delta) after \(plural(Int(p.steps), "noised step"))", at: lines.count - 1)
        }
        let nameWidth = tensors.map(\.name.count).max() ?? 0
        let shapeWidth = tensors.map { "\($0.shape)".count }.max() ?? 0
        for t in tensors {
            let shape = "\(t.shape)"
            lines.append("  " + t.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                + "  \(t.dtype)  " + shape.padding(toLength: shapeWidth, withPad: " ", startingAt: 0)
                + "  data_offsets [\(t.data_offsets[0]), \(t.data_offsets[1])]")
        }
        return lines.joined(separator: "\n")
    }
}
