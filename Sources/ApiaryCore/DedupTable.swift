/// Remembers which (client id, epoch, seq) updates were processed, and what their receipt
/// said, so that a resent update is never merged twice and gets the same answer again.
///
/// A client *epoch* is a random non-zero number a client process picks at start
/// (PROTOCOL.md 3.4); clients that send none are epoch 0. Seqs need only increase within an
/// epoch, so a new process (a restart, a restored device image, a clock stepped back) starts
/// a fresh window and can never be locked out by an earlier process's seqs.
///
/// Per (client, epoch) it keeps the highest seq seen and the outcomes of the last `window`
/// seqs. A seq below `highest - window` is reported as already processed: clients keep only
/// a bounded number of updates pending, so such a seq can only be a stale resend. In a
/// non-zero epoch, a seq more than `window` above the highest is out of range: no correct
/// client skips that many, so it is refused and, not being recorded, cannot move the window.
/// Epoch 0 keeps the rule of clients without epochs (any seq ahead is new).
///
/// Memory: at most `maxEpochs` epochs per client (the least recently recorded is forgotten
/// first), each with at most `2 * window` outcomes.
public struct DedupTable<Outcome: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var highest: UInt64
        public var outcomes: [UInt64: Outcome]
        /// When this epoch last recorded an outcome (the table's `tick`): the least recently
        /// used epoch of a client is forgotten first.
        public var lastUsed: UInt64

        public init(highest: UInt64, outcomes: [UInt64: Outcome], lastUsed: UInt64 = 0) {
            self.highest = highest
            self.outcomes = outcomes
            self.lastUsed = lastUsed
        }
    }

    public let window: UInt64
    /// Client id -> epoch -> its entry.
    public private(set) var clients: [String: [UInt64: Entry]] = [:]
    /// Counts records; stamps `Entry.lastUsed`.
    public private(set) var tick: UInt64 = 0

    /// Largest window accepted; larger values are clamped to it.
    public static var maxWindow: UInt64 { 1 << 20 }
    /// Epochs remembered per client: the current process's and a few before it, so that a
    /// late resend of a previous process is still answered `duplicate`.
    public static var maxEpochs: Int { 4 }

    public init(window: UInt64 = 256) {
        self.window = min(max(window, 1), Self.maxWindow)
    }

    /// Restores a table (from a checkpoint). A client with more than `maxEpochs` epochs keeps
    /// its most recently used ones.
    public init(window: UInt64, clients: [String: [UInt64: Entry]]) {
        self.init(window: window)
        for (client, epochs) in clients {
            var kept = epochs
            while kept.count > Self.maxEpochs, let oldest = Self.leastRecent(kept) { kept.removeValue(forKey: oldest) }
            if !kept.isEmpty { self.clients[client] = kept }
        }
        tick = clients.values.lazy.flatMap(\.values).map(\.lastUsed).max() ?? 0
    }

    public enum Lookup {
        /// Never seen: process it.
        case new
        /// Seen; here is what it came to.
        case seen(Outcome)
        /// Older than the window: processed long ago (or never sent).
        case tooOld
        /// More than the window ahead of the highest seq of its (non-zero) epoch: refused,
        /// never recorded. `highest` is the epoch's highest seq.
        case outOfRange(highest: UInt64)
    }

    /// What is known about (client, epoch, seq).
    public func lookup(client: String, epoch: UInt64 = 0, seq: UInt64) -> Lookup {
        guard let e = clients[client]?[epoch] else { return .new }
        if let o = e.outcomes[seq] { return .seen(o) }
        if e.highest >= window && seq <= e.highest - window { return .tooOld }
        if epoch != 0 && seq > e.highest && seq - e.highest > window { return .outOfRange(highest: e.highest) }
        return .new
    }

    /// Records the outcome of (client, epoch, seq) and forgets outcomes older than the
    /// window; a client's fifth epoch makes it forget its least recently used one.
    public mutating func record(client: String, epoch: UInt64 = 0, seq: UInt64, outcome: Outcome) {
        tick += 1
        var epochs = clients[client] ?? [:]
        var e = epochs[epoch] ?? Entry(highest: seq, outcomes: [:])
        e.outcomes[seq] = outcome
        e.lastUsed = tick
        if seq > e.highest { e.highest = seq }
        if e.outcomes.count > Int(window) * 2 {
            let floor = e.highest >= window ? e.highest - window : 0
            e.outcomes = e.outcomes.filter { $0.key > floor }
        }
        epochs[epoch] = e
        while epochs.count > Self.maxEpochs, let oldest = Self.leastRecent(epochs) { epochs.removeValue(forKey: oldest) }
        clients[client] = epochs
    }

    /// The outcome recorded for (client, seq) in any of its epochs (the most recently used
    /// first), for audits: nil when none is remembered.
    public func outcome(client: String, seq: UInt64) -> Outcome? {
        guard let epochs = clients[client] else { return nil }
        return epochs.values.sorted { $0.lastUsed > $1.lastUsed }.lazy.compactMap { $0.outcomes[seq] }.first
    }

    static func leastRecent(_ epochs: [UInt64: Entry]) -> UInt64? {
        epochs.min { ($0.value.lastUsed, $0.key) < ($1.value.lastUsed, $1.key) }?.key
    }

    /// Number of clients tracked.
    public var clientCount: Int { clients.count }

    /// Number of (client, epoch) windows tracked.
    public var epochCount: Int { clients.values.reduce(0) { $0 + $1.count } }
}
