import Synchronization

/// Lets tasks wait, without polling, for "something changed" that another thread announces.
///
/// The waiting side reads `generation`, checks its own condition, and only then waits for a
/// change after that generation: a change announced in between makes the wait return at once,
/// so no wake-up is lost. The announcing side changes its state first, then calls `notify()`.
/// Thread-safe; `notify()` never blocks and may be called from any thread (an I/O thread's
/// loop, a libzmq callback's owner).
///
///     while true {
///         let g = signal.generation
///         if conditionHolds() { break }
///         await signal.wait(after: g, until: deadline)
///     }
public final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// Waits whose deadline passed, or whose task was cancelled, before they suspended.
        var expired: Set<Int> = []
        var nextID = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Counts the changes announced so far.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// Announces a change: every wait returns.
    public func notify() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            guard !s.waiters.isEmpty else { return [] }
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }

    /// Suspends until a change after `generation` is announced, `deadline` passes (nil: no
    /// deadline), or the calling task is cancelled. Returns at once if one already was.
    public func wait(after generation: UInt64, until deadline: ContinuousClock.Instant? = nil) async {
        let id = state.withLock { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        let timer = deadline.map { d in
            Task { [self] in
                try? await Task.sleep(until: d, clock: .continuous)
                if !Task.isCancelled { expire(id) }
            }
        }
        defer {
            timer?.cancel()
            state.withLock { _ = $0.expired.remove(id) }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.generation != generation || s.expired.remove(id) != nil { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            expire(id)
        }
    }

    /// Resumes wait `id` now, or makes it return at once if it has not suspended yet.
    private func expire(_ id: Int) {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let c = s.waiters.removeValue(forKey: id) { return c }
            s.expired.insert(id)
            return nil
        }
        c?.resume()
    }
}
