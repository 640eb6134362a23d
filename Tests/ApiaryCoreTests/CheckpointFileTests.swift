@testable import ApiaryCore
import Foundation
import Testing

/// A fresh temporary directory, removed after `body`.
func withCheckpointTempDirectory<R>(_ body: (URL) throws -> R) throws -> R {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("apiary-checkpoint-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

@Suite("Checkpoint files")
struct CheckpointFileTests {
    func names(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    @Test("file names hold the version in 20 digits")
    func fileNames() {
        #expect(Checkpoint.fileName(version: 42) == "checkpoint-00000000000000000042.safetensors")
        #expect(Checkpoint.fileName(version: .max) == "checkpoint-18446744073709551615.safetensors")
        #expect(Checkpoint.version(fileName: "checkpoint-00000000000000000042.safetensors") == 42)
        #expect(Checkpoint.version(fileName: Checkpoint.fileName(version: .max)) == .max)
        for bad in ["checkpoint-42.safetensors", "checkpoint-0000000000000000004x.safetensors",
                    ".tmp-checkpoint-00000000000000000042.safetensors.1.2", "checkpoint-00000000000000000042.safetensors.tmp",
                    "checkpoint-99999999999999999999.safetensors", "checkpoint-+0000000000000000042.safetensors"] {
            #expect(Checkpoint.version(fileName: bad) == nil, "\(bad)")
        }
    }

    @Test("write creates the directory, writes atomically and leaves no temporary file; read gives the state back")
    func writeRead() throws {
        try withCheckpointTempDirectory { (root: URL) throws in
            let dir = root.appendingPathComponent("a/b")
            let s = sampleCheckpointState()
            let url = try Checkpoint.write(s, to: dir)
            #expect(url.lastPathComponent == "checkpoint-00000000000000000042.safetensors")
            #expect(try names(dir) == ["checkpoint-00000000000000000042.safetensors"])
            #expect(try Checkpoint.read(url) == s)
            // Overwriting the same version replaces the file.
            var t = s
            t.createdAtMilliseconds += 1
            #expect(try Checkpoint.write(t, to: dir) == url)
            #expect(try names(dir) == ["checkpoint-00000000000000000042.safetensors"])
            #expect(try Checkpoint.read(url) == t)
        }
    }

    @Test("a failed write leaves no file behind")
    func failedWrite() throws {
        try withCheckpointTempDirectory { (root: URL) throws in
            var s = sampleCheckpointState()
            s.parameters = []
            guard case .invalidState? = checkpointError({ try Checkpoint.write(s, to: root) }) else { Issue.record("accepted"); return }
            #expect(try names(root) == [])
            // The directory is a file.
            let file = root.appendingPathComponent("file")
            _ = FileManager.default.createFile(atPath: file.path, contents: Data())
            guard case .io? = checkpointError({ try Checkpoint.write(sampleCheckpointState(), to: file) }) else { Issue.record("wrote"); return }
        }
    }

    @Test("reading a missing file, a directory or an empty file")
    func readErrors() throws {
        try withCheckpointTempDirectory { (root: URL) throws in
            guard case .io? = checkpointError({ try Checkpoint.read(root.appendingPathComponent("none")) }) else { Issue.record("none"); return }
            guard case .io? = checkpointError({ try Checkpoint.read(root) }) else { Issue.record("directory"); return }
            let empty = root.appendingPathComponent(Checkpoint.fileName(version: 1))
            _ = FileManager.default.createFile(atPath: empty.path, contents: Data())
            #expect(checkpointError { try Checkpoint.read(empty) } == .truncated(expected: 8, actual: 0))
        }
    }

    @Test("latestValid picks the newest valid checkpoint and reports the corrupt newer ones")
    func latestValid() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            #expect(Checkpoint.latestValid(in: dir) == nil)
            #expect(Checkpoint.latestValid(in: dir.appendingPathComponent("missing")) == nil)
            for v: UInt64 in [5, 10, 20, 30] { try Checkpoint.write(sampleCheckpointState(version: v), to: dir) }
            // 30: a flipped data byte; 20: truncated; and a temporary file that must be ignored.
            let u30 = dir.appendingPathComponent(Checkpoint.fileName(version: 30))
            var b = try Data(contentsOf: u30)
            b[b.count - 3] ^= 0x10
            try b.write(to: u30)
            let u20 = dir.appendingPathComponent(Checkpoint.fileName(version: 20))
            try Data(contentsOf: u20).prefix(100).write(to: u20)
            try Data("junk".utf8).write(to: dir.appendingPathComponent(".tmp-" + Checkpoint.fileName(version: 99) + ".1.2"))
            try Data("junk".utf8).write(to: dir.appendingPathComponent("notes.txt"))

            let found = try #require(Checkpoint.latestValid(in: dir))
            #expect(found.url.lastPathComponent == Checkpoint.fileName(version: 10))
            #expect(found.state == sampleCheckpointState(version: 10))
            #expect(found.skipped.map { $0.0.lastPathComponent } == [Checkpoint.fileName(version: 30), Checkpoint.fileName(version: 20)])
            guard case .checksumMismatch = found.skipped[0].1 else { Issue.record("\(found.skipped[0].1)"); return }
            guard case .truncated = found.skipped[1].1 else { Issue.record("\(found.skipped[1].1)"); return }
            #expect(Checkpoint.invalidFiles(in: dir).map { $0.0.lastPathComponent } == found.skipped.map { $0.0.lastPathComponent })
        }
    }

    @Test("a renamed checkpoint is skipped: its name and contents disagree on the version")
    func renamed() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            try Checkpoint.write(sampleCheckpointState(version: 7), to: dir)
            let url = try Checkpoint.write(sampleCheckpointState(version: 8), to: dir)
            try FileManager.default.moveItem(at: url, to: dir.appendingPathComponent(Checkpoint.fileName(version: 9)))
            let found = try #require(Checkpoint.latestValid(in: dir))
            #expect(found.state.version == 7)
            #expect(found.skipped.count == 1)
            #expect(found.skipped.first?.1 == .versionMismatch(fileName: 9, metadata: 8))
        }
    }

    @Test("with no valid checkpoint, latestValid is nil and invalidFiles tells why")
    func noneValid() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            try Data("junk".utf8).write(to: dir.appendingPathComponent(Checkpoint.fileName(version: 3)))
            #expect(Checkpoint.latestValid(in: dir) == nil)
            let bad = Checkpoint.invalidFiles(in: dir)
            #expect(bad.count == 1)
            guard case .truncated? = bad.first?.1 else { Issue.record("\(bad)"); return }
        }
    }

    @Test("prune keeps the newest N by version and leaves other files alone")
    func prune() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            for v: UInt64 in [1, 2, 3, 10, 100] { try Checkpoint.write(sampleCheckpointState(version: v), to: dir) }
            try Data("x".utf8).write(to: dir.appendingPathComponent("notes.txt"))
            let removed = try Checkpoint.prune(directory: dir, keep: 3)
            #expect(removed.map(\.lastPathComponent) == [Checkpoint.fileName(version: 2), Checkpoint.fileName(version: 1)])
            #expect(try names(dir) == [Checkpoint.fileName(version: 3), Checkpoint.fileName(version: 10),
                                       Checkpoint.fileName(version: 100), "notes.txt"])
            #expect(try Checkpoint.prune(directory: dir, keep: 3) == [])
            try Checkpoint.prune(directory: dir, keep: 0)
            #expect(try names(dir) == [Checkpoint.fileName(version: 100), "notes.txt"])
            #expect(try Checkpoint.prune(directory: dir.appendingPathComponent("missing"), keep: 1) == [])
        }
    }

    @Test("prune never deletes the file a run just wrote, even when other files have higher versions")
    func pruneProtects() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            for v: UInt64 in [50, 60, 70] { try Checkpoint.write(sampleCheckpointState(version: v), to: dir) }
            let mine = try Checkpoint.write(sampleCheckpointState(version: 3), to: dir)
            try Checkpoint.prune(directory: dir, keep: 1, protecting: mine)
            #expect(try names(dir) == [Checkpoint.fileName(version: 3)])
            for v: UInt64 in [50, 60] { try Checkpoint.write(sampleCheckpointState(version: v), to: dir) }
            try Checkpoint.prune(directory: dir, keep: 2, protecting: mine)
            #expect(try names(dir) == [Checkpoint.fileName(version: 3), Checkpoint.fileName(version: 60)])
        }
    }

    @Test("tidy removes .tmp- files and moves invalid checkpoints to corrupt/, leaving valid ones and other files")
    func tidy() throws {
        try withCheckpointTempDirectory { (dir: URL) throws in
            try Checkpoint.write(sampleCheckpointState(version: 1), to: dir)
            try Data("junk".utf8).write(to: dir.appendingPathComponent(Checkpoint.fileName(version: 2)))
            try Data("partial".utf8).write(to: dir.appendingPathComponent(".tmp-\(Checkpoint.fileName(version: 3)).1.ab"))
            try Data("x".utf8).write(to: dir.appendingPathComponent("notes.txt"))
            let done = try Checkpoint.tidy(directory: dir)
            #expect(done.removedTemporary.count == 1)
            #expect(done.quarantined.map(\.from.lastPathComponent) == [Checkpoint.fileName(version: 2)])
            #expect(try names(dir) == [Checkpoint.fileName(version: 1), "corrupt", "notes.txt"])
            #expect(try names(dir.appendingPathComponent("corrupt")) == [Checkpoint.fileName(version: 2)])
            // A second corrupt file of the same name does not overwrite the first.
            try Data("junk 2".utf8).write(to: dir.appendingPathComponent(Checkpoint.fileName(version: 2)))
            _ = try Checkpoint.tidy(directory: dir)
            #expect(try names(dir.appendingPathComponent("corrupt")).count == 2)
        }
    }
}
