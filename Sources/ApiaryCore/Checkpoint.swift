/// Everything an aggregator needs to resume a run: the model, its version and run, the merge
/// rule and the dedup table (so that resent updates are answered as the first time).
public struct CheckpointState: Sendable, Equatable {
    public var runID: UInt64
    public var version: UInt64
    public var layout: ParameterLayout
    /// The flat parameters, `layout.parameterCount` of them.
    public var parameters: [Float]
    public var rule: FedAsync
    public var dedupWindow: UInt64
    /// Client id -> client epoch -> its dedup entry (`DedupTable.clients`).
    public var dedup: [String: [UInt64: DedupTable<UpdateOutcome>.Entry]]
    /// When the state was taken, milliseconds since the Unix epoch.
    public var createdAtMilliseconds: Int64
    /// The server optimizer's state (FedBuff): its kind, steps and moments; nil without one.
    public var optimizer: OptimizerState? = nil
    /// The privacy accountant (central DP): nil without one.
    public var privacy: PrivacyState? = nil

    /// What the RDP accountant needs to resume, in the `privacy` metadata entry: the RDP spent
    /// at each of `RDPAccountant.defaultOrders`, the steps (noised flushes) and, for readers,
    /// the epsilon at `delta` they come to.
    public struct PrivacyState: Sendable, Equatable {
        public var steps: UInt64
        public var rdp: [Double]
        public var epsilon: Double
        public var delta: Double
        /// The clipping bound reached by adaptive clipping (nil with a fixed bound).
        public var clip: Double?
        public init(steps: UInt64, rdp: [Double], epsilon: Double, delta: Double, clip: Double? = nil) {
            self.steps = steps
            self.rdp = rdp
            self.epsilon = epsilon
            self.delta = delta
            self.clip = clip
        }

        /// The accountant it saved (nil when the RDP values do not fit the default orders).
        public var accountant: RDPAccountant? { RDPAccountant(rdp: rdp, steps: steps) }
    }

    /// What a `ServerOptimizer` needs to resume: `m` and `v` (each empty, or one value per
    /// parameter of `layout`), stored as the tensors `__optimizer__.m` / `__optimizer__.v`
    /// after the model's, with the kind and step count in the `optimizer` metadata entry.
    public struct OptimizerState: Sendable, Equatable {
        public var kind: String
        public var steps: UInt64
        public var m: [Float]
        public var v: [Float]
        public init(kind: String, steps: UInt64, m: [Float], v: [Float]) {
            self.kind = kind
            self.steps = steps
            self.m = m
            self.v = v
        }
    }

    public init(runID: UInt64, version: UInt64, layout: ParameterLayout, parameters: [Float], rule: FedAsync,
                dedupWindow: UInt64, dedup: [String: [UInt64: DedupTable<UpdateOutcome>.Entry]], createdAtMilliseconds: Int64) {
        self.runID = runID
        self.version = version
        self.layout = layout
        self.parameters = parameters
        self.rule = rule
        self.dedupWindow = dedupWindow
        self.dedup = dedup
        self.createdAtMilliseconds = createdAtMilliseconds
    }

    /// The dedup table, restored.
    public var dedupTable: DedupTable<UpdateOutcome> { DedupTable(window: dedupWindow, clients: dedup) }

    /// Parameters compare bit for bit (so NaN equals NaN, and 0 differs from -0).
    public static func == (a: CheckpointState, b: CheckpointState) -> Bool {
        guard a.runID == b.runID, a.version == b.version, a.layout == b.layout, a.rule == b.rule,
              a.dedupWindow == b.dedupWindow, a.createdAtMilliseconds == b.createdAtMilliseconds,
              a.parameters.elementsEqual(b.parameters, by: { $0.bitPattern == $1.bitPattern }),
              a.dedup.count == b.dedup.count, a.optimizer == b.optimizer, a.privacy == b.privacy
        else { return false }
        for (client, epochs) in a.dedup {
            guard let other = b.dedup[client], other.count == epochs.count else { return false }
            for (epoch, e) in epochs {
                guard let f = other[epoch], e.highest == f.highest, e.outcomes == f.outcomes, e.lastUsed == f.lastUsed else { return false }
            }
        }
        return true
    }
}

/// Why a checkpoint could not be written or read.
public enum CheckpointError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A file system operation failed.
    case io(String)
    /// The file is shorter than its header says (or than 8 bytes).
    case truncated(expected: Int, actual: Int)
    /// The safetensors container is invalid (header JSON, tensor entries, dtype, offsets,
    /// trailing bytes).
    case badHeader(SafetensorsError)
    /// `__metadata__.format` is missing or not `apiary-checkpoint-1` (for example a plain
    /// safetensors file).
    case unsupportedFormat(String?)
    /// The checksum over the data and the metadata differs from the stored one.
    case checksumMismatch(expected: UInt32, got: UInt32)
    /// The tensor names, shapes or order differ from the ones the checkpoint was written with.
    case layoutFingerprintMismatch(expected: UInt64, got: UInt64)
    /// A metadata entry is missing or cannot be parsed.
    case badMetadata(key: String, reason: String)
    /// The file name's version differs from the version inside (a renamed file).
    case versionMismatch(fileName: UInt64, metadata: UInt64)
    /// The state cannot be written (the parameters do not match the layout, ...).
    case invalidState(String)

    public var description: String {
        switch self {
        case .io(let m): m
        case .truncated(let e, let a): "truncated: \(a) bytes, expected \(e)"
        case .badHeader(let e): "invalid safetensors: \(e)"
        case .unsupportedFormat(let f): f.map { "unsupported format '\($0)' (expected \(Checkpoint.format))" }
            ?? "not an apiary checkpoint (no format in __metadata__)"
        case .checksumMismatch(let e, let g): "checksum mismatch: stored \(Checkpoint.hex32(e)), computed \(Checkpoint.hex32(g))"
        case .layoutFingerprintMismatch(let e, let g): "layout fingerprint mismatch: stored \(Checkpoint.hex64(e)), computed \(Checkpoint.hex64(g))"
        case .badMetadata(let k, let r): "invalid metadata '\(k)': \(r)"
        case .versionMismatch(let f, let m): "the file name says version \(f), the checkpoint holds version \(m)"
        case .invalidState(let m): "invalid checkpoint state: \(m)"
        }
    }
}

/// Checkpoint files: one safetensors file per checkpoint, `checkpoint-<version, 20 digits>.safetensors`,
/// readable by numpy and PyTorch (the model's tensors, float32) with the resume state in
/// `__metadata__` (all values are strings):
///
/// | key | value |
/// |---|---|
/// | `format` | `apiary-checkpoint-1` |
/// | `run_id` | 16 lowercase hex digits |
/// | `version` | decimal |
/// | `created_at_ms` | decimal, milliseconds since the Unix epoch |
/// | `layout_fingerprint` | 16 lowercase hex digits: `ParameterLayout.fingerprint` (docs/PROTOCOL.md) of the tensors in data order |
/// | `rule` | JSON `{"alpha":0.6,"staleness_function":"polynomial","staleness_a":0.5,"staleness_b":0.0,"max_staleness":16}` |
/// | `dedup_window` | decimal |
/// | `dedup` | JSON `{client: {"highest": seq, "used": n (optional), "outcomes": [[seq, decision, reason, base_version, model_version, staleness or null, mixing_weight], ...]}}`, decision and reason as their wire codes, outcomes by seq: the clients' epoch 0 (clients that send no epoch) |
/// | `dedup_epochs` | only when some client has a non-zero epoch: JSON `{client: [{"epoch": e, "highest": seq, "used": n, "outcomes": [...]}, ...]}`, outcomes as in `dedup`, epochs ascending; `used` orders a client's epochs by last use (0, or absent in `dedup`, is least recent) |
/// | `optimizer` | (FedBuff, FedAvg) JSON `{"kind":"adam","steps":12}`, with the tensors `__optimizer__.m` / `.v` |
/// | `privacy` | (central DP) JSON `{"steps":12,"epsilon":1.7,"delta":1e-05,"clip":0.8,"rdp":[...]}`: the RDP accountant, one value per `RDPAccountant.defaultOrders`; `clip` only with adaptive clipping |
/// | `checksum` | 8 lowercase hex digits, see below |
///
/// The checksum is CRC-32/IEEE (zlib's `crc32`) of, in this order:
///   1. the data section: the file's bytes from offset 8 + N to the end;
///   2. for every `__metadata__` entry except `checksum`, in ascending order of the key's UTF-8
///      bytes (= Python's `sorted()` of the keys): the key's UTF-8 bytes, one 0x00 byte, the
///      value's UTF-8 bytes, one 0x00 byte.
/// In Python:
///
///     crc = zlib.crc32(data)
///     for k in sorted(k for k in meta if k != "checksum"):
///         crc = zlib.crc32(k.encode() + b"\0" + meta[k].encode() + b"\0", crc)
///
/// The tensor entries of the header are covered by the safetensors validation and by
/// `layout_fingerprint` (which the checksum covers), so any changed byte is detected.
public enum Checkpoint {
    public static let format = "apiary-checkpoint-1"
    public static let fileExtension = "safetensors"
    static let fileNamePrefix = "checkpoint-"
    static let tempFilePrefix = ".tmp-"

    // MARK: Metadata keys

    static let keyFormat = "format"
    static let keyRunID = "run_id"
    static let keyVersion = "version"
    static let keyCreatedAt = "created_at_ms"
    static let keyFingerprint = "layout_fingerprint"
    static let keyRule = "rule"
    static let keyDedupWindow = "dedup_window"
    static let keyDedup = "dedup"
    static let keyDedupEpochs = "dedup_epochs"
    static let keyChecksum = "checksum"
    static let keyOptimizer = "optimizer"
    static let keyPrivacy = "privacy"
    /// Names of the optimizer's tensors, after the model's (not part of the model layout).
    static let optimizerPrefix = "__optimizer__."

    /// The file name of the checkpoint of `version`.
    public static func fileName(version: UInt64) -> String {
        let digits = String(version)
        return fileNamePrefix + String(repeating: "0", count: 20 - digits.count) + digits + "." + fileExtension
    }

    /// The version in a checkpoint file name, or nil when `name` is not one.
    public static func version(fileName name: String) -> UInt64? {
        let suffix = "." + fileExtension
        guard name.hasPrefix(fileNamePrefix), name.hasSuffix(suffix) else { return nil }
        let digits = name.utf8.dropFirst(fileNamePrefix.utf8.count).dropLast(suffix.utf8.count)
        guard digits.count == 20, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(String(decoding: digits, as: UTF8.self))
    }

    // MARK: Encoding

    /// The bytes of the checkpoint file of `state`.
    public static func encode(_ state: CheckpointState) throws(CheckpointError) -> [UInt8] {
        guard state.parameters.count == state.layout.parameterCount else {
            throw .invalidState("\(state.parameters.count) parameters for a layout of \(state.layout.parameterCount)")
        }
        if let e = state.rule.validationError() { throw .invalidState(e) }
        var metadata: [String: String] = [
            keyFormat: format,
            keyRunID: hex64(state.runID),
            keyVersion: String(state.version),
            keyCreatedAt: String(state.createdAtMilliseconds),
            keyFingerprint: hex64(state.layout.fingerprint),
            keyRule: ruleJSON(state.rule),
            keyDedupWindow: String(state.dedupWindow),
            keyDedup: dedupJSON(state.dedup.compactMapValues { $0[0] }),
        ]
        if let p = state.privacy {
            guard p.accountant != nil, !p.epsilon.isNaN, p.epsilon >= 0, p.delta > 0, p.delta < 1 else {
                throw .invalidState("privacy accountant state: \(p.rdp.count) RDP values (\(RDPAccountant.defaultOrders.count) needed, each >= 0), epsilon \(p.epsilon), delta \(p.delta)")
            }
            if let c = p.clip, !(c.isFinite && c > 0) { throw .invalidState("privacy clip \(c) is not a positive number") }
            metadata[keyPrivacy] = #"{"steps":\#(p.steps),"epsilon":\#(JSONText.number(p.epsilon)),"delta":\#(JSONText.number(p.delta)),"#
                + (p.clip.map { #""clip":\#(JSONText.number($0)),"# } ?? "")
                + #""rdp":["# + p.rdp.map(JSONText.number).joined(separator: ",") + "]}"
        }
        let epochs = state.dedup.compactMapValues { e in e.contains { $0.key != 0 } ? e.filter { $0.key != 0 } : nil }
        if !epochs.isEmpty { metadata[keyDedupEpochs] = dedupEpochsJSON(epochs) }
        var layout = state.layout
        var values = state.parameters
        if let o = state.optimizer {
            let n = state.layout.parameterCount
            guard (o.m.isEmpty || o.m.count == n), (o.v.isEmpty || o.v.count == n) else {
                throw .invalidState("optimizer moments of \(o.m.count) / \(o.v.count) values for \(n) parameters")
            }
            metadata[keyOptimizer] = #"{"kind":"\#(o.kind)","steps":\#(o.steps)}"#
            var tensors = state.layout.tensors
            if !o.m.isEmpty { tensors.append(TensorSpec(name: optimizerPrefix + "m", shape: [n])); values += o.m }
            if !o.v.isEmpty { tensors.append(TensorSpec(name: optimizerPrefix + "v", shape: [n])); values += o.v }
            do { layout = try ParameterLayout(tensors) } catch { throw .invalidState("\(error)") }
        }
        let crc = Safetensors.withLittleEndianBytes(values) { checksum(data: $0, metadata: metadata) }
        metadata[keyChecksum] = hex32(crc)
        do {
            return try Safetensors.encode(layout: layout, parameters: values, metadata: metadata)
        } catch {
            throw .invalidState("\(error)")
        }
    }

    /// The checksum of a data section and metadata (the `checksum` entry itself is skipped).
    public static func checksum(data: UnsafeRawBufferPointer, metadata: [String: String]) -> UInt32 {
        var crc = CRC32()
        crc.update(data)
        for key in metadata.keys.sorted(by: Safetensors.utf8Less) where key != keyChecksum {
            crc.update(key.utf8)
            crc.update(CollectionOfOne(UInt8(0)))
            crc.update(metadata[key]!.utf8)
            crc.update(CollectionOfOne(UInt8(0)))
        }
        return crc.value
    }

    static func ruleJSON(_ r: FedAsync) -> String {
        let (name, a, b): (String, Double, Double) = switch r.staleness {
        case .constant: ("constant", 0, 0)
        case .polynomial(let a): ("polynomial", a, 0)
        case .hinge(let a, let b): ("hinge", a, b)
        }
        return #"{"alpha":\#(JSONText.number(r.alpha)),"staleness_function":"\#(name)","staleness_a":\#(JSONText.number(a)),"#
            + #""staleness_b":\#(JSONText.number(b)),"max_staleness":\#(r.maxStaleness)}"#
    }

    static func dedupJSON(_ dedup: [String: DedupTable<UpdateOutcome>.Entry]) -> String {
        var out = "{"
        for (i, client) in dedup.keys.sorted(by: Safetensors.utf8Less).enumerated() {
            let e = dedup[client]!
            if i > 0 { out += "," }
            out += JSONText.quoted(client) + #":{"highest":\#(e.highest),"# + (e.lastUsed == 0 ? "" : #""used":\#(e.lastUsed),"#)
            out += #""outcomes":"# + outcomesJSON(e.outcomes) + "}"
        }
        return out + "}"
    }

    static func dedupEpochsJSON(_ dedup: [String: [UInt64: DedupTable<UpdateOutcome>.Entry]]) -> String {
        var out = "{"
        for (i, client) in dedup.keys.sorted(by: Safetensors.utf8Less).enumerated() {
            if i > 0 { out += "," }
            out += JSONText.quoted(client) + ":["
            for (j, (epoch, e)) in dedup[client]!.sorted(by: { $0.key < $1.key }).enumerated() {
                if j > 0 { out += "," }
                out += #"{"epoch":\#(epoch),"highest":\#(e.highest),"used":\#(e.lastUsed),"outcomes":"# + outcomesJSON(e.outcomes) + "}"
            }
            out += "]"
        }
        return out + "}"
    }

    static func outcomesJSON(_ outcomes: [UInt64: UpdateOutcome]) -> String {
        var out = "["
        for (j, seq) in outcomes.keys.sorted().enumerated() {
            let o = outcomes[seq]!
            if j > 0 { out += "," }
            out += "[\(seq),\(o.decision.rawValue),\(o.reason.rawValue),\(o.baseVersion),\(o.modelVersion),"
            out += (o.staleness.map { String($0) } ?? "null") + "," + JSONText.number(o.mixingWeight) + "]"
        }
        return out + "]"
    }

    // MARK: Decoding

    /// Reads and validates the bytes of a checkpoint file.
    public static func decode(_ bytes: [UInt8]) throws(CheckpointError) -> CheckpointState {
        let r = try inspect(bytes)
        if r.storedChecksum != r.computedChecksum {
            throw .checksumMismatch(expected: r.storedChecksum, got: r.computedChecksum)
        }
        guard let state = r.state else { throw r.stateError ?? .badMetadata(key: "", reason: "unreadable") }
        return state
    }

    /// Decodes the safetensors container and the checkpoint metadata of `bytes` without
    /// failing on a checksum mismatch (for `apiary checkpoint inspect`). Throws for an invalid
    /// container, a foreign format or an unreadable checksum entry.
    public static func inspect(_ bytes: [UInt8]) throws(CheckpointError) -> CheckpointInspection {
        let decoded: Safetensors.Decoded
        do {
            decoded = try Safetensors.decode(bytes)
        } catch {
            switch error {
            case .truncated(let e, let a): throw .truncated(expected: e, actual: a)
            case .headerLengthOutOfBounds(let n, let size):
                throw .truncated(expected: 8 + Int(clamping: min(n, Safetensors.maxHeaderLength)), actual: size)
            default: throw .badHeader(error)
            }
        }
        let meta = decoded.metadata
        guard let f = meta[keyFormat], f == format else { throw .unsupportedFormat(meta[keyFormat]) }
        guard let c = meta[keyChecksum] else { throw .badMetadata(key: keyChecksum, reason: "missing") }
        guard c.utf8.count == 8, let stored = parseHex32(c) else { throw .badMetadata(key: keyChecksum, reason: "not 8 hex digits: \(c)") }
        let computed = bytes.withUnsafeBytes { raw in
            checksum(data: UnsafeRawBufferPointer(rebasing: raw[decoded.dataOffset...]), metadata: meta)
        }
        var result = CheckpointInspection(byteCount: bytes.count, headerLength: decoded.headerLength,
                                          layout: decoded.layout, metadata: meta,
                                          storedChecksum: stored, computedChecksum: computed)
        do {
            result.state = try state(from: decoded)
        } catch {
            result.stateError = error
        }
        return result
    }

    static func state(from decoded: Safetensors.Decoded) throws(CheckpointError) -> CheckpointState {
        let meta = decoded.metadata
        // The optimizer's tensors (after the model's) are peeled off before the layout checks.
        var d = decoded
        var moments: [String: [Float]] = [:]
        while let last = d.layout.tensors.last, last.name.hasPrefix(optimizerPrefix) {
            let n = last.count
            moments[String(last.name.dropFirst(optimizerPrefix.count))] = Array(d.parameters.suffix(n))
            d.parameters.removeLast(n)
            do { d.layout = try ParameterLayout(Array(d.layout.tensors.dropLast())) } catch {
                throw .badMetadata(key: keyOptimizer, reason: "a checkpoint of optimizer tensors only")
            }
        }
        func value(_ key: String) throws(CheckpointError) -> String {
            guard let v = meta[key] else { throw .badMetadata(key: key, reason: "missing") }
            return v
        }
        func decimal(_ key: String) throws(CheckpointError) -> UInt64 {
            let s = try value(key)
            guard s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let v = UInt64(s) else {
                throw .badMetadata(key: key, reason: "not a decimal integer: \(s)")
            }
            return v
        }
        func hexValue(_ key: String) throws(CheckpointError) -> UInt64 {
            let s = try value(key)
            guard s.utf8.count == 16, let v = parseHex64(s) else { throw .badMetadata(key: key, reason: "not 16 hex digits: \(s)") }
            return v
        }
        let fingerprint = try hexValue(keyFingerprint)
        guard fingerprint == d.layout.fingerprint else {
            throw .layoutFingerprintMismatch(expected: fingerprint, got: d.layout.fingerprint)
        }
        let runID = try hexValue(keyRunID)
        let version = try decimal(keyVersion)
        let createdText = try value(keyCreatedAt)
        guard let created = Int64(createdText) else { throw .badMetadata(key: keyCreatedAt, reason: "not an integer: \(createdText)") }
        let window = try decimal(keyDedupWindow)
        let rule = try parseRule(try value(keyRule))
        var dedup = try parseDedup(try value(keyDedup)).mapValues { [UInt64(0): $0] }
        if let text = meta[keyDedupEpochs] {
            // Checkpoints written before client epochs have no such entry: all epoch 0.
            for (client, epochs) in try parseDedupEpochs(text) {
                dedup[client, default: [:]].merge(epochs) { old, _ in old }
            }
        }
        var state = CheckpointState(runID: runID, version: version, layout: d.layout, parameters: d.parameters, rule: rule,
                                    dedupWindow: window, dedup: dedup, createdAtMilliseconds: created)
        if let text = meta[keyOptimizer] {
            func bad(_ r: String) -> CheckpointError { .badMetadata(key: keyOptimizer, reason: r) }
            let v: JSONValue
            do { v = try JSONText.parse(text) } catch { throw bad(error.description) }
            guard let kind = v["kind"]?.string, let steps = v["steps"].flatMap(JSONText.double), steps >= 0, steps == steps.rounded() else {
                throw bad("needs kind and steps")
            }
            let m = moments["m"] ?? [], vv = moments["v"] ?? []
            guard (m.isEmpty || m.count == d.parameters.count), (vv.isEmpty || vv.count == d.parameters.count) else {
                throw bad("moments do not match the model's \(d.parameters.count) parameters")
            }
            state.optimizer = CheckpointState.OptimizerState(kind: kind, steps: UInt64(steps), m: m, v: vv)
        } else if !moments.isEmpty {
            throw .badMetadata(key: keyOptimizer, reason: "missing, but the file has optimizer tensors")
        }
        if let text = meta[keyPrivacy] { state.privacy = try parsePrivacy(text) }
        return state
    }

    static func parsePrivacy(_ text: String) throws(CheckpointError) -> CheckpointState.PrivacyState {
        func bad(_ r: String) -> CheckpointError { .badMetadata(key: keyPrivacy, reason: r) }
        let v: JSONValue
        do { v = try JSONText.parse(text) } catch { throw bad(error.description) }
        guard let steps = v["steps"]?.uint64, let epsilon = v["epsilon"].flatMap(JSONText.double), epsilon >= 0,
              let delta = v["delta"].flatMap(JSONText.double), delta > 0, delta < 1, case .array(let list)? = v["rdp"] else {
            throw bad("needs steps, epsilon >= 0, delta in (0, 1) and rdp")
        }
        let rdp = list.compactMap(JSONText.double)
        var clip: Double?
        if let c = v["clip"] {
            guard let d = JSONText.double(c), d.isFinite, d > 0 else { throw bad("clip is not a positive number") }
            clip = d
        }
        let p = CheckpointState.PrivacyState(steps: steps, rdp: rdp, epsilon: epsilon, delta: delta, clip: clip)
        guard rdp.count == list.count, p.accountant != nil else {
            throw bad("rdp needs \(RDPAccountant.defaultOrders.count) numbers >= 0, got \(list.count)")
        }
        return p
    }

    static func parseRule(_ text: String) throws(CheckpointError) -> FedAsync {
        func bad(_ r: String) -> CheckpointError { .badMetadata(key: keyRule, reason: r) }
        let v: JSONValue
        do { v = try JSONText.parse(text) } catch { throw bad(error.description) }
        guard case .object = v else { throw bad("not a JSON object") }
        guard let alpha = v["alpha"].flatMap(JSONText.double) else { throw bad("alpha is missing or not a number") }
        guard let fn = v["staleness_function"]?.string else { throw bad("staleness_function is missing") }
        let a = v["staleness_a"].flatMap(JSONText.double) ?? 0
        let b = v["staleness_b"].flatMap(JSONText.double) ?? 0
        let staleness: StalenessFunction
        switch fn {
        case "constant": staleness = .constant
        case "polynomial": staleness = .polynomial(a: a)
        case "hinge": staleness = .hinge(a: a, b: b)
        default: throw bad("unknown staleness_function '\(fn)'")
        }
        guard let maxStaleness = v["max_staleness"]?.uint64 else { throw bad("max_staleness is missing or not an integer") }
        let rule = FedAsync(alpha: alpha, staleness: staleness, maxStaleness: maxStaleness)
        if let e = rule.validationError() { throw bad(e) }
        return rule
    }

    static func parseDedup(_ text: String) throws(CheckpointError) -> [String: DedupTable<UpdateOutcome>.Entry] {
        func bad(_ r: String) -> CheckpointError { .badMetadata(key: keyDedup, reason: r) }
        let v: JSONValue
        do { v = try JSONText.parse(text) } catch { throw bad(error.description) }
        guard case .object(let clients) = v else { throw bad("not a JSON object") }
        var out: [String: DedupTable<UpdateOutcome>.Entry] = [:]
        for (client, e) in clients {
            guard case .object = e, let highest = e["highest"]?.uint64, case .array(let list)? = e["outcomes"] else {
                throw bad("client '\(client)': expected {\"highest\": integer, \"outcomes\": [...]}")
            }
            let used = e["used"]?.uint64 ?? 0  // absent in checkpoints written before client epochs
            out[client] = DedupTable<UpdateOutcome>.Entry(highest: highest, outcomes: try parseOutcomes(list, client: client, key: keyDedup),
                                                          lastUsed: used)
        }
        return out
    }

    static func parseDedupEpochs(_ text: String) throws(CheckpointError) -> [String: [UInt64: DedupTable<UpdateOutcome>.Entry]] {
        func bad(_ r: String) -> CheckpointError { .badMetadata(key: keyDedupEpochs, reason: r) }
        let v: JSONValue
        do { v = try JSONText.parse(text) } catch { throw bad(error.description) }
        guard case .object(let clients) = v else { throw bad("not a JSON object") }
        var out: [String: [UInt64: DedupTable<UpdateOutcome>.Entry]] = [:]
        for (client, list) in clients {
            guard case .array(let items) = list else { throw bad("client '\(client)': expected an array of epochs") }
            var epochs: [UInt64: DedupTable<UpdateOutcome>.Entry] = [:]
            for e in items {
                guard case .object = e, let epoch = e["epoch"]?.uint64, epoch != 0, let highest = e["highest"]?.uint64,
                      let used = e["used"]?.uint64, case .array(let outcomes)? = e["outcomes"] else {
                    throw bad("client '\(client)': expected {\"epoch\": non-zero integer, \"highest\": integer, \"used\": integer, \"outcomes\": [...]}")
                }
                guard epochs[epoch] == nil else { throw bad("client '\(client)': epoch \(epoch) appears twice") }
                epochs[epoch] = DedupTable<UpdateOutcome>.Entry(highest: highest, outcomes: try parseOutcomes(outcomes, client: client, key: keyDedupEpochs),
                                                                lastUsed: used)
            }
            out[client] = epochs
        }
        return out
    }

    static func parseOutcomes(_ list: [JSONValue], client: String, key: String) throws(CheckpointError) -> [UInt64: UpdateOutcome] {
        func bad(_ r: String) -> CheckpointError { .badMetadata(key: key, reason: r) }
        var outcomes: [UInt64: UpdateOutcome] = [:]
        for item in list {
            guard case .array(let f) = item, f.count == 7,
                  let seq = f[0].uint64,
                  let d = f[1].uint64, d <= 255, let decision = Decision(rawValue: UInt8(d)),
                  let r = f[2].uint64, r <= 255, let reason = RejectReason(rawValue: UInt8(r)),
                  let base = f[3].uint64, let model = f[4].uint64,
                  let weight = JSONText.double(f[6])
            else { throw bad("client '\(client)': invalid outcome") }
            let staleness: UInt64?
            if case .null = f[5] { staleness = nil } else {
                guard let s = f[5].uint64 else { throw bad("client '\(client)': invalid staleness") }
                staleness = s
            }
            guard outcomes[seq] == nil else { throw bad("client '\(client)': seq \(seq) appears twice") }
            outcomes[seq] = UpdateOutcome(decision: decision, reason: reason, baseVersion: base, modelVersion: model,
                                          staleness: staleness, mixingWeight: weight)
        }
        return outcomes
    }

    static func parseHex64(_ s: String) -> UInt64? {
        guard !s.isEmpty, s.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        return UInt64(s, radix: 16)
    }

    static func parseHex32(_ s: String) -> UInt32? {
        parseHex64(s).flatMap { UInt32(exactly: $0) }
    }

    /// 16 lowercase hex digits.
    public static func hex64(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// 8 lowercase hex digits.
    public static func hex32(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

/// What `Checkpoint.inspect` found in a file.
public struct CheckpointInspection: Sendable {
    /// The file size.
    public var byteCount: Int
    /// N, the JSON header's length in bytes.
    public var headerLength: Int
    public var layout: ParameterLayout
    public var metadata: [String: String]
    public var storedChecksum: UInt32
    public var computedChecksum: UInt32
    /// The decoded state, when the metadata entries are readable.
    public var state: CheckpointState?
    /// Why `state` is nil.
    public var stateError: CheckpointError?

    public var checksumOK: Bool { storedChecksum == computedChecksum }

    /// Byte offsets `[begin, end)` of tensor `i` in the data section.
    public func dataOffsets(ofTensor i: Int) -> Range<Int> {
        let r = layout.range(ofTensor: i)
        return (r.lowerBound * 4)..<(r.upperBound * 4)
    }
}
