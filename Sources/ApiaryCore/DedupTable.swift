/// Remembers which (client id, seq) updates were processed, and what their receipt said,
/// so that a resent update is never merged twice and gets the same answer again.
///
/// Per client it keeps the highest seq seen and the outcomes of the last `window` seqs.
/// A seq below `highest - window` is reported as already processed: clients keep only a
/// bounded number of updates pending, so such a seq can only be a stale resend.
public struct DedupTable<Outcome: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var highest: UInt64
        public var outcomes: [UInt64: Outcome]

        public init(highest: UInt64, outcomes: [UInt64: Outcome]) {
            self.highest = highest
            self.outcomes = outcomes
        }
    }

    public let window: UInt64
    public private(set) var clients: [String: Entry] = [:]

    /// Largest window accepted; larger values are clamped to it.
    public static var maxWindow: UInt64 { 1 << 20 }

    public init(window: UInt64 = 256) {
        self.window = min(max(window, 1), Self.maxWindow)
    }

    /// Restores a table (from a checkpoint).
    public init(window: UInt64, clients: [String: Entry]) {
        self.init(window: window)
        self.clients = clients
    }

    public enum Lookup {
        /// Never seen: process it.
        case new
        /// Seen; here is what it came to.
        case seen(Outcome)
        /// Older than the window: processed long ago (or never sent).
        case tooOld
    }

    /// What is known about (client, seq).
    public func lookup(client: String, seq: UInt64) -> Lookup {
        guard let e = clients[client] else { return .new }
        if let o = e.outcomes[seq] { return .seen(o) }
        if e.highest >= window && seq <= e.highest - window { return .tooOld }
        return .new
    }

    /// Records the outcome of (client, seq) and forgets outcomes older than the window.
    public mutating func record(client: String, seq: UInt64, outcome: Outcome) {
        var e = clients[client] ?? Entry(highest: seq, outcomes: [:])
        e.outcomes[seq] = outcome
        if seq > e.highest { e.highest = seq }
        if e.outcomes.count > Int(window) * 2 {
            let floor = e.highest >= window ? e.highest - window : 0
            e.outcomes = e.outcomes.filter { $0.key > floor }
        }
        clients[client] = e
    }

    /// Number of clients tracked.
    public var clientCount: Int { clients.count }
}
