@testable import ApiaryCore
import Testing

/// A safetensors file with `json` as its header (padded with spaces to 8 bytes) and `data`.
func safetensorsFile(json: String, data: [UInt8], pad: Bool = true) -> [UInt8] {
    var header = Array(json.utf8)
    while pad && header.count % 8 != 0 { header.append(0x20) }
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
    return out + header + data
}

/// The `SafetensorsError` that `body` throws, or nil.
func safetensorsError(_ body: () throws -> Any) -> SafetensorsError? {
    do {
        _ = try body()
        return nil
    } catch let e as SafetensorsError {
        return e
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("Safetensors")
struct SafetensorsTests {
    let tiny = try! ParameterLayout([TensorSpec(name: "w", shape: [2])])

    @Test("golden bytes of a tiny tensor: length prefix, JSON keys, padding, data")
    func golden() throws {
        let bytes = try Safetensors.encode(layout: tiny, parameters: [1.0, -2.0], metadata: ["k": "v"])
        let json = #"{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        #expect(json.utf8.count == 79)
        let expected: [UInt8] = [80, 0, 0, 0, 0, 0, 0, 0] + Array(json.utf8) + [0x20]
            + [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0]
        #expect(bytes == expected)
        #expect((8 + 80) % 8 == 0)
        let d = try Safetensors.decode(bytes)
        #expect(d.layout == tiny)
        #expect(d.parameters == [1.0, -2.0])
        #expect(d.metadata == ["k": "v"])
        #expect(d.headerLength == 80)
        #expect(d.dataOffset == 88)
    }

    @Test("a file written by the reference implementation (Python safetensors 0.8.0) decodes, and encoding gives the same bytes")
    func reference() throws {
        // safetensors.numpy.save({"bias": [5, -6], "weight": [[1, 2, 3], [4, 5, 6]], "empty": zeros((0, 3))},
        //                        metadata={"k": "v"}), all float32.
        let hex = "d0000000000000007b225f5f6d657461646174615f5f223a7b226b223a2276227d2c2262696173223a7b2264747970"
            + "65223a22463332222c227368617065223a5b325d2c22646174615f6f666673657473223a5b302c385d7d2c22656d70"
            + "7479223a7b226474797065223a22463332222c227368617065223a5b302c335d2c22646174615f6f66667365747322"
            + "3a5b382c385d7d2c22776569676874223a7b226474797065223a22463332222c227368617065223a5b322c335d2c22"
            + "646174615f6f666673657473223a5b382c33325d7d7d2020202020200000a0400000c0c00000803f00000040000040"
            + "40000080400000a0400000c040"
        var bytes: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let h = it.next(), let l = it.next() { bytes.append(UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)!) }
        #expect(bytes.count == 248)
        let d = try Safetensors.decode(bytes)
        let layout = try ParameterLayout([TensorSpec(name: "bias", shape: [2]), TensorSpec(name: "empty", shape: [0, 3]),
                                          TensorSpec(name: "weight", shape: [2, 3])])
        #expect(d.layout == layout)
        #expect(d.parameters == [5, -6, 1, 2, 3, 4, 5, 6])
        #expect(d.metadata == ["k": "v"])
        #expect(try Safetensors.encode(layout: layout, parameters: d.parameters, metadata: ["k": "v"]) == bytes)
    }

    @Test("the data section is 8-byte aligned for every header length")
    func alignment() throws {
        for n in 0..<12 {
            let bytes = try Safetensors.encode(layout: tiny, parameters: [0, 0], metadata: ["key": String(repeating: "x", count: n)])
            let d = try Safetensors.decode(bytes)
            #expect(d.dataOffset % 8 == 0)
            #expect(bytes[8..<d.dataOffset].last.map { $0 == 0x20 || $0 == UInt8(ascii: "}") } == true)
        }
    }

    @Test("round trip: several tensors, a scalar, an empty tensor, odd names and metadata")
    func roundTrip() throws {
        let layout = try ParameterLayout([
            TensorSpec(name: "layer.0/W \"quoted\" ü", shape: [3, 2]),
            TensorSpec(name: "empty", shape: [0, 4]),
            TensorSpec(name: "scalar", shape: []),
            TensorSpec(name: "b\n\\", shape: [2]),
        ])
        let params: [Float] = [1, -0.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude, .nan, 3.25, 7, -8, 9]
        let metadata = ["a": "1", "ü": "\u{1}\"\\/", "z": "{\"json\":[1,2]}", "": ""]
        let bytes = try Safetensors.encode(layout: layout, parameters: params, metadata: metadata)
        let d = try Safetensors.decode(bytes)
        #expect(d.layout == layout)
        #expect(d.parameters.map(\.bitPattern) == params.map(\.bitPattern))
        #expect(d.metadata == metadata)
    }

    @Test("tensors come back in data order whatever the header order; whitespace and no padding are fine")
    func foreignOrder() throws {
        let json = #" { "b" : {"data_offsets":[8,12],"shape":[1],"dtype":"F32"}, "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]} } "#
        let data = float32Bytes([1, 2, 3])
        let d = try Safetensors.decode(safetensorsFile(json: json, data: data, pad: false))
        #expect(d.layout.tensors.map(\.name) == ["a", "b"])
        #expect(d.parameters == [1, 2, 3])
        #expect(d.metadata == [:])
    }

    @Test("encoding rejects a parameter count that does not match and the reserved name")
    func encodeErrors() throws {
        #expect(safetensorsError { try Safetensors.encode(layout: tiny, parameters: [1], metadata: [:]) }
            == .parameterCountMismatch(expected: 2, got: 1))
        let reserved = try ParameterLayout([TensorSpec(name: "__metadata__", shape: [1])])
        #expect(safetensorsError { try Safetensors.encode(layout: reserved, parameters: [1], metadata: [:]) }
            == .reservedName("__metadata__"))
    }

    func decodeError(_ json: String, _ data: [UInt8], pad: Bool = true) -> SafetensorsError? {
        safetensorsError { try Safetensors.decode(safetensorsFile(json: json, data: data, pad: pad)) }
    }

    @Test("short files and bad header lengths")
    func lengths() throws {
        let good = try Safetensors.encode(layout: tiny, parameters: [1, 2], metadata: [:])
        for n in 0..<8 {
            #expect(safetensorsError { try Safetensors.decode(Array(good.prefix(n))) } == .truncated(expected: 8, actual: n))
        }
        // Cut inside the header: the length prefix points past the end.
        for n in [8, 9, 20, good.count - 9] {
            #expect(safetensorsError { try Safetensors.decode(Array(good.prefix(n))) }
                == .headerLengthOutOfBounds(length: UInt64(good.count - 16), fileSize: n))
        }
        // Cut inside the data.
        for n in [good.count - 8, good.count - 5, good.count - 1] {
            #expect(safetensorsError { try Safetensors.decode(Array(good.prefix(n))) } == .truncated(expected: good.count, actual: n))
        }
        // Header length larger than the file, and absurdly large.
        var big = good
        big.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(good.count).littleEndian, Array.init))
        #expect(safetensorsError { try Safetensors.decode(big) } == .headerLengthOutOfBounds(length: UInt64(good.count), fileSize: good.count))
        big.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(safetensorsError { try Safetensors.decode(big) } == .headerTooLarge(.max))
        // Trailing bytes.
        #expect(safetensorsError { try Safetensors.decode(good + [0]) } == .trailingBytes(count: 1))
    }

    @Test("invalid JSON headers")
    func badJSON() {
        let data = float32Bytes([1, 2])
        let entry = #""w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#
        for json in ["", "   ", "[]", "{", "{\(entry)", "{\(entry)}x", "{\(entry),}", "{'w':1}", "{\(entry),\(entry)}",
                     "{\"\\ud800\":1}", "{\"a\u{1}\":1}", "\u{FEFF}{\(entry)}",
                     String(repeating: "[", count: 100) + String(repeating: "]", count: 100)] {
            let e = decodeError(json, data)
            guard case .badHeader = e else {
                Issue.record("\(json.debugDescription): \(String(describing: e))")
                continue
            }
        }
        // Invalid UTF-8 in a key.
        var bytes = safetensorsFile(json: "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data: data)
        bytes[10] = 0xFF
        guard case .badHeader? = safetensorsError({ try Safetensors.decode(bytes) }) else {
            Issue.record("invalid UTF-8 accepted")
            return
        }
    }

    @Test("invalid tensor entries")
    func badEntries() {
        let data = float32Bytes([1, 2])
        func tensor(_ fields: String) -> String { "{\"w\":{\(fields)}}" }
        #expect(decodeError(tensor(#""dtype":"F64","shape":[1],"data_offsets":[0,8]"#), data) == .unsupportedDType(name: "w", dtype: "F64"))
        #expect(decodeError(tensor(#""dtype":"F16","shape":[4],"data_offsets":[0,8]"#), data) == .unsupportedDType(name: "w", dtype: "F16"))
        #expect(decodeError(tensor(#""dtype":"F32","shape":[3],"data_offsets":[0,8]"#), data)
            == .offsetsMismatchShape(name: "w", shape: [3], begin: 0, end: 8))
        #expect(decodeError(tensor(#""dtype":"F32","shape":[2],"data_offsets":[8,0]"#), data) == .invalidOffsets(name: "w", begin: 8, end: 0))
        #expect(decodeError(tensor(#""dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]"#), data)
            == .offsetsMismatchShape(name: "w", shape: [2], begin: 0, end: .max))
        #expect(decodeError(tensor(#""dtype":"F32","shape":[2],"data_offsets":[8,16]"#), data)
            == .gapInData(name: "w", expectedBegin: 0, begin: 8))
        for fields in [#""shape":[2],"data_offsets":[0,8]"#, #""dtype":"F32","data_offsets":[0,8]"#, #""dtype":"F32","shape":[2]"#,
                       #""dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1"#, #""dtype":"F32","shape":[-2],"data_offsets":[0,8]"#,
                       #""dtype":"F32","shape":[2.0],"data_offsets":[0,8]"#, #""dtype":"F32","shape":[2],"data_offsets":[0]"#,
                       #""dtype":"F32","shape":"2","data_offsets":[0,8]"#, #""dtype":1,"shape":[2],"data_offsets":[0,8]"#,
                       #""dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]"#] {
            guard case .invalidTensor(name: "w", _)? = decodeError(tensor(fields), data) else {
                Issue.record("accepted \(fields): \(String(describing: decodeError(tensor(fields), data)))")
                continue
            }
        }
        #expect(decodeError(#"{"w":[1]}"#, data) == .invalidTensor(name: "w", reason: "not an object"))
        #expect(decodeError(#"{"__metadata__":{"a":1}}"#, []) == .badMetadata("the value of 'a' is not a string"))
        #expect(decodeError(#"{"__metadata__":[]}"#, []) == .badMetadata("__metadata__ is not an object"))
        #expect(decodeError(#"{"__metadata__":{}}"#, []) == .invalidLayout(.empty))
        #expect(decodeError(#"{"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#, float32Bytes([1]))
            == .invalidLayout(.invalidShape("w", [1, 1, 1, 1, 1, 1, 1, 1, 1])))
    }

    @Test("overlapping, duplicated and out-of-order offsets")
    func overlaps() {
        let data = float32Bytes([1, 2, 3])
        #expect(decodeError(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data)
            == .overlappingOffsets("a", "b"))
        #expect(decodeError(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data)
            == .overlappingOffsets("a", "c"))
        #expect(decodeError(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#, data)
            == .overlappingOffsets("a", "b"))
        #expect(decodeError(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data)
            == .overlappingOffsets("a", "b"))
    }

    @Test("every truncation and every single-byte change of a file is either rejected or decodes to something valid")
    func noTraps() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [2, 2]), TensorSpec(name: "b", shape: [2])])
        let good = try Safetensors.encode(layout: layout, parameters: [1, 2, 3, 4, 5, 6], metadata: ["m": "x"])
        for n in 0..<good.count {
            #expect(throws: SafetensorsError.self) { try Safetensors.decode(Array(good.prefix(n))) }
        }
        var rng = SplitMix64(seed: 7)
        for i in 0..<good.count {
            for _ in 0..<3 {
                var b = good
                b[i] = UInt8.random(in: 0...255, using: &rng)
                if let d = try? Safetensors.decode(b) {
                    #expect(d.parameters.count == d.layout.parameterCount)
                }
            }
        }
    }
}
