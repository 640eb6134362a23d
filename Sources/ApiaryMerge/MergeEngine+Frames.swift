import ApiaryCore
import ApiaryProtocol

/// An update with more payload frames than the limit: rejected `malformed` before decoding.

extension MergeEngine {
    package func rejectTooManyFrames(_ frames: [UnsafeRawBufferPointer], limit: Int) -> Outcome {
        stats.received += 1
        stats.rejected[.malformed, default: 0] += 1
        let header = frames.first.flatMap { Codec.peekUpdateSender($0) }
        let detail = "update has more than \(limit) payload frames"
        let receipt = header.map {
            Receipt(clientID: $0.clientID, runID: runID, seq: $0.seq, baseVersion: $0.baseVersion, modelVersion: version,
                    staleness: nil, mixingWeight: 0, decision: .rejected, reason: .malformed, message: detail)
        }
        return Outcome(receipt: receipt, reason: .malformed, detail: detail)
    }
}
