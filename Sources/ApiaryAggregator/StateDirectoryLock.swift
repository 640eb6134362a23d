import ApiaryCore
import Foundation

/// An exclusive `flock` on `aggregator.lock` in a state directory, held while the aggregator
/// runs (the kernel releases it when the process dies, so a crash never leaves it behind).
final class StateDirectoryLock {
    private var fd: Int32

    init(directory: URL) throws {
        do {
            try Checkpoint.createDirectory(directory)
        } catch {
            throw AggregatorError.startFailed("checkpoint.directory: \(error)", code: .stateUnusable, underlying: error)
        }
        let path = directory.appendingPathComponent("aggregator.lock").path
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AggregatorError.startFailed("cannot open \(path): \(String(cString: strerror(errno)))", code: .stateUnusable) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            fd = -1
            throw AggregatorError.startFailed("checkpoint directory \(directory.path) is in use by another aggregator (\(path) is locked); give each aggregator or shard its own", code: .stateDirectoryLocked)
        }
    }

    func release() {
        guard fd >= 0 else { return }
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
