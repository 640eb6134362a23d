@testable import ApiaryCore
import Foundation
import Testing

@Suite struct CheckpointPerfTmpTests {
    @Test func perf() throws {
        var s = sampleCheckpointState()
        s.layout = try ParameterLayout([TensorSpec(name: "W", shape: [1000, 1000])])
        s.parameters = [Float](repeating: 0.5, count: 1_000_000)
        var d: [String: DedupTable<UpdateOutcome>.Entry] = [:]
        let o = UpdateOutcome(decision: .merged, reason: .none, baseVersion: 1000, modelVersion: 1003, staleness: 3, mixingWeight: 0.123456789)
        for c in 0..<100 { d["client-\(c)"] = .init(highest: 600, outcomes: Dictionary(uniqueKeysWithValues: (88..<600).map { (UInt64($0), o) })) }
        s.dedup = d
        let clock = ContinuousClock()
        var bytes: [UInt8] = []
        let te = clock.measure { bytes = try! Checkpoint.encode(s) }
        var back: CheckpointState?
        let td = clock.measure { back = try! Checkpoint.decode(bytes) }
        print("encode \(te) decode \(td) size \(bytes.count)")
        #expect(back == s)
    }
}
