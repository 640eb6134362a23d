import ApiaryCore
import ApiaryProtocol

/// An update with more payload frames than the limit: rejected `malformed` before decoding.

extension MergeEngine {
    package func rejectTooManyFrames(_ frames: [UnsafeRawBufferPointer], limit: Int) -> Outcome {
        stats.received += 1
        stats.rejected[.malformed, default: 0] += 1
        let header = frames.first.flatMap { Codec.peekUpdateSender($0) }
        let detail = "update has more than \(limit) payload frames"
        let r = header.map { receipt(to: $0.clientID, seq: $0.seq, base: $0.baseVersion, .rejected, .malformed, message: detail) }
        return Outcome(receipt: r, reason: .malformed, detail: detail)
    }
}
