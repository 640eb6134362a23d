import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ

/// The receipt desk: merged receipts wait for the checkpoint that holds their merge (group
/// commit), then go out.
extension AggregatorLoop {
    // MARK: Group commit

    func startCheckpointIfDue() {
        guard let writer, engine.version > submittedVersion, !writer.isBusy else { return }
        let now = ContinuousClock.now
        guard now - lastSubmit >= config.checkpointInterval || engine.version - submittedVersion >= config.checkpointEveryVersions else { return }
        writer.submit(engine.checkpointState())
        submittedVersion = engine.version
        lastSubmit = now
    }

    func collectCheckpointResults() {
        guard let writer else { return }
        for r in writer.takeResults() {
            if r.error == nil { markDurable(r.version) }
        }
    }

    func markDurable(_ version: UInt64) {
        guard version > durableVersion else { return }
        durableVersion = version
        serving.lastCheckpointAt = Date()
        releaseHeld()
        aggregator.publish(stats: stats, latest: nil)
    }

    /// Sends the held receipts whose merges are now on disk (all of them without checkpoints).
    func releaseHeld() {
        guard !held.isEmpty else { return }
        var keep: [(receipt: Receipt, row: LedgerRow)] = []
        var rows: [LedgerRow] = []
        for h in held {
            if writer == nil || h.receipt.modelVersion <= durableVersion {
                try? sendReceipt(h.receipt)
                rows.append(h.row)
            } else {
                keep.append(h)
            }
        }
        held = keep
        ledger?.append(contentsOf: rows)
    }
}
