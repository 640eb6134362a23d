// libFuzzer harness over Apiary's wire decoders (ApiaryProtocol.Codec, SnapshotConfig) and the
// merge path (ApiaryMerge: MergeEngine.ingest). Built by Fuzz/build.sh, linked against the
// package's modules compiled with coverage and AddressSanitizer.
//
// Input format (see Fuzz/README.md):
//
//   input   := message{1,8}                   bytes after the 8th message are ignored
//   message := control:u8 frame{n}            n = (control & 0x07) + 1, so 1...8 frames
//   frame   := length:u16le bytes[length]     a short input gives the frame what is left;
//                                             frames after the end of the input are empty
//
//   control bits 3-5  engine setting for this message's ingest (see `FuzzSetup.settings`)
//   control bit  6    misalignment: every frame of the message starts 1 byte past a malloc'd
//                     (16-aligned) address instead of at it
//   control bit  7    resend: ingest the same frames a second time (must be a duplicate)
//
// Every frame is copied into its own heap block of exactly its size, so AddressSanitizer sees
// any read past a frame's end. Each message goes to every decoder (each frame to the
// single-frame decoders) and then to a MergeEngine (one per input, created from static state,
// so that every input replays deterministically), and to a second MergeEngine in FedBuff mode
// (a buffer of 2 deltas, Adam as the server step: codec-encoded deltas, top-k entries and the
// flush are on this path). A thrown WireError is fine; a trap, an ASan
// report or a violated invariant (`check`, which prints "fuzz invariant violated" and aborts)
// is a bug.

import ApiaryCore
import ApiaryMerge
import ApiaryProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Static setup

enum FuzzSetup {
    /// W[4,3], b[3]: 15 parameters.
    static let layout: ParameterLayout = try! ParameterLayout([
        TensorSpec(name: "W", shape: [4, 3]),
        TensorSpec(name: "b", shape: [3]),
    ])
    static let initial: [Float] = (0..<15).map { Float($0) * 0.25 - 1.5 }
    static let runID: UInt64 = 0xA91A_0000_0000_0001
    /// The engine starts at this version, so base versions 0...2 are known, 3 and up are not.
    static let initialVersion: UInt64 = 2
    /// Small, so that the window's eviction is reachable within one input.
    static let dedupWindow: UInt64 = 2
    /// Engine settings selected by control bits 3-5: the merge rule, the bound on the update
    /// norm and what is done over it, and the client id the connection authenticated as. Every rule is a valid configuration (FedAsync.validationError() is nil).
    struct Setting: Sendable {
        var rule: FedAsync
        var normBound: Double? = nil
        var clip = false
        var authenticatedID: String? = nil
    }
    static let settings: [Setting] = [
        Setting(rule: FedAsync(alpha: 0.6, staleness: .polynomial(a: 0.5), maxStaleness: 4)),
        Setting(rule: FedAsync(alpha: 1.0, staleness: .constant, maxStaleness: 4), normBound: 4),            // weight 1: copy path
        Setting(rule: FedAsync(alpha: 0.3, staleness: .hinge(a: 10, b: 1), maxStaleness: 1000), normBound: 2, clip: true),
        Setting(rule: FedAsync(alpha: 0.0, staleness: .constant, maxStaleness: 0)),                          // weight 0: no-op merge
        Setting(rule: FedAsync(alpha: 0.99999999, staleness: .constant, maxStaleness: 4),                    // Float(weight) == 1
                authenticatedID: "c1"),
        Setting(rule: FedAsync(alpha: 1.0, staleness: .polynomial(a: 1e-9), maxStaleness: 1000), normBound: 3e38, clip: true,
                authenticatedID: "c2"),
        Setting(rule: FedAsync(alpha: 0.5, staleness: .hinge(a: 0, b: 0), maxStaleness: .max)),
        Setting(rule: FedAsync(alpha: 1e-300, staleness: .polynomial(a: 2), maxStaleness: 4), normBound: 1e-30,
                authenticatedID: "not a valid id"),
    ]
    static let verbose: Bool = getenv("APIARY_FUZZ_VERBOSE") != nil
}

@inline(never)
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
           file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        eprint("fuzz invariant violated (\(file):\(line)): \(message())")
        abort()
    }
}

@inline(__always)
func log(_ s: @autoclosure () -> String) {
    if FuzzSetup.verbose { eprint(s()) }
}

func eprint(_ s: String) {
    var line = s + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

// MARK: - Frames

/// Heap copies of a message's frames, each in its own exactly sized block.
struct FrameSet {
    var frames: [UnsafeRawBufferPointer] = []
    private var blocks: [UnsafeMutableRawPointer] = []

    init(_ sources: [UnsafeRawBufferPointer], misalign: Int) {
        for s in sources {
            let block = UnsafeMutableRawPointer.allocate(byteCount: s.count + misalign, alignment: 16)
            let start = block + misalign
            if let b = s.baseAddress, s.count > 0 { start.copyMemory(from: b, byteCount: s.count) }
            blocks.append(block)
            frames.append(UnsafeRawBufferPointer(start: start, count: s.count))
        }
    }

    init(_ arrays: [[UInt8]]) {
        for a in arrays {
            let block = UnsafeMutableRawPointer.allocate(byteCount: a.count, alignment: 16)
            a.withUnsafeBytes { if let b = $0.baseAddress, !a.isEmpty { block.copyMemory(from: b, byteCount: a.count) } }
            blocks.append(block)
            frames.append(UnsafeRawBufferPointer(start: block, count: a.count))
        }
    }

    func free() { for b in blocks { b.deallocate() } }
}

struct ParsedMessage {
    var control: UInt8
    var frames: [UnsafeRawBufferPointer]   // slices of the fuzzer's input
}

func split(_ input: UnsafeRawBufferPointer) -> [ParsedMessage] {
    var messages: [ParsedMessage] = []
    var at = 0
    while at < input.count && messages.count < 8 {
        let control = input[at]
        at += 1
        var frames: [UnsafeRawBufferPointer] = []
        for _ in 0..<(Int(control & 7) + 1) {
            var length = 0
            if at + 2 <= input.count {
                length = Int(input[at]) | Int(input[at + 1]) << 8
                at += 2
            } else {
                at = input.count
            }
            length = min(length, input.count - at)
            frames.append(UnsafeRawBufferPointer(rebasing: input[at..<(at + length)]))
            at += length
        }
        messages.append(ParsedMessage(control: control, frames: frames))
    }
    return messages
}

func bytes(_ b: UnsafeRawBufferPointer) -> [UInt8] { Array(b) }

// MARK: - Decoders

/// Runs every decoder over one message and checks what succeeds against the encoders.
func fuzzDecoders(_ frames: [UnsafeRawBufferPointer]) {
    for f in frames {
        _ = try? Codec.messageType(ofHeader: f)

        let peek = Codec.peekUpdateSender(f)
        if let h = try? Codec.decodeUpdateHeader(f) {
            check(Codec.encode(h) == bytes(f), "decodeUpdateHeader: re-encoding differs from the frame")
            check(peek != nil && peek!.clientID == h.clientID && peek!.seq == h.seq && peek!.baseVersion == h.baseVersion,
                  "peekUpdateSender disagrees with decodeUpdateHeader")
        }
        if let peek {
            check(ClientID.isValid(peek.clientID), "peekUpdateSender returned an invalid client id")
        }

        if let q = try? Codec.decodeSnapshotRequest(f) {
            check(Codec.encode(q) == bytes(f), "decodeSnapshotRequest: re-encoding differs from the frame")
        }

        if let l = try? Codec.decodeLayout(f) {
            check(Codec.encodeLayout(l) == bytes(f), "decodeLayout: re-encoding differs from the frame")
            _ = l.fingerprint
            _ = l.description
            for i in l.tensors.indices { _ = l.range(ofTensor: i) }
        }

        if let c = try? SnapshotConfig.decode(f) {
            let again = c.encoded().withUnsafeBytes { try? SnapshotConfig.decode($0) }
            check(again == c, "SnapshotConfig: decode(encoded()) differs from the decoded config")
        }

        if let m = try? Codec.decodeMetrics(f) {
            check(UpdateMetrics.validationError(m) == nil, "decodeMetrics accepted metrics that do not validate")
            let again = Codec.encodeMetrics(m).withUnsafeBytes { try? Codec.decodeMetrics($0) }
            check(again == m, "decodeMetrics(encodeMetrics(m)) differs from m")
        }
    }

    if let e = try? Codec.decodeEvaluationReport(frames) {
        check(Codec.encode(e)[0] == bytes(frames[0]), "decodeEvaluationReport: header re-encoding differs from the frame")
        check(!e.metrics.isEmpty && UpdateMetrics.validationError(e.metrics) == nil, "decodeEvaluationReport accepted bad metrics")
        let peek = Codec.peekUpdateSender(frames[0])
        check(peek?.clientID == e.clientID && peek?.seq == e.seq, "peekUpdateSender disagrees with decodeEvaluationReport")
    }

    if let v = try? Codec.decodeUpdate(frames) {
        check(v.header == (try? Codec.decodeUpdateHeader(frames[0])), "decodeUpdate header differs from decodeUpdateHeader")
        check(v.payloadBytes == v.payload.reduce(0) { $0 + $1.count }, "decodeUpdate payloadBytes is not the payload's size")
        check(v.payload.allSatisfy { $0.count % v.header.codec.valueBytes == 0 }, "decodeUpdate accepted a misaligned payload frame")
        check(v.header.codec != .int8 || v.payload.allSatisfy { $0.count == 0 || $0.count > 4 }, "decodeUpdate accepted an int8 frame without values")
        check(v.header.codec != .topK || v.header.isDelta, "decodeUpdate accepted top-k on a full model")
        if v.header.codec == .topK {
            var last = -1
            var ordered = true
            UpdateCodec.forEachEntry(v.payload) { i, _ in ordered = ordered && i > last; last = i }
            check(ordered && v.shape.extent == last + 1, "decodeUpdate accepted top-k indices out of order")
        }
    }

    if let c = try? Codec.decodeModelChunk(frames) {
        check(Codec.encode(c.header) == bytes(frames[1]), "decodeModelChunk: re-encoding differs from the header frame")
        check(c.header.chunkOffset + UInt64(c.payload.count / 4) <= c.header.parameterCount, "decodeModelChunk: chunk out of bounds")
    }

    if let s = try? Codec.decodeSnapshotReply(frames) {
        check(Codec.encode(s.header) == bytes(frames[0]), "decodeSnapshotReply: re-encoding differs from the header frame")
        check(Codec.encodeLayout(s.layout) == bytes(frames[1]), "decodeSnapshotReply: layout re-encoding differs")
        check(s.payload.reduce(0) { $0 + $1.count } == s.layout.parameterCount * 4, "decodeSnapshotReply: payload size")
        // What a client does with a reply: assemble the model.
        if s.layout.parameterCount <= 1 << 16 {
            var x = [Float](repeating: 0, count: s.layout.parameterCount)
            var o = 0
            for p in s.payload {
                for j in 0..<(p.count / 4) { x[o + j] = p.loadUnaligned(fromByteOffset: j * 4, as: Float.self) }
                o += p.count / 4
            }
            _ = ModelSnapshot(layout: s.layout, parameters: x, version: s.header.version, runID: s.header.runID)
        }
    }

    if let r = try? Codec.decodeReceipt(frames) {
        let enc = Codec.encode(r)
        check(enc.count == 3 && enc[0] == bytes(frames[0]) && enc[1] == bytes(frames[1]) && enc[2] == bytes(frames[2]),
              "decodeReceipt: re-encoding differs from the frames")
    }
}

// MARK: - Validator and merge

func sameReceipt(_ a: Receipt, _ b: Receipt) -> Bool {
    a.clientID == b.clientID && a.runID == b.runID && a.seq == b.seq && a.baseVersion == b.baseVersion
        && a.modelVersion == b.modelVersion && a.staleness == b.staleness
        && a.mixingWeight.bitPattern == b.mixingWeight.bitPattern && a.decision == b.decision && a.reason == b.reason
}

/// A receipt the engine produces must survive its own encoder and decoder.
func checkReceiptRoundTrip(_ r: Receipt) {
    let fs = FrameSet(Codec.encode(r))
    defer { fs.free() }
    let decoded: Receipt
    do {
        decoded = try Codec.decodeReceipt(fs.frames)
    } catch {
        check(false, "the engine's receipt does not decode: \(error) (client '\(r.clientID)', reason \(r.reason))")
        return
    }
    check(sameReceipt(decoded, r), "receipt round trip changed a field: \(r) -> \(decoded)")
    let m = Array(r.message.utf8), d = Array(decoded.message.utf8)
    if m.count <= Codec.maxReceiptMessageBytes {
        check(d == m, "receipt message changed in the round trip")
    } else {
        check(d.count <= Codec.maxReceiptMessageBytes && d.count >= Codec.maxReceiptMessageBytes - 3 && m.starts(with: d),
              "receipt message truncated wrongly: \(m.count) -> \(d.count) bytes")
    }
}

func snapshotParameters(_ e: MergeEngine) -> [UInt32] { e.parameters.map(\.bitPattern) }

/// One ingest into the FedBuff engine, then a flush when the buffer is full, with their
/// invariants: a valid delta is deferred (no receipt, the model as it was), a rejection changes
/// nothing, a flush makes exactly one version with every contribution receipted at it, and the
/// model stays finite.
func ingestBuffered(_ engine: MergeEngine, _ frames: [UnsafeRawBufferPointer], authenticatedID: String?) {
    guard let buffer = engine.buffer else { return }
    let versionBefore = engine.version, paramsBefore = snapshotParameters(engine), countBefore = buffer.count
    let out = engine.ingest(frames, authenticatedID: authenticatedID)
    log("  fedbuff ingest -> reason \(out.reason) receipt \(out.receipt.map { "\($0.decision)" } ?? "none") \(out.detail)")
    check(engine.version == versionBefore && snapshotParameters(engine) == paramsBefore, "fedbuff: an ingest changed the model before a flush")
    if out.reason == .none {
        check(out.receipt == nil && out.detail == "deferred", "fedbuff: a valid delta was receipted before its flush")
        check(buffer.count == countBefore || buffer.count == countBefore + 1, "fedbuff: buffer went \(countBefore) -> \(buffer.count)")
    } else {
        check(buffer.count == countBefore, "fedbuff: a rejected update (\(out.reason)) entered the buffer")
        check(out.receipt?.decision != .merged, "fedbuff: a merged receipt with reason \(out.reason)")
    }
    let pending = buffer.count
    let flushed = engine.flushBufferIfReady(now: .now)
    if flushed.isEmpty {
        check(engine.version == versionBefore, "fedbuff: version moved without a flush")
    } else {
        check(flushed.count == pending && buffer.count == 0, "fedbuff: the flush took \(flushed.count) of \(pending) deltas")
        check(engine.version == versionBefore + 1, "fedbuff: a flush made version \(versionBefore) -> \(engine.version)")
        var total = 0.0
        for o in flushed {
            check(o.receipt?.decision == .merged && o.receipt?.modelVersion == engine.version, "fedbuff: a flushed delta's receipt is wrong")
            let w = o.receipt?.mixingWeight ?? -1
            check(w >= 0 && w <= 1, "fedbuff: mixing weight \(w) out of [0, 1]")
            total += w
        }
        check(total <= 1 + 1e-9, "fedbuff: mixing weights add up to \(total)")
    }
    for (i, x) in engine.parameters.enumerated() { check(x.isFinite, "fedbuff: parameter \(i) is \(x)") }
}

/// One ingest with its invariants. Returns the outcome.
@discardableResult
func ingestChecked(_ engine: MergeEngine, _ frames: [UnsafeRawBufferPointer], authenticatedID: String?) -> MergeEngine.Outcome {
    let versionBefore = engine.version
    let paramsBefore = snapshotParameters(engine)
    let receivedBefore = engine.stats.received
    let dedupTickBefore = engine.dedup.tick

    let out = engine.ingest(frames, authenticatedID: authenticatedID)
    log("  ingest -> reason \(out.reason) receipt \(out.receipt.map { "\($0.decision) v\($0.modelVersion)" } ?? "none") \(out.detail)")
    // A seq out of range of its client epoch is never recorded (it cannot move the window).
    if out.reason == .seqOutOfRange {
        check(engine.dedup.tick == dedupTickBefore, "a seq_out_of_range update was recorded in the dedup table")
    }

    // Every model parameter stays finite.
    for (i, x) in engine.parameters.enumerated() {
        check(x.isFinite, "parameter \(i) is \(x) after ingest (reason \(out.reason), detail '\(out.detail)')")
    }

    let merged = out.reason == .none
    if merged {
        check(out.receipt?.decision == .merged, "reason none without a merged receipt")
        check(engine.version == versionBefore + 1, "merged but version went \(versionBefore) -> \(engine.version)")
        check(out.receipt?.modelVersion == engine.version, "merged receipt names version \(String(describing: out.receipt?.modelVersion)), model is at \(engine.version)")
        if let r = out.receipt {
            check(r.mixingWeight >= 0 && r.mixingWeight <= 1, "mixing weight \(r.mixingWeight) out of [0, 1]")
            check(r.staleness != nil && r.baseVersion + r.staleness! == versionBefore, "merged receipt's staleness is wrong")
        }
    } else {
        check(out.receipt?.decision != .merged, "a merged receipt with reason \(out.reason)")
        check(engine.version == versionBefore, "not merged (\(out.reason)) but version went \(versionBefore) -> \(engine.version)")
        check(snapshotParameters(engine) == paramsBefore, "not merged (\(out.reason)) but the model changed")
    }
    if let r = out.receipt {
        check(r.reason == out.reason, "receipt reason \(r.reason) differs from outcome reason \(out.reason)")
        check(r.runID == FuzzSetup.runID, "receipt run id is not the engine's")
        if let authenticatedID {
            check(r.clientID == authenticatedID, "receipt for '\(r.clientID)' on a connection authenticated as '\(authenticatedID)'")
        }
        checkReceiptRoundTrip(r)
    }
    check(engine.stats.received == receivedBefore + 1, "stats.received did not count the update")
    check(engine.stats.merged + engine.stats.rejectedTotal == engine.stats.received,
          "stats: merged \(engine.stats.merged) + rejected \(engine.stats.rejectedTotal) != received \(engine.stats.received)")
    check(engine.stats.version == engine.version, "stats.version \(engine.stats.version) != version \(engine.version)")
    return out
}

// MARK: - Entry point

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)

    let engine = MergeEngine(layout: FuzzSetup.layout, parameters: FuzzSetup.initial, version: FuzzSetup.initialVersion,
                             runID: FuzzSetup.runID, rule: FuzzSetup.settings[0].rule, dedupWindow: FuzzSetup.dedupWindow)
    let buffered = MergeEngine(layout: FuzzSetup.layout, parameters: FuzzSetup.initial, version: FuzzSetup.initialVersion,
                               runID: FuzzSetup.runID, rule: FuzzSetup.settings[0].rule, dedupWindow: FuzzSetup.dedupWindow)
    buffered.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 2, maxWait: nil, exampleWeighting: true, exampleCap: 100,
                                                      optimizer: .init(kind: .adam, learningRate: 0.1)),
                                parameterCount: FuzzSetup.initial.count)
    // The same deltas into a trimmed-mean buffer and a central-DP buffer (fixed noise seed: the
    // harness must replay its inputs exactly).
    let robust = MergeEngine(layout: FuzzSetup.layout, parameters: FuzzSetup.initial, version: FuzzSetup.initialVersion,
                             runID: FuzzSetup.runID, rule: FuzzSetup.settings[0].rule, dedupWindow: FuzzSetup.dedupWindow)
    robust.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 3, maxWait: nil, aggregate: .trimmedMean, trimFraction: 0.34),
                              parameterCount: FuzzSetup.initial.count)
    let privateBuffer = MergeEngine(layout: FuzzSetup.layout, parameters: FuzzSetup.initial, version: FuzzSetup.initialVersion,
                                    runID: FuzzSetup.runID, rule: FuzzSetup.settings[0].rule, dedupWindow: FuzzSetup.dedupWindow)
    var dp = PrivacyConfig(mode: .central, clip: 1, noiseMultiplier: 0.5, delta: 1e-5, epsilonBudget: 40, noiseSeed: 1)
    dp.adaptiveClipping = .init()
    privateBuffer.buffer = FedBuffer(config: FedBuffConfig(bufferSize: 2, maxWait: nil, privacy: dp), parameterCount: FuzzSetup.initial.count)

    for (k, m) in split(input).enumerated() {
        let fs = FrameSet(m.frames, misalign: Int(m.control >> 6) & 1)
        defer { fs.free() }
        log("message \(k): control 0x\(String(m.control, radix: 16)), frames \(fs.frames.map(\.count))")

        fuzzDecoders(fs.frames)

        let setting = FuzzSetup.settings[Int(m.control >> 3) & 7]
        check(setting.rule.validationError() == nil, "harness setting is not a valid configuration")
        engine.rule = setting.rule
        engine.maxUpdateNorm = setting.normBound
        engine.normPolicy = setting.clip ? .clip : .reject
        if let header = fs.frames.first, Codec.isEvaluationReport(header) {
            // An evaluation report is recorded or rejected; it never touches the model.
            let versionBefore = engine.version, paramsBefore = snapshotParameters(engine), receivedBefore = engine.stats.received
            let out = engine.ingestReport(fs.frames, authenticatedID: setting.authenticatedID)
            check(engine.version == versionBefore && snapshotParameters(engine) == paramsBefore, "an evaluation report changed the model")
            check(engine.stats.received == receivedBefore, "an evaluation report was counted as an update")
            if let r = out.receipt {
                check(r.decision == .recorded || r.decision == .rejected || r.decision == .duplicate, "report receipt decision \(r.decision)")
                checkReceiptRoundTrip(r)
            }
            continue
        }
        buffered.rule = setting.rule
        buffered.maxUpdateNorm = setting.normBound
        buffered.normPolicy = setting.clip ? .clip : .reject
        ingestBuffered(buffered, fs.frames, authenticatedID: setting.authenticatedID)
        for other in [robust, privateBuffer] {
            other.rule = setting.rule
            other.maxUpdateNorm = setting.normBound
            other.normPolicy = setting.clip ? .clip : .reject
            ingestBuffered(other, fs.frames, authenticatedID: setting.authenticatedID)
        }
        if let p = privateBuffer.buffer?.privacy {
            check(p.clip.isFinite && p.clip > 0 && p.epsilon.isFinite && p.epsilon >= 0, "central DP: clip \(p.clip), epsilon \(p.epsilon)")
            check(p.epsilon <= 40, "central DP: epsilon \(p.epsilon) went over the budget 40")
        }
        let first = ingestChecked(engine, fs.frames, authenticatedID: setting.authenticatedID)

        if m.control & 0x80 != 0 {
            // A resend of the same frames: anything that decoded and passed the identity check
            // was recorded (or is older than the window), so the answer is `duplicate` and the
            // model stays as it is. A seq out of range of its client epoch is never recorded
            // (PROTOCOL.md 4.1 step 3): its resend is refused the same way.
            let second = ingestChecked(engine, fs.frames, authenticatedID: setting.authenticatedID)
            if first.reason == .seqOutOfRange {
                check(second.reason == .seqOutOfRange, "a resend of a seq out of range was not refused again: \(second.reason)")
            } else if (try? Codec.decodeUpdate(fs.frames)) != nil, first.reason != .identityMismatch, first.reason != .unknownClient {
                check(second.reason == .duplicate, "a resend was not a duplicate: first \(first.reason), then \(second.reason)")
                if second.receipt?.decision == .duplicate, let a = first.receipt, let b = second.receipt {
                    check(a.modelVersion == b.modelVersion && a.baseVersion == b.baseVersion,
                          "duplicate receipt names version \(b.modelVersion), the first said \(a.modelVersion)")
                }
            } else {
                check(second.reason == first.reason, "an undecodable resend changed its reason: \(first.reason) -> \(second.reason)")
            }
        }
    }

    let published = engine.publishable()
    check(published.version == engine.version && published.parameters.map(\.bitPattern) == snapshotParameters(engine),
          "publishable() differs from the engine's model")
    return 0
}
