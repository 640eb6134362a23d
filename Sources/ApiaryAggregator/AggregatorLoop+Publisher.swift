import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The model publisher: rate-limited, newest-wins broadcasts of the global model in chunks.
extension AggregatorLoop {
    // MARK: Model plane

    /// Central DP with checkpoints: the model holds a noised step not yet on disk, which is
    /// not released (broadcast or served) before its accountant is.
    var holdsPrivateStep: Bool {
        writer != nil && engine.buffer?.privacy != nil && engine.version > durableVersion
    }

    func currentPublishable() -> PublishedModel {
        if let p = published, p.version == engine.version || holdsPrivateStep { return p }
        let p = engine.publishable()
        published = p
        return p
    }

    /// Sends the newest model as chunks on the PUB socket, without copying it again (the
    /// newest released one while a private step waits for the disk).
    func broadcast() throws {
        let model = currentPublishable()
        let chunks = chunkRanges(model.range.count)
        let headerBase = ModelChunkHeader(runID: model.runID, version: model.version, layoutFingerprint: model.layout.fingerprint,
                                          parameterCount: UInt64(model.layout.parameterCount), chunkOffset: 0, chunkIndex: 0,
                                          chunkCount: UInt32(chunks.count))
        for (i, r) in chunks.enumerated() {
            var h = headerBase
            h.chunkOffset = UInt64(model.range.lowerBound + r.lowerBound)
            h.chunkIndex = UInt32(i)
            let payload = model.storage.baseAddress.map {
                Message(noCopy: UnsafeRawPointer($0 + r.lowerBound), count: r.count * 4, owner: model)
            } ?? Message()
            try pub.send(multipart: [Message(Topic.model), Message(Codec.encode(h)), payload], dontWait: true)
            serving.bytesOut += UInt64(r.count * 4 + Codec.modelChunkHeaderSize)
        }
        serving.broadcasts += 1
        lastBroadcast = ContinuousClock.now
        dirty = false
        nextPublish = ContinuousClock.now + config.publishInterval
        aggregator.publish(stats: stats, latest: model)
    }

    func chunkRanges(_ n: Int) -> [Range<Int>] {
        stride(from: 0, to: max(n, 1), by: config.chunkParameters).map { $0..<min(n, $0 + config.chunkParameters) }
    }
}
