import ApiaryAggregator
import ApiaryCore
import ApiaryProtocol
import Foundation
import Testing
import ZeroMQ
import ApiaryTesting

@Suite("Aggregator over real tcp loopback sockets", .serialized)
struct AggregatorTests {
    func start(_ rule: FedAsync = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 1000)) throws -> (Aggregator, Aggregator.Endpoints) {
        let agg = try Aggregator(config: anyPortConfig(rule), layout: testLayout,
                                 initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: quietLogger())
        return (agg, try agg.start())
    }

    @Test("a valid update is merged with FedAsync and receipted")
    func mergesValidUpdate() throws {
        let (agg, e) = try start()
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "c1")
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 1, values: [Float](repeating: 2, count: 15))
        let r = try peer.receipt()
        #expect(r.decision == .merged)
        #expect(r.seq == 1)
        #expect(r.modelVersion == 1)
        #expect(r.staleness == 0)
        #expect(r.mixingWeight == 0.5)
        agg.stop()
        let m = try #require(agg.latestModel)
        #expect(m.version == 1)
        #expect(m.parameters == [Float](repeating: 1, count: 15))  // 0.5 * 0 + 0.5 * 2
    }

    @Test("malformed messages are rejected with their own reasons and leave the model alone")
    func rejectsMalformed() throws {
        let (agg, e) = try start()
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "c2")
        let good = [Float](repeating: 1, count: 15)
        // Garbage that names no client: counted, not receipted.
        try peer.send(frames: [[1, 2, 3]])
        try peer.send(frames: [Array("not a header at all".utf8), [0], [0, 0, 0, 0]])
        // Wrong shape: a layout with other dimensions.
        let other = try ParameterLayout([TensorSpec(name: "w", shape: [3, 4]), TensorSpec(name: "b", shape: [3])])
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 10, values: good, layout: other)
        #expect(try peer.receipt().reason == .layoutMismatch)
        // Right layout, short payload.
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 11, values: [1, 2, 3])
        #expect(try peer.receipt().reason == .layoutMismatch)
        // NaN and infinity.
        var bad = good
        bad[3] = .nan
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 12, values: bad)
        #expect(try peer.receipt().reason == .nonFinite)
        bad[3] = .infinity
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 13, values: bad)
        #expect(try peer.receipt().reason == .nonFinite)
        // A base version from the future, and another run.
        try peer.sendUpdate(runID: agg.runID, base: 99, seq: 14, values: good)
        #expect(try peer.receipt().reason == .unknownBase)
        try peer.sendUpdate(runID: agg.runID &+ 1, base: 0, seq: 15, values: good)
        #expect(try peer.receipt().reason == .unknownBase)
        // Unsupported protocol version in an otherwise valid update.
        var header = Codec.encode(UpdateHeader(runID: agg.runID, baseVersion: 0, seq: 16, sampleCount: 1, clientID: "c2"))
        header[4] = 9
        try peer.send(frames: [header, Codec.encodeLayout(testLayout), good.withUnsafeBytes { Array($0) }])
        // Its client id is still readable, so it is receipted with its own reason.
        let v9 = try peer.receipt()
        #expect(v9.reason == .unsupportedProtocolVersion)
        #expect(v9.seq == 16)
        // Then a good one still merges.
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 17, values: good)
        let r = try peer.receipt()
        #expect(r.decision == .merged)
        #expect(r.modelVersion == 1)
        agg.stop()
        let s = agg.stats
        #expect(s.merged == 1)
        #expect(s.rejected[.malformed] == 2)
        #expect(s.rejected[.layoutMismatch] == 2)
        #expect(s.rejected[.nonFinite] == 2)
        #expect(s.rejected[.unknownBase] == 2)
        #expect(s.rejected[.unsupportedProtocolVersion] == 1)
        #expect(agg.latestModel!.parameters.allSatisfy { $0.isFinite })
    }

    @Test("a resent (client id, seq) is merged once and answered as a duplicate")
    func dedup() throws {
        let (agg, e) = try start()
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "c3")
        let v = [Float](repeating: 4, count: 15)
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 7, values: v)
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 7, values: v)
        let first = try peer.receipt(), second = try peer.receipt()
        #expect(first.decision == .merged)
        #expect(second.decision == .duplicate)
        #expect(second.modelVersion == 1)
        agg.stop()
        #expect(agg.stats.version == 1)
        #expect(agg.latestModel!.parameters == [Float](repeating: 2, count: 15))
    }

    @Test("an update staler than the maximum is rejected; a fresher one is weighted by S(s)")
    func staleness() throws {
        let (agg, e) = try start(FedAsync(alpha: 1, staleness: .polynomial(a: 1), maxStaleness: 2))
        defer { agg.stop() }
        let peer = try RawPeer(e, clientID: "c4")
        let v = [Float](repeating: 3, count: 15)
        for seq in 1...3 as ClosedRange<UInt64> {
            try peer.sendUpdate(runID: agg.runID, base: seq - 1, seq: seq, values: v)
            #expect(try peer.receipt().decision == .merged)
        }
        try peer.sendUpdate(runID: agg.runID, base: 0, seq: 4, values: v)
        let stale = try peer.receipt()
        #expect(stale.reason == .tooStale)
        #expect(stale.staleness == 3)
        try peer.sendUpdate(runID: agg.runID, base: 1, seq: 5, values: v)
        let ok = try peer.receipt()
        #expect(ok.decision == .merged)
        #expect(ok.staleness == 2)
        #expect(abs(ok.mixingWeight - 1.0 / 3.0) < 1e-12)
    }

    @Test("the update queue is bounded in bytes as well as messages")
    func updateQueueBytes() {
        var c = AggregatorConfig()
        #expect(c.updateQueueMessages(parameters: 650) == 256)                 // small models: the message limit
        #expect(c.updateQueueMessages(parameters: 10_000_000) == 6)            // 256 MiB of 40 MB updates
        #expect(c.updateQueueMessages(parameters: 1_000_000_000) == 2)         // never below 2
        c.updateQueueBytes = 1 << 30
        #expect(c.updateQueueMessages(parameters: 1_000_000) == 256)
        c.updateQueueBytes = 0
        #expect(c.validationError()?.contains("update_queue_bytes") == true)
    }

}
