import ApiaryCore
import Foundation
import Testing

/// Runs `/usr/bin/env python3 arguments...`; returns the exit status and stdout + stderr, or
/// nil when it cannot be started.
private func runPython(_ arguments: [String]) -> (status: Int32, output: String)? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3"] + arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Whether python3 with numpy is on this machine.
private let pythonWithNumpy: Bool = runPython(["-c", "import numpy"])?.status == 0

@Suite("Checkpoint interop")
struct CheckpointInteropTests {
    @Test("Tests/interop/read_checkpoint.py reads a checkpoint with numpy and verifies its checksum",
          .enabled(if: pythonWithNumpy, "needs python3 with numpy"))
    func python() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("Tests/interop/read_checkpoint.py").path
        try withCheckpointTempDirectory { (dir: URL) throws in
            let state = sampleCheckpointState(version: 123_456_789)
            let url = try Checkpoint.write(state, to: dir)
            let r = try #require(runPython([script, url.path]))
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("version 123456789"), "\(r.output)")
            #expect(r.output.contains("tensor W F32 shape [3, 2] data_offsets [0, 24]"), "\(r.output)")
            #expect(r.output.contains("tensor b F32 shape [2] data_offsets [24, 32]"), "\(r.output)")
            #expect(r.output.contains("checksum ok"), "\(r.output)")

            // The script detects a corrupted file too.
            var bytes = try Data(contentsOf: url)
            bytes[bytes.count - 1] ^= 1
            try bytes.write(to: url)
            let bad = try #require(runPython([script, url.path]))
            #expect(bad.status == 1, "\(bad.output)")
            #expect(bad.output.contains("checksum mismatch"), "\(bad.output)")
        }
    }
}
