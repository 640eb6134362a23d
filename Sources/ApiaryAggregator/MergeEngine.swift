import ApiaryCore
import ApiaryProtocol

/// The aggregator's model and its FedAsync merge path, without sockets: frames in,
/// receipt out. Validation order: decode, run id, layout, payload size, dedup, staleness,
/// finiteness; only then is the model touched. Owned by one thread.
final class MergeEngine {
    let layout: ParameterLayout
    let layoutFrame: [UInt8]
    let runID: UInt64
    var rule: FedAsync
    private(set) var version: UInt64
    private(set) var parameters: UnsafeMutableBufferPointer<Float>
    private var dedup: DedupTable<Receipt>
    var stats = AggregatorStats()

    init(layout: ParameterLayout, parameters initial: [Float], version: UInt64, runID: UInt64, rule: FedAsync, dedupWindow: UInt64) {
        precondition(initial.count == layout.parameterCount)
        precondition(initial.allSatisfy(\.isFinite), "the initial model must be finite")
        self.layout = layout
        self.layoutFrame = Codec.encodeLayout(layout)
        self.runID = runID
        self.rule = rule
        self.version = version
        self.parameters = .allocate(capacity: initial.count)
        _ = self.parameters.initialize(fromContentsOf: initial)
        self.dedup = DedupTable(window: dedupWindow)
        stats.version = version
    }

    deinit { parameters.deallocate() }

    /// What came of one inbound message.
    struct Outcome {
        /// The receipt to publish, when the sender could be identified.
        var receipt: Receipt?
        var reason: RejectReason
        /// Why it was rejected, for the log.
        var detail: String
    }

    /// Validates and, when valid, merges one CLIENT_UPDATE given as its frames.
    func ingest(_ frames: [UnsafeRawBufferPointer]) -> Outcome {
        stats.received += 1
        for f in frames { stats.bytesIn += UInt64(f.count) }

        let view: Codec.UpdateView
        do {
            view = try Codec.decodeUpdate(frames)
        } catch {
            // Receipt it when at least the header names a client.
            let sender = frames.first.flatMap { Codec.peekUpdateSender($0) }
            let header = sender.map { UpdateHeader(runID: runID, baseVersion: $0.baseVersion, seq: $0.seq, sampleCount: 0, clientID: $0.clientID) }
            return reject(header, reason: error.reason, detail: error.description, record: false)
        }
        let h = view.header

        switch dedup.lookup(client: h.clientID, seq: h.seq) {
        case .seen(let first):
            var r = first
            r.decision = .duplicate
            r.reason = .duplicate
            r.message = "already processed (\(first.decision)\(first.reason == .none ? "" : ": \(first.reason)")) at version \(first.modelVersion)"
            stats.rejected[.duplicate, default: 0] += 1
            return Outcome(receipt: r, reason: .duplicate, detail: r.message)
        case .tooOld:
            return reject(h, reason: .duplicate, detail: "seq \(h.seq) is older than the dedup window", record: false)
        case .new:
            break
        }

        guard h.runID == runID else {
            return reject(h, reason: .unknownBase, detail: "base model is from run \(hex(h.runID)), this is run \(hex(runID)): fetch a snapshot")
        }
        guard view.layoutFrame.elementsEqual(layoutFrame) else {
            let detail: String
            do {
                let theirs = try Codec.decodeLayout(view.layoutFrame)
                detail = "layout [\(theirs)] differs from the model's [\(layout)]"
            } catch {
                detail = error.description
            }
            return reject(h, reason: .layoutMismatch, detail: detail)
        }
        guard view.payloadBytes == layout.parameterCount * 4 else {
            return reject(h, reason: .layoutMismatch, detail: "payload is \(view.payloadBytes) bytes, the layout needs \(layout.parameterCount * 4)")
        }
        guard let s = FedAsync.staleness(currentVersion: version, baseVersion: h.baseVersion) else {
            return reject(h, reason: .unknownBase, detail: "base version \(h.baseVersion) is newer than the model (\(version))")
        }
        guard rule.accepts(staleness: s) else {
            return reject(h, reason: .tooStale, detail: "staleness \(s) exceeds the maximum \(rule.maxStaleness)", staleness: s)
        }
        let scan = PayloadScan.scan(view.payload, against: UnsafeBufferPointer(parameters))
        guard scan.allFinite else {
            return reject(h, reason: .nonFinite, detail: "payload has NaN or infinite values", staleness: s)
        }
        guard scan.deltaNorm.isFinite else {
            // update - model overflows float32: merging could make the model non-finite.
            return reject(h, reason: .normTooLarge, detail: "update differs from the model by more than float32 can hold", staleness: s)
        }

        let weight = rule.mixingWeight(staleness: s)
        var offset = 0
        for f in view.payload {
            let n = f.count / 4
            guard n > 0 else { continue }
            FedAsync.mix(into: UnsafeMutableBufferPointer(rebasing: parameters[offset..<(offset + n)]), update: f, weight: weight)
            offset += n
        }
        version += 1
        stats.version = version
        stats.merged += 1
        stats.stalenessSum += s
        stats.maxStaleness = max(stats.maxStaleness, s)
        let receipt = Receipt(clientID: h.clientID, runID: runID, seq: h.seq, baseVersion: h.baseVersion,
                              modelVersion: version, staleness: s, mixingWeight: weight, decision: .merged, reason: .none)
        dedup.record(client: h.clientID, seq: h.seq, outcome: receipt)
        return Outcome(receipt: receipt, reason: .none, detail: "")
    }

    private func reject(_ h: UpdateHeader?, reason: RejectReason, detail: String, staleness: UInt64? = nil, record: Bool = true) -> Outcome {
        stats.rejected[reason, default: 0] += 1
        guard let h else { return Outcome(receipt: nil, reason: reason, detail: detail) }
        let r = Receipt(clientID: h.clientID, runID: runID, seq: h.seq, baseVersion: h.baseVersion, modelVersion: version,
                        staleness: staleness, mixingWeight: 0, decision: .rejected, reason: reason, message: detail)
        if record { dedup.record(client: h.clientID, seq: h.seq, outcome: r) }
        return Outcome(receipt: r, reason: reason, detail: detail)
    }

    /// An immutable copy of the current model.
    func publishable() -> PublishedModel {
        PublishedModel(version: version, runID: runID, layout: layout, copying: UnsafeBufferPointer(parameters))
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}
