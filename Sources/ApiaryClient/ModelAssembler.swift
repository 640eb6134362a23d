import ApiaryCore
import ApiaryProtocol

/// Puts model broadcasts back together from their chunks. Keeps one version in progress;
/// a chunk of another version replaces it (newest wins) and counts as a gap when the one in
/// progress was incomplete, so the client can ask for a snapshot.
struct ModelAssembler {
    private var key: (runID: UInt64, version: UInt64)?
    private var buffer: [Float] = []
    private var seen: [Bool] = []
    private var remaining = 0
    /// Incomplete versions abandoned so far.
    private(set) var gaps = 0

    /// Adds one chunk; returns the complete model when this chunk completed it.
    mutating func add(_ h: ModelChunkHeader, payload: UnsafeRawBufferPointer, layout: ParameterLayout) -> ModelSnapshot? {
        guard h.layoutFingerprint == layout.fingerprint, h.parameterCount == UInt64(layout.parameterCount) else { return nil }
        if key == nil || key!.runID != h.runID || key!.version != h.version || seen.count != Int(h.chunkCount) {
            if key != nil && remaining > 0 { gaps += 1 }
            key = (h.runID, h.version)
            if buffer.count != layout.parameterCount { buffer = [Float](repeating: 0, count: layout.parameterCount) }
            seen = [Bool](repeating: false, count: Int(h.chunkCount))
            remaining = Int(h.chunkCount)
        }
        let i = Int(h.chunkIndex)
        guard !seen[i] else { return nil }
        let n = payload.count / 4
        let off = Int(h.chunkOffset)
        buffer.withUnsafeMutableBytes { dst in
            if n > 0 { dst.baseAddress!.advanced(by: off * 4).copyMemory(from: payload.baseAddress!, byteCount: n * 4) }
        }
        seen[i] = true
        remaining -= 1
        guard remaining == 0 else { return nil }
        let done = ModelSnapshot(layout: layout, parameters: buffer, version: h.version, runID: h.runID)
        key = nil
        return done
    }
}
