@testable import ApiaryCore
import Foundation
import Testing

/// A checkpoint state with a 2-tensor layout and a dedup table of two clients.
func sampleCheckpointState(version: UInt64 = 42) -> CheckpointState {
    let layout = try! ParameterLayout([TensorSpec(name: "W", shape: [3, 2]), TensorSpec(name: "b", shape: [2])])
    let parameters: [Float] = [0.5, -1.25, 3e-39, -0.0, .greatestFiniteMagnitude, 7, -8.5, Float(version)]
    let merged = UpdateOutcome(decision: .merged, reason: .none, baseVersion: 39, modelVersion: 41, staleness: 2, mixingWeight: 0.1 / 3)
    let stale = UpdateOutcome(decision: .rejected, reason: .tooStale, baseVersion: 1, modelVersion: 41, staleness: 40, mixingWeight: 0)
    let unknown = UpdateOutcome(decision: .rejected, reason: .unknownBase, baseVersion: 99, modelVersion: 40, staleness: nil, mixingWeight: 0)
    return CheckpointState(
        runID: 0x0123_4567_89AB_CDEF, version: version, layout: layout, parameters: parameters,
        rule: FedAsync(alpha: 0.6, staleness: .hinge(a: 10, b: 4), maxStaleness: 16),
        dedupWindow: 256,
        dedup: [
            "client-1": [0: .init(highest: 12, outcomes: [11: merged, 12: stale])],
            "ü \"quoted\"\n": [0: .init(highest: 3, outcomes: [3: unknown])],
            "idle": [0: .init(highest: 0, outcomes: [:])],
        ],
        createdAtMilliseconds: 1_700_000_000_123
    )
}

/// The `CheckpointError` that `body` throws, or nil.
func checkpointError(_ body: () throws -> Any) -> CheckpointError? {
    do {
        _ = try body()
        return nil
    } catch let e as CheckpointError {
        return e
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

/// `bytes` with the first occurrence of `old` replaced by `new` (same length), in the header.
func replacingHeaderText(_ old: String, with new: String, in bytes: [UInt8]) -> [UInt8] {
    let o = Array(old.utf8), n = Array(new.utf8)
    precondition(o.count == n.count)
    for i in 0...(bytes.count - o.count) where Array(bytes[i..<(i + o.count)]) == o {
        var b = bytes
        b.replaceSubrange(i..<(i + o.count), with: n)
        return b
    }
    preconditionFailure("\(old) not found")
}

@Suite("Checkpoint encoding")
struct CheckpointEncodingTests {
    @Test("round trip of a state with a 2-tensor layout and a dedup table")
    func roundTrip() throws {
        let s = sampleCheckpointState()
        let bytes = try Checkpoint.encode(s)
        let back = try Checkpoint.decode(bytes)
        #expect(back == s)
        #expect(back.dedup["client-1"]?[0]?.outcomes[11]?.mixingWeight == 0.1 / 3)
        #expect(back.dedup["ü \"quoted\"\n"]?[0]?.outcomes[3]?.staleness == nil)
        #expect(back.dedupTable.window == 256)
        #expect(back.dedupTable.clientCount == 3)
        // Deterministic output.
        #expect(try Checkpoint.encode(back) == bytes)
    }

    @Test("the server optimizer's kind, steps and moments round-trip; the model layout stays the model's")
    func optimizerStateRoundTrip() throws {
        var s = sampleCheckpointState()
        s.optimizer = .init(kind: "adam", steps: 17, m: (0..<8).map { Float($0) * 0.5 }, v: (0..<8).map { Float($0) * 0.25 })
        let back = try Checkpoint.decode(try Checkpoint.encode(s))
        #expect(back.optimizer == s.optimizer)
        #expect(back.layout == s.layout && back.parameters == s.parameters)
        // Momentum keeps no second moment: one tensor only.
        s.optimizer = .init(kind: "momentum", steps: 3, m: [Float](repeating: 1, count: 8), v: [])
        #expect(try Checkpoint.decode(try Checkpoint.encode(s)).optimizer == s.optimizer)
        // Moments that do not match the model are refused at write time.
        s.optimizer = .init(kind: "adam", steps: 1, m: [1, 2], v: [1, 2])
        #expect(checkpointError { try Checkpoint.encode(s) } != nil)
    }

    @Test("round trip of every staleness function and extreme values")
    func rules() throws {
        for f in [StalenessFunction.constant, .polynomial(a: 0.5), .hinge(a: 1e-300, b: 1e300)] {
            var s = sampleCheckpointState(version: .max)
            s.rule = FedAsync(alpha: 1, staleness: f, maxStaleness: .max)
            s.runID = .max
            s.createdAtMilliseconds = .min
            s.dedupWindow = 1
            s.dedup = ["c": [.max: .init(highest: .max, outcomes: [.max: .init(decision: .duplicate, reason: .duplicate, baseVersion: .max,
                                                                                 modelVersion: .max, staleness: .max, mixingWeight: .nan)],
                                         lastUsed: .max)]]
            let back = try Checkpoint.decode(Checkpoint.encode(s))
            #expect(back.rule == s.rule)
            #expect(back.runID == .max && back.version == .max && back.createdAtMilliseconds == .min)
            #expect(back.dedup["c"]?[.max]?.outcomes[.max]?.mixingWeight.isNaN == true)
        }
    }

    @Test("the metadata holds the documented keys")
    func metadata() throws {
        let s = sampleCheckpointState()
        let d = try Safetensors.decode(Checkpoint.encode(s))
        #expect(Set(d.metadata.keys) == ["format", "run_id", "version", "created_at_ms", "layout_fingerprint", "rule",
                                         "dedup_window", "dedup", "checksum"])
        #expect(d.metadata["format"] == "apiary-checkpoint-1")
        #expect(d.metadata["run_id"] == "0123456789abcdef")
        #expect(d.metadata["version"] == "42")
        #expect(d.metadata["created_at_ms"] == "1700000000123")
        #expect(d.metadata["dedup_window"] == "256")
        #expect(d.metadata["rule"] == #"{"alpha":0.6,"staleness_function":"hinge","staleness_a":10.0,"staleness_b":4.0,"max_staleness":16}"#)
        #expect(d.metadata["dedup"] == #"{"client-1":{"highest":12,"outcomes":[[11,1,0,39,41,2,0.03333333333333333],[12,2,6,1,41,40,0.0]]},"idle":{"highest":0,"outcomes":[]},"ü \"quoted\"\n":{"highest":3,"outcomes":[[3,2,7,99,40,null,0.0]]}}"#)
        #expect(d.metadata["checksum"]?.count == 8)
        #expect(d.layout == s.layout)
        #expect(d.dataOffset % 8 == 0)
    }

    @Test("the checksum follows the documented rule")
    func checksumRule() throws {
        let bytes = try Checkpoint.encode(sampleCheckpointState())
        let d = try Safetensors.decode(bytes)
        var rule: [UInt8] = Array(bytes[d.dataOffset...])
        for key in d.metadata.keys.sorted() where key != "checksum" {
            rule += Array(key.utf8) + [0] + Array(d.metadata[key]!.utf8) + [0]
        }
        #expect(Checkpoint.hex32(CRC32.checksum(rule)) == d.metadata["checksum"])
    }

    @Test("writing rejects a state whose parameters do not match the layout, or an invalid rule")
    func invalidState() {
        var s = sampleCheckpointState()
        s.parameters.removeLast()
        guard case .invalidState? = checkpointError({ try Checkpoint.encode(s) }) else { Issue.record("accepted"); return }
        s = sampleCheckpointState()
        s.rule.alpha = .nan
        guard case .invalidState? = checkpointError({ try Checkpoint.encode(s) }) else { Issue.record("accepted"); return }
    }
}

@Suite("Checkpoint corruption")
struct CheckpointCorruptionTests {
    let good = try! Checkpoint.encode(sampleCheckpointState())
    var headerEnd: Int { 8 + Int(good[0]) + Int(good[1]) << 8 + Int(good[2]) << 16 }

    @Test("truncation at any of several lengths is .truncated")
    func truncated() {
        for n in [0, 1, 7, 8, 9, 100, headerEnd - 1, headerEnd, headerEnd + 1, headerEnd + 4, good.count - 4, good.count - 1] {
            let e = checkpointError { try Checkpoint.decode(Array(good.prefix(n))) }
            guard case .truncated(_, let actual)? = e, actual == n else {
                Issue.record("cut at \(n): \(String(describing: e))")
                continue
            }
        }
    }

    @Test("every flipped data byte is a checksum mismatch")
    func dataFlip() {
        for i in headerEnd..<good.count {
            for bit in [0, 7] {
                var b = good
                b[i] ^= 1 << bit
                guard case .checksumMismatch(let expected, let got)? = checkpointError({ try Checkpoint.decode(b) }) else {
                    Issue.record("flip of byte \(i) bit \(bit) not detected as a checksum mismatch")
                    continue
                }
                #expect(expected != got)
            }
        }
    }

    @Test("every flipped header byte is detected")
    func headerFlip() {
        for i in 0..<headerEnd {
            for bit in [0, 5, 7] {
                var b = good
                b[i] ^= 1 << bit
                #expect(throws: CheckpointError.self, "flip of byte \(i) bit \(bit)") { try Checkpoint.decode(b) }
            }
        }
    }

    @Test("specific header corruptions give specific errors")
    func headerErrors() throws {
        // The JSON itself.
        var b = good
        b[8] = UInt8(ascii: "[")
        guard case .badHeader(.badHeader)? = checkpointError({ try Checkpoint.decode(b) }) else { Issue.record("'['"); return }
        // A metadata value (covered by the checksum).
        b = replacingHeaderText("\"run_id\":\"0123", with: "\"run_id\":\"1123", in: good)
        guard case .checksumMismatch? = checkpointError({ try Checkpoint.decode(b) }) else { Issue.record("run_id"); return }
        // The format.
        b = replacingHeaderText("apiary-checkpoint-1", with: "apiary-checkpoint-2", in: good)
        #expect(checkpointError { try Checkpoint.decode(b) } == .unsupportedFormat("apiary-checkpoint-2"))
        // A tensor name (covered by the layout fingerprint).
        b = replacingHeaderText("\"W\":{", with: "\"V\":{", in: good)
        guard case .layoutFingerprintMismatch? = checkpointError({ try Checkpoint.decode(b) }) else { Issue.record("name"); return }
        // Wrong dtype.
        b = replacingHeaderText("\"F32\"", with: "\"F64\"", in: good)
        #expect(checkpointError { try Checkpoint.decode(b) } == .badHeader(.unsupportedDType(name: "W", dtype: "F64")))
        // Overlapping offsets: b moved into W's bytes.
        b = replacingHeaderText("[24,32]", with: "[20,28]", in: good)
        #expect(checkpointError { try Checkpoint.decode(b) } == .badHeader(.overlappingOffsets("W", "b")))
        // Header length larger than the file.
        b = good
        b.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(good.count).littleEndian, Array.init))
        #expect(checkpointError { try Checkpoint.decode(b) } == .truncated(expected: 8 + good.count, actual: good.count))
        b.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64.max, Array.init))
        #expect(checkpointError { try Checkpoint.decode(b) } == .badHeader(.headerTooLarge(.max)))
        // Trailing bytes.
        #expect(checkpointError { try Checkpoint.decode(good + [0, 0, 0, 0]) } == .badHeader(.trailingBytes(count: 4)))
    }

    @Test("a plain safetensors file is not a checkpoint")
    func foreign() throws {
        let s = sampleCheckpointState()
        let plain = try Safetensors.encode(layout: s.layout, parameters: s.parameters, metadata: [:])
        #expect(checkpointError { try Checkpoint.decode(plain) } == .unsupportedFormat(nil))
    }

    @Test("a missing or malformed entry with a matching checksum is .badMetadata")
    func badMetadata() throws {
        let s = sampleCheckpointState()
        let d = try Safetensors.decode(Checkpoint.encode(s))
        func reencode(_ change: (inout [String: String]) -> Void) throws -> [UInt8] {
            var m = d.metadata
            change(&m)
            let crc = Safetensors.withLittleEndianBytes(s.parameters) { Checkpoint.checksum(data: $0, metadata: m) }
            m["checksum"] = Checkpoint.hex32(crc)
            return try Safetensors.encode(layout: s.layout, parameters: s.parameters, metadata: m)
        }
        let cases: [(String, (inout [String: String]) -> Void)] = [
            ("version", { $0["version"] = "-1" }),
            ("version", { $0["version"] = nil }),
            ("run_id", { $0["run_id"] = "123" }),
            ("created_at_ms", { $0["created_at_ms"] = "soon" }),
            ("dedup_window", { $0["dedup_window"] = "" }),
            ("rule", { $0["rule"] = "{}" }),
            ("rule", { $0["rule"] = #"{"alpha":2,"staleness_function":"constant","max_staleness":1}"# }),
            ("rule", { $0["rule"] = #"{"alpha":0.5,"staleness_function":"cubic","max_staleness":1}"# }),
            ("dedup", { $0["dedup"] = "[" }),
            ("dedup", { $0["dedup"] = #"{"c":{"highest":1,"outcomes":[[1,9,0,0,0,null,0]]}}"# }),
            ("dedup", { $0["dedup"] = #"{"c":{"highest":1,"outcomes":[[1,1,0,0,0,null]]}}"# }),
            ("dedup", { $0["dedup"] = #"{"c":{"highest":1,"outcomes":[[1,1,0,0,0,-1,0],[1,1,0,0,0,null,0]]}}"# }),
            ("dedup", { $0["dedup"] = #"{"c":{"highest":1,"outcomes":[[1,1,0,0,0,null,0],[1,1,0,0,0,null,0]]}}"# }),
        ]
        for (key, change) in cases {
            let bytes = try reencode(change)
            let e = checkpointError { try Checkpoint.decode(bytes) }
            guard case .badMetadata(let k, _)? = e, k == key else {
                Issue.record("\(key): \(String(describing: e))")
                continue
            }
        }
        // Unknown extra keys are allowed (and covered by the checksum).
        let extra = try reencode { $0["note"] = "hello" }
        #expect(try Checkpoint.decode(extra) == s)
        let unchanged = try reencode { _ in }
        #expect(try Checkpoint.decode(unchanged) == s)
        var m = d.metadata
        m["checksum"] = "xyz"
        let bad = try Safetensors.encode(layout: s.layout, parameters: s.parameters, metadata: m)
        #expect(checkpointError { try Checkpoint.decode(bad) } == .badMetadata(key: "checksum", reason: "not 8 hex digits: xyz"))
    }

    @Test("inspect reports a checksum mismatch instead of throwing it")
    func inspect() throws {
        var b = good
        b[b.count - 1] ^= 1
        let r = try Checkpoint.inspect(b)
        #expect(!r.checksumOK)
        #expect(r.state?.version == 42)
        #expect(r.dataOffsets(ofTensor: 1) == 24..<32)
        #expect(try Checkpoint.inspect(good).checksumOK)
    }
}

@Suite("Checkpoint CRC32")
struct CheckpointCRC32Tests {
    @Test("standard test vectors")
    func vectors() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        #expect(CRC32.checksum("123456789".utf8) == 0xCBF4_3926)
    }

    @Test("incremental updates equal one pass")
    func incremental() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var c = CRC32()
        c.update(bytes[0..<3])
        c.update(bytes[3..<500].lazy.map { $0 })
        bytes[500...].withUnsafeBytes { c.update($0) }
        #expect(c.value == CRC32.checksum(bytes))
    }
}

@Suite("Checkpoint JSON reader")
struct CheckpointJSONTests {
    @Test("numbers, strings and escapes")
    func values() throws {
        let v = try JSONText.parse(#" {"a": [0, -1, 18446744073709551615, 1.5e-3, true, false, null], "s": "\u00fc\ud83d\ude00\/\t"} "#)
        guard case .array(let a)? = v["a"] else { Issue.record("a"); return }
        #expect(a[0].uint64 == 0)
        #expect(a[1].uint64 == nil && a[1].int64 == -1)
        #expect(a[2].uint64 == .max)
        #expect(a[3].double == 0.0015 && a[3].uint64 == nil && a[3].int64 == nil)
        #expect(v["s"]?.string == "ü😀/\t")
        for bad in ["01", "1.", ".5", "-", "1e", "+1", "tru", "\"\\x\"", "nul", "[1,]", "{\"a\" 1}", "\"\\ude00\""] {
            #expect(throws: JSONParseError.self, "\(bad)") { try JSONText.parse(bad) }
        }
    }
}
