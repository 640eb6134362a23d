#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Checkpoint {
    /// Writes `state` to `directory/checkpoint-<version>.safetensors` atomically and durably:
    /// the bytes go to a temporary file in the same directory (`.tmp-checkpoint-...`), which is
    /// fsynced and renamed over the final name, then the directory is fsynced. A crash leaves
    /// either the old file or the complete new one (and at worst a stray `.tmp-` file, which
    /// readers ignore). Creates the directory if needed. Returns the file's URL.
    @discardableResult
    public static func write(_ state: CheckpointState, to directory: URL) throws(CheckpointError) -> URL {
        let bytes = try encode(state)
        try createDirectory(directory)
        let name = fileName(version: state.version)
        let final = directory.appendingPathComponent(name)
        let temp = directory.appendingPathComponent(
            "\(tempFilePrefix)\(name).\(getpid()).\(String(UInt64.random(in: 0...UInt64.max), radix: 16))")

        let fd = open(temp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw posixError("cannot create", temp) }
        var ok = false
        defer {
            if !ok { unlink(temp.path) }
        }
        do {
            defer { close(fd) }
            let written: Bool = bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = posixWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return false
                    }
                    offset += n
                }
                return true
            }
            guard written else { throw posixError("cannot write", temp) }
            guard fsync(fd) == 0 else { throw posixError("cannot fsync", temp) }
        }
        guard rename(temp.path, final.path) == 0 else { throw posixError("cannot rename to \(final.lastPathComponent):", temp) }
        ok = true
        let dfd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw posixError("cannot open directory", directory) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw posixError("cannot fsync directory", directory) }
        return final
    }

    /// Reads and validates the checkpoint at `url` (container, format, checksum, layout
    /// fingerprint, every metadata entry).
    public static func read(_ url: URL) throws(CheckpointError) -> CheckpointState {
        try decode(try readBytes(url))
    }

    /// Like `read`, but reports a checksum mismatch instead of throwing it.
    public static func inspect(_ url: URL) throws(CheckpointError) -> CheckpointInspection {
        try inspect(try readBytes(url))
    }

    /// The checkpoint files in `directory` (by name: `checkpoint-<20 digits>.safetensors`),
    /// newest version first. Temporary files and other names are ignored.
    public static func files(in directory: URL) -> [(url: URL, version: UInt64)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        return names.compactMap { n in version(fileName: n).map { (directory.appendingPathComponent(n), $0) } }
            .sorted { $0.version > $1.version }
    }

    /// The newest checkpoint in `directory` that reads back valid, and the newer ones skipped
    /// as invalid with their errors (log one line each). Nil when there is none (see
    /// `invalidFiles(in:)` for what was wrong then).
    public static func latestValid(in directory: URL) -> (url: URL, state: CheckpointState, skipped: [(URL, CheckpointError)])? {
        var skipped: [(URL, CheckpointError)] = []
        for (url, version) in files(in: directory) {
            switch validate(url, version: version) {
            case .success(let state): return (url, state, skipped)
            case .failure(let e): skipped.append((url, e))
            }
        }
        return nil
    }

    /// Every checkpoint file in `directory` that is invalid, with its error, newest first.
    public static func invalidFiles(in directory: URL) -> [(URL, CheckpointError)] {
        files(in: directory).compactMap { url, version in
            if case .failure(let e) = validate(url, version: version) { return (url, e) }
            return nil
        }
    }

    /// Whether `path` (symbolic links followed) is a directory; nil when nothing is there.
    /// (FileManager's `fileExists(atPath:isDirectory:)` takes an ObjCBool in Foundation and a
    /// Bool in FoundationEssentials.)
    private static func isDirectory(_ path: String) -> Bool? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `directory` and its missing parents (`mkdir -p`). The error names the path that
    /// could not be created and the system's reason ("Permission denied", "Not a directory",
    /// "Read-only file system"), not an opaque Foundation code.
    public static func createDirectory(_ directory: URL) throws(CheckpointError) {
        let path = directory.standardizedFileURL.path
        if let isDir = isDirectory(path) {
            guard isDir else { throw .io("cannot create directory \(path): a file of that name exists") }
            return
        }
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                let cause = String(cString: strerror(errno))
                throw .io("cannot create directory \(path): \(cause)" + (prefix == path ? "" : " (at \(prefix))"))
            }
        }
        guard isDirectory(path) == true else {
            throw .io("cannot create directory \(path): a part of the path is not a directory")
        }
    }

    /// The subdirectory of a state directory that invalid checkpoint files are moved to.
    public static let corruptDirectoryName = "corrupt"

    /// What `tidy(directory:)` did.
    public struct Tidied: Sendable {
        /// Partial files of interrupted writes (`.tmp-...`), removed.
        public var removedTemporary: [URL] = []
        /// Invalid checkpoint files, moved from `from` to `to` (in `corrupt/`), with the reason.
        public var quarantined: [(from: URL, to: URL, error: CheckpointError)] = []
    }

    /// Start-up housekeeping of a state directory, before it is resumed from: removes the
    /// partial files a crash left behind (`.tmp-checkpoint-...`) and moves every checkpoint
    /// file that does not read back valid into `directory/corrupt/` (never deleted: they are
    /// the operator's to inspect), so that invalid files can neither be resumed from nor count
    /// toward `keep` in `prune`. Call it only while holding the directory (one aggregator per
    /// state directory), since it removes temporary files of any writer.
    public static func tidy(directory: URL) throws(CheckpointError) -> Tidied {
        var done = Tidied()
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return done }
        for name in names.sorted() where name.hasPrefix(tempFilePrefix) {
            let url = directory.appendingPathComponent(name)
            guard unlink(url.path) == 0 || errno == ENOENT else { throw posixError("cannot remove the partial checkpoint", url) }
            done.removedTemporary.append(url)
        }
        let corrupt = directory.appendingPathComponent(corruptDirectoryName)
        for (url, version) in files(in: directory) {
            guard case .failure(let error) = validate(url, version: version) else { continue }
            if mkdir(corrupt.path, 0o755) != 0 && errno != EEXIST { throw posixError("cannot create", corrupt) }
            var target = corrupt.appendingPathComponent(url.lastPathComponent)
            var n = 1
            while FileManager.default.fileExists(atPath: target.path) {
                target = corrupt.appendingPathComponent("\(url.lastPathComponent).\(n)")
                n += 1
            }
            guard rename(url.path, target.path) == 0 else { throw posixError("cannot move the corrupt checkpoint to \(target.path):", url) }
            done.quarantined.append((url, target, error))
        }
        if !done.quarantined.isEmpty || !done.removedTemporary.isEmpty {
            let dfd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 {
                fsync(dfd)
                close(dfd)
            }
        }
        return done
    }

    /// Deletes all but the newest `keep` checkpoint files (by name; at least one is kept).
    /// `protecting` (the file a run just wrote, its newest durable state) is never deleted and
    /// counts as one of the `keep`, whatever the versions of the other files.
    /// Returns the deleted files.
    @discardableResult
    public static func prune(directory: URL, keep: Int, protecting: URL? = nil) throws(CheckpointError) -> [URL] {
        let all = files(in: directory)
        let protected = protecting.map(\.standardizedFileURL.path)
        let others = all.filter { $0.url.standardizedFileURL.path != protected }
        let kept = max(1, keep) - (others.count < all.count ? 1 : 0)
        let doomed = others.dropFirst(kept).map(\.url)
        for url in doomed where unlink(url.path) != 0 && errno != ENOENT {
            throw posixError("cannot delete", url)
        }
        return Array(doomed)
    }

    private static func validate(_ url: URL, version: UInt64) -> Result<CheckpointState, CheckpointError> {
        Result { () throws(CheckpointError) in
            let s = try read(url)
            guard s.version == version else { throw .versionMismatch(fileName: version, metadata: s.version) }
            return s
        }
    }

    static func readBytes(_ url: URL) throws(CheckpointError) -> [UInt8] {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError("cannot open", url) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw posixError("cannot stat", url) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .io("\(url.path) is not a regular file") }
        var out: [UInt8] = []
        out.reserveCapacity(Int(st.st_size) + 1)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { posixRead(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("cannot read", url)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    private static func posixError(_ what: String, _ url: URL) -> CheckpointError {
        .io("\(what) \(url.path): \(String(cString: strerror(errno)))")
    }
}

// The POSIX calls, under names that do not clash with Checkpoint.write / Checkpoint.read.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    write(fd, p, n)
}

private func posixRead(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Int {
    read(fd, p, n)
}
