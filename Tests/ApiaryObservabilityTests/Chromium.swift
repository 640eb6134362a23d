import Foundation
import ApiaryTesting

/// Headless Chromium (Debian's `chromium`, installed by `make test`) for tests of real pages.
/// Every run gets its own profile directory; every process of a run is stopped before
/// `run` returns, also when the browser hangs.
enum Chromium {
    /// The browser executable (`APIARY_CHROMIUM`, or a usual path), nil when none is installed.
    static let executable: String? = {
        if let p = ProcessInfo.processInfo.environment["APIARY_CHROMIUM"], FileManager.default.isExecutableFile(atPath: p) { return p }
        return ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static let missing = "chromium is not installed: `make test` installs it (apt-get install -y chromium)"

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The page's DOM after its scripts ran for `budget` milliseconds of virtual time
    /// (virtual time stands still while fetches are in flight, so polling pages get their data).
    static func dumpDOM(_ url: String, budget: Int = 2500) throws -> String {
        try run(["--dump-dom", "--virtual-time-budget=\(budget)"], url: url)
    }

    /// Saves a PNG of the page after `budget` milliseconds of virtual time.
    static func screenshot(_ url: String, to path: String, width: Int = 1200, height: Int = 900, budget: Int = 2500) throws {
        try? FileManager.default.removeItem(atPath: path)
        _ = try run(["--screenshot=\(path)", "--window-size=\(width),\(height)", "--hide-scrollbars", "--virtual-time-budget=\(budget)"], url: url)
        guard FileManager.default.fileExists(atPath: path) else { throw Failure(description: "chromium wrote no screenshot to \(path)") }
    }

    /// Runs the browser headless on `url` and returns its standard output.
    static func run(_ arguments: [String], url: String, timeout: Double = 60) throws -> String {
        guard let executable else { throw Failure(description: missing) }
        let profile = FileManager.default.temporaryDirectory
            .appendingPathComponent("apiary-chromium-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer {
            stopProcesses(using: profile)
            try? FileManager.default.removeItem(atPath: profile)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                       "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                       "--disable-crash-reporter", "--user-data-dir=\(profile)"] + arguments + [url]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var data = Data()
        try p.run()
        // Read while it runs, so a large DOM cannot fill the pipe and stall the browser.
        DispatchQueue.global().async {
            data = out.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            stopProcesses(using: profile)
            p.waitUntilExit()
            _ = done.wait(timeout: .now() + 5)
            throw Failure(description: "chromium did not finish within \(timeout) s on \(url)")
        }
        stopProcesses(using: profile)
        _ = done.wait(timeout: .now() + 10)
        return String(decoding: data, as: UTF8.self)
    }

    /// SIGKILLs the processes of one run (helpers that outlive the browser), found by the
    /// run's unique profile directory on their command line: only processes this test started.
    private static func stopProcesses(using profile: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for entry in entries {
            guard let pid = Int32(entry), pid != getpid(),
                  let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            if String(decoding: cmdline, as: UTF8.self).contains(profile) { kill(pid, SIGKILL) }
        }
    }
}
