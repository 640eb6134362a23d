import ApiaryCore
import ApiaryProtocol
import Testing

/// Decoders must only ever throw `WireError` (guaranteed by typed throws) and never trap, on
/// any input. A trap would crash the test process, so reaching the end is the assertion.
@Suite("Decoders on random and mutated bytes")
struct FuzzTests {
    /// Every decoder entry point. (Each thrown error costs a backtrace capture under Swift
    /// Testing, so a fuzz iteration runs one entry point, round-robin, to stay fast.)
    enum EntryPoint: CaseIterable {
        case modelChunk, snapshotReply, update, receipt, messageType, snapshotRequest, updateHeader, layout, config, checkPayload
        case peekUpdateSender, evaluationReport, metrics
    }

    /// Runs `entry` on `frames` (single-frame decoders get frame `pick % count`); returns
    /// the error, or nil when it decoded. Errors are only ever `WireError` (typed throws); touching
    /// `reason` and `description` checks those never trap either.
    @discardableResult
    static func run(_ entry: EntryPoint, _ frames: [[UInt8]], pick: Int = 0) -> WireError? {
        withFrames(frames) { v -> WireError? in
            let one = v.isEmpty ? UnsafeRawBufferPointer(start: nil, count: 0) : v[pick % v.count]
            do throws(WireError) {
                switch entry {
                case .modelChunk: _ = try Codec.decodeModelChunk(v)
                case .snapshotReply:
                    let view = try Codec.decodeSnapshotReply(v)
                    _ = view.payload.reduce(0) { $0 + $1.count }
                case .update:
                    let view = try Codec.decodeUpdate(v)
                    _ = try? Codec.decodeLayout(view.layoutFrame)
                case .receipt: _ = try Codec.decodeReceipt(v)
                case .messageType: _ = try Codec.messageType(ofHeader: one)
                case .snapshotRequest: _ = try Codec.decodeSnapshotRequest(one)
                case .updateHeader: _ = try Codec.decodeUpdateHeader(one)
                case .layout: _ = try Codec.decodeLayout(one)
                case .config: _ = try SnapshotConfig.decode(one)
                case .checkPayload: try Codec.checkPayload(v[...], parameterCount: pick % 12)
                case .evaluationReport: _ = try Codec.decodeEvaluationReport(v)
                case .metrics: _ = try Codec.decodeMetrics(one)
                case .peekUpdateSender:
                    if let s = Codec.peekUpdateSender(one), !ClientID.isValid(s.clientID) {
                        Issue.record("peekUpdateSender returned an invalid id \(s.clientID.debugDescription)")
                    }
                }
                return nil
            } catch {
                _ = error.reason
                _ = error.description
                return error
            }
        }
    }

    /// The entry points that decode what `decoder` decodes.
    static func entryPoints(for decoder: MalformedInputTests.Decoder) -> [EntryPoint] {
        switch decoder {
        case .modelChunk: [.modelChunk]
        case .snapshotRequest: [.snapshotRequest, .messageType]
        case .snapshotReply: [.snapshotReply, .layout, .config, .checkPayload]
        case .update: [.update, .layout, .peekUpdateSender]
        case .updateHeader: [.updateHeader, .messageType, .peekUpdateSender]
        case .receipt: [.receipt]
        }
    }

    @Test("20,000 random frame lists, some with a valid header prefix, never trap")
    func randomFrames() {
        var rng = SplitMix64(seed: 0xA91A_7217)
        var decoded = 0
        var kinds: Set<WireError.Kind> = []
        for iteration in 0..<20_000 {
            let count = rng.below(6)
            var frames: [[UInt8]] = []
            for _ in 0..<count {
                var frame = rng.bytes(rng.below(101))
                switch rng.below(6) {
                case 0, 1:
                    // A valid common prefix with a random (mostly known) type, then random bytes.
                    let type = UInt8(rng.below(7))
                    let prefix: [UInt8] = [0x41, 0x50, 0x52, 0x59, 1, type, 0, 0]
                    frame = prefix + frame.dropFirst(min(frame.count, 8))
                case 2:
                    // A plausible topic.
                    frame = rng.below(2) == 0 ? Topic.model : Topic.receipt(clientID: "c\(rng.below(3))")
                case 3:
                    // A small layout-looking frame.
                    frame = [UInt8(rng.below(3)), 0, 0, 0] + frame
                default:
                    break
                }
                frames.append(frame)
            }
            let entry = EntryPoint.allCases[iteration % EntryPoint.allCases.count]
            if let error = Self.run(entry, frames, pick: rng.below(6)) { kinds.insert(error.kind) } else { decoded += 1 }
        }
        // Random input rarely forms a valid message, but it must reach past the header checks.
        #expect(decoded < 20_000)
        #expect(kinds.isSuperset(of: [.wrongFrameCount, .truncated, .badMagic, .unknownMessageType, .unexpectedMessageType,
                                      .reservedBitsSet, .invalidTopic, .invalidLayout, .misalignedPayloadFrame, .payloadSize,
                                      .invalidConfig]), "\(kinds)")
    }

    @Test("mutations of valid messages never trap", arguments: MalformedInputTests.Decoder.allCases)
    func mutations(decoder: MalformedInputTests.Decoder) {
        var rng = SplitMix64(seed: 0x5EED ^ UInt64(decoder.rawValue.utf8.count))
        let valid = decoder.valid
        let entries = Self.entryPoints(for: decoder)
        #expect(Self.run(entries[0], valid, pick: decoder.headerIndex) == nil)
        for iteration in 0..<3_000 {
            var frames = valid
            for _ in 0...rng.below(3) {
                guard !frames.isEmpty else { break }
                let i = rng.below(frames.count)
                switch rng.below(6) {
                case 0 where !frames[i].isEmpty:
                    frames[i][rng.below(frames[i].count)] ^= UInt8(1 << rng.below(8))
                case 1 where !frames[i].isEmpty:
                    frames[i][rng.below(frames[i].count)] = UInt8(truncatingIfNeeded: rng.next())
                case 2:
                    frames[i] = Array(frames[i].prefix(rng.below(frames[i].count + 1)))
                case 3:
                    frames[i] += rng.bytes(rng.below(9))
                case 4:
                    if rng.below(2) == 0 { frames.remove(at: i) } else { frames.insert(rng.bytes(rng.below(16)), at: i) }
                default:
                    // Set a length-ish byte to an extreme.
                    if frames[i].count > 8 { frames[i][8 + rng.below(frames[i].count - 8)] = [0, 0xFF, 0x7F, 0x80][rng.below(4)] }
                }
            }
            Self.run(entries[iteration % entries.count], frames, pick: rng.below(6))
        }
    }

    @Test("every single-byte value at every header position decodes or throws cleanly", arguments: MalformedInputTests.Decoder.allCases)
    func exhaustiveHeaderBytes(decoder: MalformedInputTests.Decoder) {
        let valid = decoder.valid
        let header = valid[decoder.headerIndex]
        for position in 0..<header.count {
            for value in [UInt8(0), 1, 2, 4, 7, 8, 9, 0x7F, 0x80, 0xFE, 0xFF] {
                var h = header
                h[position] = value
                _ = decoder.error(decoder.withHeader(h))
            }
        }
    }
}
