import ApiaryCore
import ApiaryProtocol
import Foundation

/// The aggregator's model and its FedAsync merge path, without sockets: frames in,
/// receipt out. Validation order: decode, run id, layout, payload size, dedup, staleness,
/// finiteness, norm bound, anomaly filter (FedAsync); only then is the model touched. Owned by one thread.
package final class MergeEngine {
    /// The whole model's layout (what clients send in their layout frame).
    package let layout: ParameterLayout
    /// The part of the flat vector held and merged here: a shard's range, or all of it.
    package let range: Range<Int>
    /// The layout of `range` (what checkpoints store).
    package let storedLayout: ParameterLayout
    package let layoutFrame: [UInt8]
    package let runID: UInt64
    package var rule: FedAsync
    package var maxUpdateNorm: Double?
    package var normPolicy: NormPolicy = .reject
    /// Local DP the aggregator requires (PROTOCOL.md 4.8): an update must say it was privatized
    /// (header flag bit 3), else it is rejected `not_privatized`. Nil: the bit is ignored.
    package private(set) var localPrivacy: LocalDPConfig?

    /// Requires local DP of every update; the counters show it with one client's epsilon at `delta`.
    package func requireLocalPrivacy(_ l: LocalDPConfig, delta: Double) {
        localPrivacy = l
        stats.localPrivacy = LocalPrivacyStatus(config: l, delta: delta)
    }
    package var version: UInt64
    package private(set) var parameters: UnsafeMutableBufferPointer<Float>
    package var dedup: DedupTable<UpdateOutcome>
    /// Sync mode (FedAvg rounds) when set.
    package var round: FedAvgRound?
    /// Buffered mode (FedBuff) when set; with neither, FedAsync.
    package var buffer: FedBuffer? {
        didSet { stats.privacy = buffer?.privacy?.status }
    }
    /// FedAsync's anomaly filter (`AnomalyFilter`), when enabled: outliers are rejected as `anomalous`.
    package var anomaly: AnomalyFilter? {
        didSet { anomaly?.record(version: version, model: UnsafeBufferPointer(parameters)) }
    }
    /// The algorithm these settings make.
    package var algorithm: Algorithm { round != nil ? .fedavg : buffer != nil ? .fedbuff : .fedasync }
    package var stats = MergeStats()

    /// `initial` holds the parameters of `range` (all of the model when nil).
    package init(layout: ParameterLayout, range: Range<Int>? = nil, parameters initial: [Float], version: UInt64, runID: UInt64, rule: FedAsync, dedupWindow: UInt64) {
        let range = range ?? 0..<layout.parameterCount
        precondition(initial.count == range.count)
        precondition(initial.allSatisfy(\.isFinite), "the initial model must be finite")
        self.layout = layout
        self.range = range
        self.storedLayout = layout.slice(range)
        self.layoutFrame = Codec.encodeLayout(layout)
        self.runID = runID
        self.rule = rule
        self.version = version
        self.parameters = .allocate(capacity: initial.count)
        _ = self.parameters.initialize(fromContentsOf: initial)
        self.dedup = DedupTable(window: dedupWindow)
        stats.version = version
    }

    /// Resumes from a checkpoint.
    package convenience init(resuming c: CheckpointState, layout: ParameterLayout? = nil, range: Range<Int>? = nil, rule: FedAsync, dedupWindow: UInt64) {
        self.init(layout: layout ?? c.layout, range: range, parameters: c.parameters, version: c.version, runID: c.runID, rule: rule, dedupWindow: dedupWindow)
        dedup = DedupTable(window: dedupWindow, clients: c.dedup)
    }

    deinit {
        parameters.deallocate()
        scratch.deallocate()
    }

    /// Where dense codecs other than float32 are decoded, a piece at a time (never the whole
    /// update: PROTOCOL.md 3.4.1).
    private let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 16_384)

    /// The update's dense values as float32 buffers (float32 frames in place).
    package func denseBlocks(_ view: Codec.UpdateView) -> DenseBlocks<ArraySlice<UnsafeRawBufferPointer>> {
        DenseBlocks(view.payload, codec: view.header.codec, scratch: scratch)
    }

    /// Everything needed to resume at the current version (copies the model).
    package func checkpointState() -> CheckpointState {
        var s = CheckpointState(runID: runID, version: version, layout: storedLayout, parameters: Array(parameters), rule: rule,
                                dedupWindow: dedup.window, dedup: dedup.clients,
                                createdAtMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        // The server optimizer's moments survive a restart (the buffer itself is never
        // checkpointed: its deltas are not acknowledged until it is flushed).
        if let o = buffer?.optimizer ?? round?.optimizer {
            s.optimizer = .init(kind: o.config.kind.rawValue, steps: o.steps, m: o.m, v: o.v)
        }
        s.privacy = buffer?.privacy?.checkpointState
        return s
    }

    /// What came of one inbound message.
    package struct Outcome {
        /// The receipt to publish, when the sender could be identified.
        package var receipt: Receipt?
        package var reason: RejectReason
        /// Why it was rejected, for the log.
        package var detail: String
        /// L2 norm of update - model, when it was computed.
        package var updateNorm: Double? = nil
        package var sampleCount: UInt64 = 0
        /// The metrics the update carried (merged updates only).
        package var metrics: [String: Double] = [:]
        /// The recorded evaluation report, when the message was one.
        package var report: EvaluationReport? = nil
    }

    /// Validates and, when valid, merges one CLIENT_UPDATE given as its frames.
    /// `authenticatedID` is the client id the ZAP handler assigned to the connection (nil
    /// without authentication); an update claiming another id is rejected, and the receipt
    /// goes to the authenticated id, never to the one claimed.
    package func ingest(_ frames: [UnsafeRawBufferPointer], authenticatedID: String? = nil) -> Outcome {
        stats.received += 1
        for f in frames { stats.bytesIn += UInt64(f.count) }

        let view: Codec.UpdateView
        do {
            view = try Codec.decodeUpdate(frames)
        } catch {
            // Receipt it when at least the header names a client.
            let sender = frames.first.flatMap { Codec.peekUpdateSender($0) }
            let header = sender.map {
                UpdateHeader(runID: runID, baseVersion: $0.baseVersion, seq: $0.seq, sampleCount: 0,
                             clientID: authenticatedID.flatMap { ClientID.isValid($0) ? $0 : nil } ?? (authenticatedID == nil ? $0.clientID : ""))
            }.flatMap { $0.clientID.isEmpty ? nil : $0 }
            return reject(header, reason: error.reason, detail: error.description, record: false)
        }
        var h = view.header
        if let authenticatedID, authenticatedID != h.clientID {
            let claimed = h.clientID
            guard ClientID.isValid(authenticatedID) else {
                return reject(nil, reason: .unknownClient, detail: "connection has no authenticated client id", record: false)
            }
            h.clientID = authenticatedID
            return reject(h, reason: .identityMismatch, detail: "update claims client id '\(claimed)' but the connection is '\(authenticatedID)'", record: false)
        }

        switch dedup.lookup(client: h.clientID, epoch: h.epoch, seq: h.seq) {
        case .seen(let first):
            let r = duplicateReceipt(to: h.clientID, seq: h.seq, first: first)
            stats.rejected[.duplicate, default: 0] += 1
            return Outcome(receipt: r, reason: .duplicate, detail: r.message, sampleCount: h.sampleCount)
        case .tooOld:
            return reject(h, reason: .duplicate, detail: "seq \(h.seq) is older than the dedup window", record: false)
        case .outOfRange(let highest):
            return reject(h, reason: .seqOutOfRange, detail: Self.outOfRangeDetail(seq: h.seq, highest: highest, window: dedup.window), record: false)
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
        if h.codec.isSparse {
            guard view.shape.extent <= range.count else {
                return reject(h, reason: .badEncoding, detail: "top-k index \(view.shape.extent - 1) is out of range: the \(range.count == layout.parameterCount ? "model" : "shard \(range)") has \(range.count) values")
            }
        } else if view.shape.count != range.count {
            let part = range.count == layout.parameterCount ? "the layout needs" : "shard \(range) needs"
            if h.codec == .denseFloat32 {
                return reject(h, reason: .layoutMismatch, detail: "payload is \(view.payloadBytes) bytes, \(part) \(range.count * 4)")
            }
            return reject(h, reason: .layoutMismatch, detail: "\(h.codec.name) payload holds \(view.shape.count) values, \(part) \(range.count)")
        }
        guard let s = FedAsync.staleness(currentVersion: version, baseVersion: h.baseVersion) else {
            return reject(h, reason: .unknownBase, detail: "base version \(h.baseVersion) is newer than the model (\(version))")
        }
        guard rule.accepts(staleness: s) else {
            return reject(h, reason: .tooStale, detail: "staleness \(s) exceeds the maximum \(rule.maxStaleness)", staleness: s)
        }
        guard h.isDelta == algorithm.sendsDeltas else {
            let detail = h.isDelta
                ? "update is a delta (header flag bit 1) but algorithm \(algorithm) takes the trained model"
                : "update is a full model but algorithm \(algorithm) takes deltas (trained - base, header flag bit 1)"
            return reject(h, reason: .wrongUpdateKind, detail: detail, staleness: s)
        }
        if let l = localPrivacy, !h.isPrivatized {
            return reject(h, reason: .notPrivatized, detail: "this aggregator requires local differential privacy (snapshot config local_dp: clip_norm "
                          + "\(l.clipNorm), noise_multiplier \(l.noiseMultiplier)) and the update is not flagged as privatized (header flag bit 3): "
                          + "clip and noise it on the client (PROTOCOL.md 4.8)", staleness: s)
        }
        // The norm bound applies to what the update changes: `update - model`, or the delta.
        let scan: PayloadScan
        if h.codec.isSparse {
            scan = PayloadScan.scan { each in UpdateCodec.forEachEntry(view.payload) { _, v in each(v) } }
        } else if let b = buffer {
            scan = b.zeros.withUnsafeBufferPointer { PayloadScan.scan(denseBlocks(view), against: $0) }
        } else {
            scan = PayloadScan.scan(denseBlocks(view), against: UnsafeBufferPointer(parameters))
        }
        guard scan.allFinite else {
            return reject(h, reason: .nonFinite, detail: "payload has NaN or infinite values", staleness: s)
        }
        guard scan.deltaNorm.isFinite else {
            // update - model overflows float32: merging could make the model non-finite.
            return reject(h, reason: .normTooLarge, detail: "update differs from the model by more than float32 can hold", staleness: s)
        }
        var weight = rule.mixingWeight(staleness: s)
        var clip = 1.0
        if let bound = maxUpdateNorm, scan.deltaNorm > bound {
            switch normPolicy {
            case .reject:
                var o = reject(h, reason: .normTooLarge, detail: "update norm \(scan.deltaNorm) exceeds the bound \(bound)", staleness: s)
                o.updateNorm = scan.deltaNorm
                return o
            case .clip:
                // Mixing in the update scaled to the bound is mixing in the update with a
                // proportionally smaller weight.
                clip = bound / scan.deltaNorm
                weight *= clip
            }
        }
        if let anomaly, round == nil, buffer == nil {
            let base = anomaly.model(at: h.baseVersion)
            let judge = { (b: UnsafeBufferPointer<Float>) in
                var v = anomaly.judge(self.denseBlocks(view), base: b)
                v.againstBase = base != nil
                if v.rejection == nil { anomaly.learn(self.denseBlocks(view), base: b, verdict: v) }
                return v
            }
            let verdict = base.map { $0.withUnsafeBufferPointer(judge) } ?? judge(UnsafeBufferPointer(parameters))
            if let why = verdict.rejection {
                var o = reject(h, reason: .anomalous, detail: why, staleness: s)
                o.updateNorm = scan.deltaNorm
                return o
            }
        }
        if round != nil {
            return contribute(h, payload: denseBlocks(view), norm: scan.deltaNorm, clip: clip)
        }
        if let buffer {
            if buffer.contains(client: h.clientID, epoch: h.epoch, seq: h.seq) {
                // A resend of a delta still in the buffer: its receipt comes with the flush.
                stats.rejected[.duplicate, default: 0] += 1
                return Outcome(receipt: nil, reason: .none, detail: "deferred", sampleCount: h.sampleCount)
            }
            if let p = buffer.privacy {
                guard p.canStep else {
                    return reject(h, reason: .unavailable, detail: p.exhaustedMessage, staleness: s)
                }
                // One delta per client per buffer: the accountant's sensitivity (one client moves
                // the noised sum by at most C) holds only so. A fast client's next delta waits
                // for the next model.
                guard !buffer.holds(client: h.clientID) else {
                    return reject(h, reason: .unavailable, detail: "central DP takes one delta per client per buffer (so that one client moves "
                                  + "the noised sum by at most privacy.clip) and this client's is in the current one: train on the next model",
                                  staleness: s)
                }
                // Central DP: every delta is clipped to privacy.clip (on top of the norm policy).
                clip = min(clip, p.admit(norm: scan.deltaNorm))
            }
            return self.buffer(h, view: view, staleness: s, norm: scan.deltaNorm, clip: clip)
        }
        var offset = 0
        for f in denseBlocks(view) {
            let n = f.count / 4
            guard n > 0 else { continue }
            FedAsync.mix(into: UnsafeMutableBufferPointer(rebasing: parameters[offset..<(offset + n)]), update: f, weight: weight)
            offset += n
        }
        version += 1
        anomaly?.record(version: version, model: UnsafeBufferPointer(parameters))
        stats.version = version
        stats.merged += 1
        stats.unsentMerges += 1
        stats.unsentSamples &+= h.sampleCount
        stats.stalenessSum += s
        stats.maxStaleness = max(stats.maxStaleness, s)
        let r = receipt(for: h, .merged, staleness: s, weight: weight)
        dedup.record(client: h.clientID, epoch: h.epoch, seq: h.seq, outcome: r.outcome)
        return Outcome(receipt: r, reason: .none, detail: "", updateNorm: scan.deltaNorm, sampleCount: h.sampleCount,
                       metrics: view.metrics)
    }

    /// Validates and records one EVALUATION_REPORT given as its frames: the sender is checked
    /// like an update's, the (client id, seq) dedup is shared with its updates, the model
    /// evaluated must be one of this run's versions. Nothing of the model changes.
    package func ingestReport(_ frames: [UnsafeRawBufferPointer], authenticatedID: String? = nil) -> Outcome {
        for f in frames { stats.bytesIn += UInt64(f.count) }
        stats.reportsReceived += 1
        func refuse(_ id: String?, seq: UInt64, version: UInt64, _ reason: RejectReason, _ detail: String, record: Bool = false,
                    epoch: UInt64 = 0) -> Outcome {
            stats.reportsRejected += 1
            guard let id else { return Outcome(receipt: nil, reason: reason, detail: detail) }
            let r = receipt(to: id, seq: seq, base: version, .rejected, reason, message: detail)
            if record { dedup.record(client: id, epoch: epoch, seq: seq, outcome: r.outcome) }
            return Outcome(receipt: r, reason: reason, detail: detail)
        }
        let report: EvaluationReport
        do {
            report = try Codec.decodeEvaluationReport(frames)
        } catch {
            let sender = frames.first.flatMap { Codec.peekUpdateSender($0) }
            let id = sender.flatMap { s in authenticatedID.map { ClientID.isValid($0) ? $0 : "" } ?? s.clientID }
            return refuse(id?.isEmpty == false ? id : nil, seq: sender?.seq ?? 0, version: sender?.baseVersion ?? 0, error.reason,
                          "evaluation report: \(error.description)")
        }
        if let authenticatedID, authenticatedID != report.clientID {
            guard ClientID.isValid(authenticatedID) else {
                return refuse(nil, seq: 0, version: 0, .unknownClient, "connection has no authenticated client id")
            }
            return refuse(authenticatedID, seq: report.seq, version: report.version, .identityMismatch,
                          "evaluation report claims client id '\(report.clientID)' but the connection is '\(authenticatedID)'")
        }
        switch dedup.lookup(client: report.clientID, epoch: report.epoch, seq: report.seq) {
        case .seen(let first):
            let r = duplicateReceipt(to: report.clientID, seq: report.seq, first: first)
            return Outcome(receipt: r, reason: .duplicate, detail: r.message)
        case .tooOld:
            return refuse(report.clientID, seq: report.seq, version: report.version, .duplicate, "seq \(report.seq) is older than the dedup window")
        case .outOfRange(let highest):
            return refuse(report.clientID, seq: report.seq, version: report.version, .seqOutOfRange,
                          Self.outOfRangeDetail(seq: report.seq, highest: highest, window: dedup.window))
        case .new:
            break
        }
        guard report.runID == runID else {
            return refuse(report.clientID, seq: report.seq, version: report.version, .unknownBase,
                          "evaluated a model of run \(hex(report.runID)), this is run \(hex(runID)): fetch a snapshot", record: true,
                          epoch: report.epoch)
        }
        guard report.version <= version else {
            return refuse(report.clientID, seq: report.seq, version: report.version, .unknownBase,
                          "evaluated version \(report.version) is newer than the model (\(version))", record: true, epoch: report.epoch)
        }
        stats.reportsRecorded += 1
        let r = receipt(to: report.clientID, seq: report.seq, base: report.version, .recorded, staleness: version - report.version)
        dedup.record(client: report.clientID, epoch: report.epoch, seq: report.seq, outcome: r.outcome)
        return Outcome(receipt: r, reason: .none, detail: "", sampleCount: report.exampleCount, metrics: report.metrics, report: report)
    }

    package func reject(_ h: UpdateHeader?, reason: RejectReason, detail: String, staleness: UInt64? = nil, record: Bool = true) -> Outcome {
        stats.rejected[reason, default: 0] += 1
        guard let h else { return Outcome(receipt: nil, reason: reason, detail: detail) }
        let r = receipt(for: h, .rejected, reason, staleness: staleness, message: detail)
        if record { dedup.record(client: h.clientID, epoch: h.epoch, seq: h.seq, outcome: r.outcome) }
        return Outcome(receipt: r, reason: reason, detail: detail, sampleCount: h.sampleCount)
    }

    /// The receipt message of a `seq_out_of_range` refusal.
    static func outOfRangeDetail(seq: UInt64, highest: UInt64, window: UInt64) -> String {
        "seq \(seq) is more than the dedup window (\(window)) ahead of this client epoch's highest seq \(highest): "
            + "not recorded; send the next seq after \(highest), or start a new epoch"
    }

    // MARK: Relay mode (gateways)

    /// The upstream model the local progress is measured from: `parameters - anchor` is what
    /// the devices contributed since. Nil after a resume: the first rebase then keeps the
    /// resumed model (its merges were acknowledged) and takes the upstream model as anchor.
    package var anchor: [Float]?

    /// Moves the model onto a newer upstream model `g`, keeping the local progress:
    /// `x = g + (x - anchor)`, then `anchor = g`; a new version. Returns false (and changes
    /// nothing) when `g` does not fit or is not finite. Where keeping the progress would not
    /// be finite, that parameter takes `g`'s value.
    package func rebase(onto g: [Float]) -> Bool {
        guard g.count == range.count, g.allSatisfy(\.isFinite) else { return false }
        if let anchor {
            for i in 0..<g.count {
                let v = g[i] + (parameters[i] - anchor[i])
                parameters[i] = v.isFinite ? v : g[i]
            }
        }
        anchor = g
        version += 1
        anomaly?.record(version: version, model: UnsafeBufferPointer(parameters))
        stats.version = version
        stats.rebases += 1
        return true
    }

    /// The model as local progress to push upstream; it becomes the new anchor's offset
    /// base, so the same progress is not counted again by the next rebase.
    package func takeProgress() -> RelayProgress {
        var p = RelayProgress(parameters: Array(parameters), version: version, merges: stats.unsentMerges, samples: stats.unsentSamples)
        if let a = anchor {
            p.delta = zip(p.parameters, a).map { $0 - $1 }
            anchor = p.parameters
        }
        stats.unsentMerges = 0
        stats.unsentSamples = 0
        return p
    }

    /// A push the tier above did not merge: its progress (`delta`, over `ranges` of the
    /// vector) counts as unsent again, so the next rebase keeps it (`anchor -= delta`).
    package func restore(progress delta: [Float], in ranges: [Range<Int>]) {
        guard var a = anchor, delta.count == a.count else { return }
        for r in ranges {
            let r = r.clamped(to: 0..<a.count)
            for i in r { a[i] -= delta[i] }
        }
        anchor = a
        stats.restoredPushes += 1
        stats.unsentMerges += 1  // so it goes up with the next push, even if no device sends more
    }

    /// An immutable copy of the current model.
    package func publishable() -> PublishedModel {
        PublishedModel(version: version, runID: runID, layout: layout, range: range, copying: UnsafeBufferPointer(parameters))
    }
}

package func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}

extension Receipt {
    /// The part of the receipt the dedup table keeps.
    package var outcome: UpdateOutcome {
        UpdateOutcome(decision: decision, reason: reason, baseVersion: baseVersion, modelVersion: modelVersion,
                      staleness: staleness, mixingWeight: mixingWeight)
    }
}
