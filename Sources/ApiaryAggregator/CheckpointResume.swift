import ApiaryCore
import Foundation
import Logging

/// Start-up of a state directory: lock it, tidy it, find the newest valid checkpoint.
enum CheckpointResume {
    struct Opened {
        let directory: URL
        /// Held while the aggregator runs.
        let lock: StateDirectoryLock
        /// The state to resume; nil for a new run.
        let resumed: CheckpointState?
    }

    /// Locks `directory` (one aggregator per state directory: two, say shards given the same
    /// config, would resume and prune each other's checkpoints), removes partial files of a
    /// crashed write, moves corrupt checkpoints to `corrupt/` (so that they neither count toward
    /// `checkpoint.keep` nor push this run's files out), logs each, and returns the newest valid
    /// checkpoint. Throws `AggregatorError` (`stateDirectoryLocked`, `stateUnusable`, or
    /// `checkpointOfAnotherModel` when that checkpoint's layout is not `layout`: a shard's
    /// checkpoint holds its slice, whose layout names the range).
    static func open(directory url: URL, expecting layout: ParameterLayout, logger: Logger) throws -> Opened {
        let lock = try StateDirectoryLock(directory: url)
        let tidied: Checkpoint.Tidied
        do {
            tidied = try Checkpoint.tidy(directory: url)
        } catch {
            throw AggregatorError.startFailed("checkpoint.directory \(url.path): \(error)", code: .stateUnusable, underlying: error)
        }
        for t in tidied.removedTemporary {
            logger.notice("removed a partial checkpoint left by an interrupted write", metadata: ["file": "\(t.path)"])
        }
        for q in tidied.quarantined {
            logger.error("skipping corrupt checkpoint: moved aside", metadata: [
                "file": "\(q.from.path)", "moved_to": "\(q.to.path)", "error": "\(q.error)",
            ])
        }
        guard let found = Checkpoint.latestValid(in: url) else { return Opened(directory: url, lock: lock, resumed: nil) }
        for (bad, error) in found.skipped {
            logger.error("skipping corrupt checkpoint", metadata: ["file": "\(bad.path)", "error": "\(error)"])
        }
        guard found.state.layout == layout else {
            throw AggregatorError.startFailed("checkpoint \(found.url.path) holds another model: its layout is \(found.state.layout.summary()); "
                + "this aggregator serves \(layout.summary()). Start it with the model the checkpoint was trained from, or give it a new checkpoint.directory",
                code: .checkpointOfAnotherModel)
        }
        logger.notice("resuming from checkpoint", metadata: ["file": "\(found.url.lastPathComponent)", "version": "\(found.state.version)"])
        return Opened(directory: url, lock: lock, resumed: found.state)
    }
}
