import ApiaryCore
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// Writes checkpoints on its own thread so the merge path never waits on the disk.
///
/// The aggregator thread hands over a state with `submit` (at most one in flight; a newer
/// submission replaces one not yet started) and learns through `doorbell` and `takeResults`
/// which versions became durable. Thread-safe.
final class CheckpointWriter: Sendable {
    struct Result: Sendable {
        var version: UInt64
        var url: URL?
        var error: String?
    }

    private struct State: Sendable {
        var next: CheckpointState?
        var results: [Result] = []
        var busy = false
        var stopping = false
    }

    let directory: URL
    let keep: Int
    let doorbell = Wakeup()
    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let logger: Logger

    private let started = Atomic<Bool>(false)

    init(directory: URL, keep: Int, logger: Logger) {
        self.directory = directory
        self.keep = keep
        self.logger = logger
    }

    /// Starts the writer thread (the aggregator thread calls this when its loop starts; the
    /// first checkpoint of a run is written before, with `writeNow`).
    func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let t = Thread { [self] in self.main() }
        t.name = "apiary-checkpoint"
        t.start()
    }

    /// Whether a checkpoint is being written or waiting to be.
    var isBusy: Bool { state.withLock { $0.busy || $0.next != nil } }

    /// Queues `s` to be written; replaces a queued one that has not started.
    func submit(_ s: CheckpointState) {
        state.withLock { $0.next = s }
        work.signal()
    }

    /// Results since the last call (the aggregator thread calls this after the doorbell).
    func takeResults() -> [Result] {
        state.withLock { s in
            defer { s.results = [] }
            return s.results
        }
    }

    /// Writes `s` on the calling thread, after the write in flight if there is one (the
    /// calling thread sleeps on a lock meanwhile, it does not spin); a queued state not yet
    /// started is dropped, `s` being newer. For a run's first checkpoint and the final one.
    func writeNow(_ s: CheckpointState) -> Result {
        state.withLock { $0.next = nil }
        return write(s)
    }

    /// Stops the thread: waits for the write in flight (its result is in `takeResults`);
    /// a queued state not yet started is dropped (the caller writes a newer one with
    /// `writeNow`). Blocks the calling thread, never a task: only the aggregator thread calls it.
    func stop() {
        let wasStopping = state.withLock { s in
            defer { s.stopping = true }
            return s.stopping
        }
        guard started.load(ordering: .acquiring), !wasStopping else { return }
        work.signal()
        finished.wait()
    }

    private func main() {
        while true {
            work.wait()
            let job: CheckpointState? = state.withLock { s in
                if s.stopping { return nil }
                defer { s.next = nil }
                if s.next != nil { s.busy = true }
                return s.next
            }
            if state.withLock({ $0.stopping }) { break }
            guard let job else { continue }
            let r = write(job)
            state.withLock { s in
                s.results.append(r)
                s.busy = false
            }
            doorbell.ring()
        }
        finished.signal()
    }

    /// One write at a time, the writer thread's or `writeNow`'s.
    private let disk = Mutex(())

    private func write(_ s: CheckpointState) -> Result {
        disk.withLock { _ in writeOnce(s) }
    }

    private func writeOnce(_ s: CheckpointState) -> Result {
        do {
            let url = try Checkpoint.write(s, to: directory)
            // Corrupt files were moved aside at start (`Checkpoint.tidy`); the file just
            // written is this run's newest durable state and is never pruned.
            _ = try? Checkpoint.prune(directory: directory, keep: keep, protecting: url)
            return Result(version: s.version, url: url, error: nil)
        } catch {
            logger.error("checkpoint write failed", metadata: ["version": "\(s.version)", "error": "\(error)"])
            return Result(version: s.version, url: nil, error: "\(error)")
        }
    }
}
