@testable import ApiaryCore
import Foundation
import Testing

/// Little-endian bytes of each value.
private func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

private func f32(_ values: [Float]) -> [UInt8] { le(values.map(\.bitPattern)) }

/// The error `ModelFile.decode` throws for `bytes`, or nil.
private func modelError(_ bytes: [UInt8], exclude: [String] = []) -> ModelFileError? {
    do {
        _ = try ModelFile.decode(bytes, exclude: exclude)
        return nil
    } catch {
        return error
    }
}

@Suite("A user's model from a safetensors file")
struct ModelFileTests {
    @Test("tensors are served in name order, whatever the order of the header and the data")
    func nameOrder() throws {
        // Header order z, a, m; data order m, z, a.
        let json = #"{"z.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a.bias":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},"m":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#
        let m = try ModelFile.decode(safetensorsFile(json: json, data: f32([3, 1, 2, 0])))
        #expect(m.layout.tensors.map(\.name) == ["a.bias", "m", "z.weight"])
        #expect(m.layout.tensors.map(\.shape) == [[1], [1, 1], [2]])
        #expect(m.parameters == [0, 3, 1, 2])
        #expect(m.converted.isEmpty && m.excluded.isEmpty)
    }

    @Test("name order is by UTF-8 bytes: upper case before lower case, '.' before digits")
    func byteOrder() throws {
        let json = #"{"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"B":{"dtype":"F32","shape":[],"data_offsets":[4,8]},"a1":{"dtype":"F32","shape":[],"data_offsets":[8,12]},"a.":{"dtype":"F32","shape":[],"data_offsets":[12,16]}}"#
        let m = try ModelFile.decode(safetensorsFile(json: json, data: f32([1, 2, 3, 4])))
        #expect(m.layout.tensors.map(\.name) == ["B", "a.", "a1", "b"])
        #expect(m.parameters == [2, 4, 3, 1])
    }

    @Test("F16, BF16 and F64 tensors are converted to float32 exactly and reported")
    func conversions() throws {
        // F16: 1.0, -2.0, 65504 (largest), the smallest subnormal 2^-24, -0.
        let half: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000]
        // BF16: 1.0, -3.5.
        let bf: [UInt16] = [0x3F80, 0xC060]
        let dbl: [UInt64] = [Double(0.25).bitPattern, Double(-1e10).bitPattern]
        let json = #"{"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"g":{"dtype":"BF16","shape":[2],"data_offsets":[10,14]},"d":{"dtype":"F64","shape":[2],"data_offsets":[14,30]}}"#
        let m = try ModelFile.decode(safetensorsFile(json: json, data: le(half) + le(bf) + le(dbl)))
        #expect(m.layout.tensors.map(\.name) == ["d", "g", "h"])
        #expect(m.layout.tensors.allSatisfy { $0.dtype == .float32 })
        let expected: [Float] = [0.25, -1e10, 1, -3.5, 1, -2, 65504, Float(sign: .plus, exponent: -24, significand: 1), -0.0]
        #expect(m.parameters.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(Set(m.converted.map { "\($0.name):\($0.dtype)" }) == ["h:F16", "g:BF16", "d:F64"])
    }

    @Test("every F16 bit pattern converts like the hardware conversion")
    func halfExhaustive() {
        #if arch(x86_64) || arch(arm64)
        for bits in 0...UInt16.max {
            let want = Float(Float16(bitPattern: bits))
            let got = ModelFile.halfToFloat(bits)
            if want.isNaN { #expect(got.isNaN); continue }
            #expect(got.bitPattern == want.bitPattern, "0x\(String(bits, radix: 16))")
        }
        #endif
    }

    @Test("integer tensors are refused, each named, with the model.exclude key that leaves them out")
    func integersRefused() throws {
        let json = #"{"bn.running_mean":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[4,12]},"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[12,14]}}"#
        let file = safetensorsFile(json: json, data: f32([1]) + le([Int64(7)]) + [1, 0])
        let e = try #require(modelError(file))
        #expect(e.description.contains("'bn.num_batches_tracked' (I64)"))
        #expect(e.description.contains("'mask' (BOOL)"))
        #expect(e.description.contains("model.exclude"))
        #expect(!e.description.contains("\n"))
        // Left out by name and by pattern: served without them, and said so.
        let m = try ModelFile.decode(file, exclude: ["*.num_batches_tracked", "mask"])
        #expect(m.layout.tensors.map(\.name) == ["bn.running_mean"])
        #expect(m.parameters == [1])
        #expect(m.excluded.map(\.name) == ["bn.num_batches_tracked", "mask"])
    }

    @Test("model.exclude: a pattern matching nothing is an error, and so is leaving out everything")
    func excludeErrors() throws {
        let json = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let file = safetensorsFile(json: json, data: f32([1]))
        #expect(modelError(file, exclude: ["*.num_batches_tracked"])?.description == "model.exclude entry '*.num_batches_tracked' matches no tensor of the file")
        #expect(modelError(file, exclude: ["w"])?.description == "model.exclude leaves out all 1 tensors of the file")
        // A float tensor may be left out too (a frozen embedding, say).
        let two = safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[1],"data_offsets":[4,6]}}"#, data: f32([1]) + le([UInt16(0x3C00)]))
        #expect(try ModelFile.decode(two, exclude: ["e"]).layout.tensors.map(\.name) == ["w"])
    }

    @Test("glob patterns: * spans any run (also dots), ? one character")
    func glob() {
        #expect(ModelFile.glob("*.num_batches_tracked", matches: "layer1.0.bn1.num_batches_tracked"))
        #expect(ModelFile.glob("layer?.bn", matches: "layer1.bn"))
        #expect(!ModelFile.glob("layer?.bn", matches: "layer10.bn"))
        #expect(ModelFile.glob("*", matches: ""))
        #expect(!ModelFile.glob("a*b", matches: "acbd"))
        #expect(ModelFile.glob("a*b*c", matches: "aXbYbZc"))
        #expect(ModelFile.glob("exact", matches: "exact") && !ModelFile.glob("exact", matches: "exact2"))
    }

    @Test("a value that is not finite is refused, also one that overflows float32 from F64")
    func nonFinite() {
        let nan = safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: f32([1, .nan]))
        #expect(modelError(nan)?.description.hasPrefix("tensor 'w' holds a value that is not finite (element 1)") == true)
        let big = safetensorsFile(json: #"{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, data: le([Double(1e300).bitPattern]))
        #expect(modelError(big)?.description.contains("as float32 from F64") == true)
    }

    @Test("bad files: truncated, offsets that lie, duplicate names, no tensors, a header over the bound, 8-bit floats")
    func badFiles() throws {
        let good = safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: f32([1, 2]))
        func message(_ b: [UInt8]) -> String { modelError(b)?.description ?? "accepted" }
        #expect(message(Array(good.dropLast(3))).contains("truncated"))
        #expect(message(Array(good.prefix(5))).contains("truncated"))
        #expect(message(safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#, data: f32([1, 2, 3])))
            .contains("do not match its shape"))
        #expect(message(safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: f32([1])))
            .contains("overlap"))
        #expect(message(safetensorsFile(json: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: f32([1, 2])))
            .contains("duplicate key 'w'"))
        #expect(message(safetensorsFile(json: #"{"__metadata__":{"a":"b"}}"#, data: [])) == "the file holds no tensors")
        #expect(message(safetensorsFile(json: "{}", data: [])) == "the file holds no tensors")
        var huge = le([UInt64(Safetensors.maxHeaderLength + 1)])
        huge += Array("{}".utf8)
        #expect(message(huge).contains("over the limit"))
        #expect(message(safetensorsFile(json: #"{"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: [0])).contains("'q' (F8_E4M3)"))
        #expect(message(safetensorsFile(json: #"{"q":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}"#, data: [0])).contains("dtype F4"))
        // None of these messages spans lines.
        #expect(!message(Array(good.dropLast(3))).contains("\n"))
    }

    @Test("a file exported from a served model reads back to the same layout and weights")
    func exportRoundTrip() throws {
        let json = #"{"z":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]}}"#
        let m = try ModelFile.decode(safetensorsFile(json: json, data: le([UInt16(0x3C00), 0x4000]) + f32([5, 6])))
        let out = try Safetensors.encode(layout: m.layout, parameters: m.parameters, metadata: ["format": "pt"])
        let back = try ModelFile.decode(out)
        #expect(back.layout == m.layout && back.parameters == m.parameters && back.converted.isEmpty)
        #expect(back.layout.fingerprint == m.layout.fingerprint)
    }

    @Test("left-out tensors keep their bytes and are written back unchanged, after the trained float32 ones")
    func excludedCopiedBack() throws {
        let json = #"{"bn.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[16,19]}}"#
        let file = safetensorsFile(json: json, data: f32([1, 2]) + le([Int64(7)]) + [1, 0, 1])
        let m = try ModelFile.decode(file, exclude: ["*.num_batches_tracked", "mask"])
        #expect(m.excludedTensors == [
            Safetensors.RawTensor(name: "bn.num_batches_tracked", dtype: "I64", shape: [], bytes: le([Int64(7)])),
            Safetensors.RawTensor(name: "mask", dtype: "BOOL", shape: [3], bytes: [1, 0, 1]),
        ])
        let out = try Safetensors.encode(layout: m.layout, parameters: [3, 4], metadata: [:], extra: m.excludedTensors)
        // Read back as any reader would: every tensor with its dtype, shape and bytes.
        let back = try ModelFile.decode(out, exclude: ["*.num_batches_tracked", "mask"])
        #expect(back.parameters == [3, 4])
        #expect(back.excludedTensors == m.excludedTensors)
        let header = try out.withUnsafeBytes { try Safetensors.parseHeader($0, width: Safetensors.elementWidth(ofDType:)) }
        #expect(header.entries.map(\.name) == ["bn.running_mean", "bn.num_batches_tracked", "mask"])
        #expect(header.entries.map(\.dtype) == ["F32", "I64", "BOOL"])
        #expect(modelError(out)?.description.contains("model.exclude") == true, "still not servable without the exclude")
    }

    @Test("load names the path when the file cannot be read")
    func unreadable() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("apiary-no-such-\(ProcessInfo.processInfo.processIdentifier).safetensors").path
        do {
            _ = try ModelFile.load(path: path)
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description.contains(path) && error.description.contains("No such file"))
        }
    }
}
