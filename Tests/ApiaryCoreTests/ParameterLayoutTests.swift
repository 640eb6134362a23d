import ApiaryCore
import Foundation
import Testing

@Suite("ParameterLayout")
struct ParameterLayoutTests {
    /// FNV-1a 64 written from docs/PROTOCOL.md §2.2, independently of the implementation.
    static func referenceFingerprint(_ tensors: [(name: String, shape: [UInt64])]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var bytes: [UInt8] = []
        for t in tensors {
            bytes += Array(t.name.utf8) + [0x00, 0x01, UInt8(t.shape.count)]
            for d in t.shape { bytes += (0..<8).map { UInt8((d >> (8 * $0)) & 0xFF) } }
        }
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    @Test("offsets accumulate tensor sizes in order; parameterCount is the total")
    func offsets() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [3, 4]), TensorSpec(name: "b", shape: [4]),
                                          TensorSpec(name: "s", shape: []), TensorSpec(name: "t", shape: [2, 1, 3])])
        #expect(layout.offsets == [0, 12, 16, 17])
        #expect(layout.parameterCount == 23)
        #expect(layout.range(ofTensor: 0) == 0..<12)
        #expect(layout.range(ofTensor: 1) == 12..<16)
        #expect(layout.range(ofTensor: 2) == 16..<17)
        #expect(layout.range(ofTensor: 3) == 17..<23)
        #expect(layout.tensors.map(\.count) == [12, 4, 1, 6])
    }

    @Test("the digits model layout has 650 parameters")
    func digits() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [64, 10]), TensorSpec(name: "b", shape: [10])])
        #expect(layout.parameterCount == 650)
        #expect(layout.range(ofTensor: 1) == 640..<650)
    }

    @Test("a scalar tensor (shape []) counts one parameter")
    func scalar() throws {
        #expect(TensorSpec(name: "x", shape: []).count == 1)
        let layout = try ParameterLayout([TensorSpec(name: "x", shape: [])])
        #expect(layout.parameterCount == 1)
        #expect(layout.range(ofTensor: 0) == 0..<1)
    }

    @Test("a zero-sized dimension gives an empty tensor")
    func zeroDim() throws {
        let layout = try ParameterLayout([TensorSpec(name: "a", shape: [2]), TensorSpec(name: "z", shape: [0, 5]),
                                          TensorSpec(name: "c", shape: [3])])
        #expect(layout.parameterCount == 5)
        #expect(layout.range(ofTensor: 1) == 2..<2)
        #expect(layout.range(ofTensor: 2) == 2..<5)
    }

    @Test("an empty layout is rejected")
    func empty() {
        #expect(throws: LayoutError.empty) { try ParameterLayout([]) }
    }

    @Test("a duplicate name is rejected")
    func duplicate() {
        #expect(throws: LayoutError.duplicateName("w")) {
            try ParameterLayout([TensorSpec(name: "w", shape: [1]), TensorSpec(name: "b", shape: [1]), TensorSpec(name: "w", shape: [2])])
        }
    }

    @Test("an empty name or a name over 255 UTF-8 bytes is rejected")
    func badName() {
        #expect(throws: LayoutError.invalidName("")) { try ParameterLayout([TensorSpec(name: "", shape: [1])]) }
        let long = String(repeating: "é", count: 128) // 256 bytes
        #expect(throws: LayoutError.invalidName(long)) { try ParameterLayout([TensorSpec(name: long, shape: [1])]) }
        let longest = String(repeating: "n", count: 255)
        #expect(throws: Never.self) { try ParameterLayout([TensorSpec(name: longest, shape: [1])]) }
    }

    @Test("a negative dimension, rank over 8 or an overflowing size is rejected")
    func badShape() {
        #expect(throws: LayoutError.invalidShape("w", [2, -1])) { try ParameterLayout([TensorSpec(name: "w", shape: [2, -1])]) }
        let rank9 = [Int](repeating: 1, count: 9)
        #expect(throws: LayoutError.invalidShape("r", rank9)) { try ParameterLayout([TensorSpec(name: "r", shape: rank9)]) }
        #expect(throws: Never.self) { try ParameterLayout([TensorSpec(name: "r", shape: [Int](repeating: 1, count: 8))]) }
        #expect(throws: LayoutError.invalidShape("o", [Int.max, 2])) { try ParameterLayout([TensorSpec(name: "o", shape: [Int.max, 2])]) }
        #expect(throws: LayoutError.invalidShape("big", [1 << 20, 1 << 20])) {
            try ParameterLayout([TensorSpec(name: "big", shape: [1 << 20, 1 << 20])])
        }
    }

    @Test("the fingerprint follows the documented FNV-1a 64 definition")
    func fingerprintReference() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [64, 10]), TensorSpec(name: "b", shape: [10]),
                                          TensorSpec(name: "s", shape: [])])
        #expect(layout.fingerprint == Self.referenceFingerprint([("W", [64, 10]), ("b", [10]), ("s", [])]))
        let unicode = try ParameterLayout([TensorSpec(name: "poids·é", shape: [2, 1 << 33])])
        #expect(unicode.fingerprint == Self.referenceFingerprint([("poids·é", [2, 1 << 33])]))
    }

    @Test("the digits layout fingerprint is the documented 0xadd267fbe249fe49")
    func digitsFingerprint() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [64, 10]), TensorSpec(name: "b", shape: [10])])
        #expect(layout.fingerprint == 0xadd2_67fb_e249_fe49)
    }

    @Test("equal layouts have equal fingerprints")
    func fingerprintEqual() throws {
        let a = try ParameterLayout([TensorSpec(name: "W", shape: [3, 4]), TensorSpec(name: "b", shape: [4])])
        let b = try ParameterLayout([TensorSpec(name: "W", shape: [3, 4]), TensorSpec(name: "b", shape: [4])])
        #expect(a == b)
        #expect(a.fingerprint == b.fingerprint)
    }

    @Test("the fingerprint changes when a name, shape or order changes")
    func fingerprintDiffers() throws {
        let base = try ParameterLayout([TensorSpec(name: "W", shape: [3, 4]), TensorSpec(name: "b", shape: [4])])
        let variants: [[TensorSpec]] = [
            [TensorSpec(name: "V", shape: [3, 4]), TensorSpec(name: "b", shape: [4])],
            [TensorSpec(name: "W", shape: [4, 3]), TensorSpec(name: "b", shape: [4])],
            [TensorSpec(name: "W", shape: [12]), TensorSpec(name: "b", shape: [4])],
            [TensorSpec(name: "W", shape: [3, 4, 1]), TensorSpec(name: "b", shape: [4])],
            [TensorSpec(name: "W", shape: [3, 4]), TensorSpec(name: "b", shape: [5])],
            [TensorSpec(name: "b", shape: [4]), TensorSpec(name: "W", shape: [3, 4])],
            [TensorSpec(name: "W", shape: [3, 4])],
            [TensorSpec(name: "Wb", shape: [3, 4]), TensorSpec(name: "b", shape: [4])],
        ]
        var seen: Set<UInt64> = [base.fingerprint]
        for v in variants {
            let layout = try ParameterLayout(v)
            #expect(layout.fingerprint != base.fingerprint, "\(layout)")
            seen.insert(layout.fingerprint)
        }
        #expect(seen.count == variants.count + 1)
    }

    @Test("descriptions list tensors")
    func description() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [2, 3]), TensorSpec(name: "b", shape: [3])])
        #expect(layout.description == "W[2, 3]:float32, b[3]:float32")
        #expect(DType.float32.byteWidth == 4)
    }

    @Test("the layout round-trips through JSON")
    func codable() throws {
        let layout = try ParameterLayout([TensorSpec(name: "W", shape: [2, 3]), TensorSpec(name: "b", shape: [])])
        let decoded = try JSONDecoder().decode(ParameterLayout.self, from: JSONEncoder().encode(layout))
        #expect(decoded == layout)
        #expect(decoded.offsets == [0, 6])
    }
}
