import ApiaryCore
import ApiaryProtocol

/// The one place receipts are made: every receipt names this engine's run, answers one
/// (client, seq), and defaults to the current version with no mixing weight.
extension MergeEngine {
    package func receipt(to client: String, seq: UInt64, base: UInt64, _ decision: Decision, _ reason: RejectReason = .none,
                         version modelVersion: UInt64? = nil, staleness: UInt64? = nil, weight: Double = 0,
                         message: String = "") -> Receipt {
        Receipt(clientID: client, runID: runID, seq: seq, baseVersion: base, modelVersion: modelVersion ?? version,
                staleness: staleness, mixingWeight: weight, decision: decision, reason: reason, message: message)
    }

    /// A receipt for an update, from its header.
    package func receipt(for h: UpdateHeader, _ decision: Decision, _ reason: RejectReason = .none, version modelVersion: UInt64? = nil,
                         staleness: UInt64? = nil, weight: Double = 0, message: String = "") -> Receipt {
        receipt(to: h.clientID, seq: h.seq, base: h.baseVersion, decision, reason, version: modelVersion, staleness: staleness,
                weight: weight, message: message)
    }

    /// The answer to a resend (an update or report already processed): what the first one got,
    /// as a duplicate.
    package func duplicateReceipt(to client: String, seq: UInt64, first: UpdateOutcome) -> Receipt {
        receipt(to: client, seq: seq, base: first.baseVersion, .duplicate, .duplicate, version: first.modelVersion,
                staleness: first.staleness, weight: first.mixingWeight,
                message: "already processed (\(first.decision)\(first.reason == .none ? "" : ": \(first.reason)")) at version \(first.modelVersion)")
    }
}
