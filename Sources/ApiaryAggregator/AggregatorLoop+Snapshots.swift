import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The snapshot server: a joining or lagging client gets the whole current model at once.
extension AggregatorLoop {
    // MARK: Snapshots (Clone pattern: a joining client gets the model at once)

    func serveSnapshots() throws {
        for _ in 0..<64 {
            guard let msg = try router.receiveMultipart(dontWait: true, maxFrames: 4) else { break }
            // [identity] [empty delimiter, from REQ]? [request header]
            let frames = msg.frames
            guard frames.count == 2 || (frames.count == 3 && frames[1].count == 0), !msg.truncated else {
                if rejectLog.shouldLog(.malformed, now: .now) { logger.warning("malformed snapshot request", metadata: ["frames": "\(frames.count)"]) }
                continue
            }
            let request: SnapshotRequest
            do {
                request = try frames.last!.withUnsafeBytes { b throws(WireError) in try Codec.decodeSnapshotRequest(b) }
            } catch {
                if rejectLog.shouldLog(.malformed, now: .now) { logger.warning("malformed snapshot request: \(PeerText.escaped("\(error)"))") }
                continue
            }
            let model = currentPublishable()
            let chunks = chunkRanges(model.range.count)
            let header = SnapshotReplyHeader(requestID: request.requestID, runID: model.runID, version: model.version,
                                             layoutFingerprint: model.layout.fingerprint, parameterCount: UInt64(model.layout.parameterCount),
                                             serverTimeMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
                                             payloadFrameCount: UInt32(chunks.count))
            var reply: [Message] = [frames[0]]
            if frames.count == 3 { reply.append(Message()) }
            reply.append(Message(Codec.encode(header)))
            reply.append(Message(engine.layoutFrame))
            reply.append(Message(snapshotConfigFrame))
            for r in chunks {
                reply.append(model.storage.baseAddress.map {
                    Message(noCopy: UnsafeRawPointer($0 + r.lowerBound), count: r.count * 4, owner: model)
                } ?? Message())
            }
            try router.send(multipart: reply, dontWait: true)
            serving.snapshotsServed += 1
            serving.bytesOut += UInt64(model.range.count * 4)
            logger.debug("snapshot served", metadata: ["client": "\(PeerText.escaped(request.clientID))", "version": "\(model.version)"])
        }
    }
}
