import ApiaryCore
import ApiaryProtocol

/// Puts one aggregator's model broadcasts back together from their chunks: the whole model,
/// or one shard's range of it (chunk offsets are positions in the whole flat vector). Keeps
/// one version in progress; a chunk of another version replaces it (newest wins) and counts
/// as a gap when the one in progress was incomplete, so the client can ask for a snapshot.
struct ModelAssembler {
    /// A completed broadcast: the parameters of `range` at one version.
    struct Slice {
        var runID: UInt64
        var version: UInt64
        var values: [Float]
    }

    private var key: (runID: UInt64, version: UInt64)?
    private var buffer: [Float] = []
    private var seen: [Bool] = []
    private var remaining = 0
    /// Incomplete versions abandoned so far.
    private(set) var gaps = 0

    /// Adds one chunk of the range `range` of a model of `layout`; returns the complete
    /// slice when this chunk completed it. A chunk outside the range is ignored.
    mutating func add(_ h: ModelChunkHeader, payload: UnsafeRawBufferPointer, layout: ParameterLayout, range: Range<Int>) -> Slice? {
        guard h.layoutFingerprint == layout.fingerprint, h.parameterCount == UInt64(layout.parameterCount) else { return nil }
        let n = payload.count / 4
        guard h.chunkOffset >= UInt64(range.lowerBound), h.chunkOffset + UInt64(n) <= UInt64(range.upperBound),
              h.chunkCount >= 1, h.chunkIndex < h.chunkCount, Int(h.chunkCount) <= range.count + 1 else { return nil }
        if key == nil || key!.runID != h.runID || key!.version != h.version || seen.count != Int(h.chunkCount) {
            if key != nil && remaining > 0 { gaps += 1 }
            key = (h.runID, h.version)
            if buffer.count != range.count { buffer = [Float](repeating: 0, count: range.count) }
            seen = [Bool](repeating: false, count: Int(h.chunkCount))
            remaining = Int(h.chunkCount)
        }
        let i = Int(h.chunkIndex)
        guard !seen[i] else { return nil }
        let off = Int(h.chunkOffset) - range.lowerBound
        buffer.withUnsafeMutableBytes { dst in
            if n > 0 { dst.baseAddress!.advanced(by: off * 4).copyMemory(from: payload.baseAddress!, byteCount: n * 4) }
        }
        seen[i] = true
        remaining -= 1
        guard remaining == 0 else { return nil }
        key = nil
        return Slice(runID: h.runID, version: h.version, values: buffer)
    }
}
