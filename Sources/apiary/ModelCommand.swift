import ApiaryCore
import ArgumentParser
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Work with model files: export the trained global model, inspect any safetensors file.",
        subcommands: [ModelExportCommand.self, ModelInspectCommand.self]
    )
}

/// Prints `message` as one line on stderr; throw the result to exit 1.
private func fail(_ command: String, _ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("apiary model \(command): \(message)\n".utf8))
    return .failure
}

struct ModelExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the newest durable global model of a state directory as a plain safetensors file.",
        discussion: """
            The output holds the served tensors with their original names and shapes, dtype F32, \
            in name order, readable by safetensors.torch.load_file and safetensors.numpy.load_file. \
            Tensors the aggregator left out (model.exclude) are copied back unchanged from the model \
            file the run started from when it is given (--model FILE --exclude ...), so the export \
            loads into the user's module with load_state_dict(..., strict=True); without --model they \
            are not in it (strict=False). For parameter shards give each shard's \
            state directory, in shard order, and the model file the run started from (--model), \
            which supplies the shapes of tensors a shard boundary cuts.
            """
    )

    @Option(name: .long, help: "A state directory (checkpoint.directory); repeat it, in shard order, for parameter shards.")
    var state: [String]

    @Option(name: .long, help: "The output file (.safetensors); replaced atomically.")
    var out: String

    @Option(name: .long, help: "The model file the run started from: the layout the shards' slices are put back into (needed when a shard boundary cuts a tensor).")
    var model: String?

    @Option(name: .long, parsing: .upToNextOption, help: "With --model: the patterns of model.exclude the run used.")
    var exclude: [String] = []

    func run() throws {
        guard !state.isEmpty else { throw fail("export", "give the state directory with --state DIR") }
        var slices: [(dir: String, file: URL, state: CheckpointState)] = []
        for dir in state {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                throw fail("export", "\(dir): no such directory")
            }
            guard let found = Checkpoint.latestValid(in: URL(fileURLWithPath: dir)) else {
                let n = Checkpoint.files(in: URL(fileURLWithPath: dir)).count
                throw fail("export", n == 0 ? "\(dir) holds no checkpoint (checkpoint-<version>.safetensors)"
                    : "\(dir): none of its \(n) checkpoint files is valid (apiary checkpoint inspect FILE says why)")
            }
            for (bad, error) in found.skipped {
                FileHandle.standardError.write(Data("apiary model export: skipping corrupt checkpoint \(bad.path): \(error)\n".utf8))
            }
            slices.append((dir, found.url, found.state))
        }

        let layout: ParameterLayout
        var parameters: [Float]
        var extra: [Safetensors.RawTensor] = []
        if let model {
            let full: ParameterLayout
            do {
                let loaded = try ModelFile.load(path: model, exclude: exclude)
                full = loaded.layout
                extra = loaded.excludedTensors
            } catch {
                throw fail("export", "--model \(model): \(error)")
            }
            // Each state holds the slice of `full` that starts where the previous one ended.
            var start = 0
            parameters = []
            parameters.reserveCapacity(full.parameterCount)
            for s in slices {
                let range = start..<min(full.parameterCount, start + s.state.layout.parameterCount)
                guard full.slice(range) == s.state.layout else {
                    throw fail("export", "\(s.dir) holds \(s.state.layout.summary()), not the slice \(range) of \(model) (\(full.summary())); give the state directories in shard order with the model file the run started from")
                }
                parameters.append(contentsOf: s.state.parameters)
                start = range.upperBound
            }
            guard start == full.parameterCount else {
                throw fail("export", "the state directories hold \(start) of the \(full.parameterCount) parameters of \(model): a shard is missing")
            }
            layout = full
        } else {
            guard slices.count == 1 else {
                throw fail("export", "several state directories (parameter shards) need --model FILE, the model file the run started from")
            }
            let s = slices[0].state
            if let cut = s.layout.tensors.first(where: { $0.name.hasSuffix("]") && $0.name.contains("[") }) {
                throw fail("export", "\(slices[0].dir) holds a parameter shard's slice (tensor '\(cut.name)' is cut by a shard boundary): give every shard's --state, in shard order, and --model FILE")
            }
            layout = s.layout
            parameters = s.parameters
        }
        guard parameters.allSatisfy(\.isFinite) else {
            throw fail("export", "the checkpoint's model is not finite")
        }
        var metadata = ["format": "pt", "apiary_exported_from": slices.map(\.file.lastPathComponent).joined(separator: ",")]
        metadata["apiary_version"] = slices.map { "\($0.state.version)" }.joined(separator: ",")
        metadata["apiary_run_id"] = slices.map { Checkpoint.hex64($0.state.runID) }.joined(separator: ",")
        let bytes: [UInt8]
        do {
            bytes = try Safetensors.encode(layout: layout, parameters: parameters, metadata: metadata, extra: extra)
        } catch {
            throw fail("export", "\(error)")
        }
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw fail("export", "cannot write \(out): \(error.localizedDescription)")
        }
        let versions = slices.map { "\($0.state.version)" }.joined(separator: ", ")
        let copied = extra.isEmpty ? "" : "; \(extra.count) left-out tensors copied back from \(model!): \(extra.map(\.name).joined(separator: ", "))"
        print("wrote \(out): \(layout.summary()), version \(versions) (from \(slices.map(\.file.path).joined(separator: ", ")))\(copied)")
    }
}

struct ModelInspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a safetensors file's tensors, what an aggregator would serve of it, its parameter count and fingerprint.",
        discussion: """
            Any safetensors file: a model written by safetensors.torch.save_file or \
            safetensors.numpy.save_file, an export, a checkpoint. Exits 0 when an aggregator can \
            serve the file (with the --exclude patterns given); otherwise prints the report and a \
            one-line error, and exits 1.
            """
    )

    @Argument(help: "The safetensors file.")
    var path: String

    @Option(name: .long, parsing: .upToNextOption, help: "Patterns of tensors to leave out, as model.exclude would.")
    var exclude: [String] = []

    @Flag(name: .long, help: "Print the report as one JSON object.")
    var json = false

    struct Tensor: Encodable {
        var name: String
        var dtype: String
        var shape: [Int]
        var parameters: Int
        /// served, converted (to float32), excluded, refused
        var status: String
    }

    struct Report: Encodable {
        var path: String
        var bytes: Int
        var tensors: [Tensor]
        var metadata: [String: String]
        var servable: Bool
        var error: String?
        /// Of the served layout (name order, float32): nil when the file cannot be served.
        var parameters: Int?
        var layout_fingerprint: String?
        var order: String
    }

    func run() throws {
        let bytes: [UInt8]
        do {
            bytes = try FileBytes.read(path: path)
        } catch {
            throw fail("inspect", "\(error)")
        }
        let header: Safetensors.Header
        do {
            header = try bytes.withUnsafeBytes { raw throws(SafetensorsError) in
                try Safetensors.parseHeader(raw, width: Safetensors.elementWidth(ofDType:))
            }
        } catch {
            throw fail("inspect", "\(path): not a valid safetensors file: \(error)")
        }
        var served: ModelFile.Loaded?
        var problem: String?
        do {
            served = try ModelFile.decode(bytes, exclude: exclude)
        } catch {
            problem = error.description
        }
        let excludedNames = Set(served?.excluded.map(\.name) ?? [])
        let tensors = header.entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }.map { e in
            let status = excludedNames.contains(e.name) ? "excluded"
                : !ModelFile.floatDTypes.contains(e.dtype) ? "refused"
                : e.dtype == "F32" ? "served" : "converted"
            return Tensor(name: e.name, dtype: e.dtype, shape: e.shape, parameters: e.count, status: status)
        }
        let report = Report(path: path, bytes: bytes.count, tensors: tensors, metadata: header.metadata,
                            servable: served != nil, error: problem, parameters: served?.layout.parameterCount,
                            layout_fingerprint: served.map { Checkpoint.hex64($0.layout.fingerprint) }, order: ModelFile.orderRule)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try e.encode(report), as: UTF8.self))
        } else {
            print(text(report))
        }
        if let problem { throw fail("inspect", "\(path): \(problem)") }
    }

    func text(_ r: Report) -> String {
        var lines = ["file:         \(r.path) (\(r.bytes) bytes, \(r.tensors.count) tensors in the file)"]
        if let p = r.parameters, let f = r.layout_fingerprint {
            let served = r.tensors.filter { $0.status == "served" || $0.status == "converted" }.count
            lines.append("served:       \(served) tensors, \(p) parameters, float32, \(r.order)")
            lines.append("fingerprint:  \(f)")
        } else {
            lines.append("served:       nothing: an aggregator refuses this file (see the error)")
        }
        if !r.metadata.isEmpty {
            // One line each, long values cut at 120 characters (--json has them whole).
            for k in r.metadata.keys.sorted().prefix(8) {
                let v = r.metadata[k]!
                lines.append("metadata:     \(k)=\(v.count > 120 ? v.prefix(120) + "..." : Substring(v))")
            }
            if r.metadata.count > 8 { lines.append("metadata:     ... \(r.metadata.count - 8) more (--json shows all)") }
        }
        let nameWidth = min(60, r.tensors.map(\.name.count).max() ?? 0)
        let shapeWidth = r.tensors.map { "\($0.shape)".count }.max() ?? 0
        for t in r.tensors {
            let note = switch t.status {
            case "converted": "converted to F32"
            case "excluded": "left out (--exclude / model.exclude)"
            case "refused": "REFUSED: not trainable, leave it out with model.exclude"
            default: ""
            }
            lines.append("  " + t.name.padding(toLength: max(nameWidth, t.name.count), withPad: " ", startingAt: 0)
                + "  " + t.dtype.padding(toLength: 7, withPad: " ", startingAt: 0)
                + "  " + "\(t.shape)".padding(toLength: shapeWidth, withPad: " ", startingAt: 0)
                + "  " + "\(t.parameters)".padding(toLength: 10, withPad: " ", startingAt: 0) + note)
        }
        return lines.joined(separator: "\n")
    }
}
