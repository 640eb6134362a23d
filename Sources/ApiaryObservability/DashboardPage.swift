import Foundation

/// The dashboard served at `GET /`: one self-contained HTML file (inline CSS, JavaScript and
/// SVG; no CDN, no build step) that polls `/status` and `/history` every second.
public enum DashboardPage {
    /// The resource bundle's directory name, next to the `apiary` executable.
    static let bundleName = "Apiary_ApiaryObservability.resources"

    /// The page, read once from the module's resources. When the resource bundle was not
    /// shipped next to the executable, a short page says so (and `/status`, `/metrics` still work).
    public static let html: String = {
        for dir in candidateDirectories() {
            let url = dir.appendingPathComponent(bundleName).appendingPathComponent("dashboard.html")
            if let text = try? String(contentsOf: url, encoding: .utf8) { return text }
        }
        return """
            <!doctype html><meta charset="utf-8"><title>Apiary</title>
            <p>The dashboard page was not found: ship the directory <code>\(bundleName)</code> next to the
            <code>apiary</code> executable. <a href="/status">/status</a>, <a href="/history">/history</a> and
            <a href="/metrics">/metrics</a> work without it.</p>
            """
    }()

    /// Where SwiftPM puts resource bundles: next to the main executable (the `apiary` binary or
    /// the test runner), also when it is reached through a symbolic link.
    private static func candidateDirectories() -> [URL] {
        var dirs = [Bundle.main.bundleURL]
        if let exe = Bundle.main.executableURL {
            dirs.append(exe.deletingLastPathComponent())
            dirs.append(exe.resolvingSymlinksInPath().deletingLastPathComponent())
        }
        if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            dirs.append(URL(fileURLWithPath: link).deletingLastPathComponent())
        }
        return dirs
    }
}
