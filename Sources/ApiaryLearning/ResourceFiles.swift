#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The bundled files of this module (`digits.csv`, `partition.json`), found without Foundation's
/// Bundle, so that a program using them (the edge client) links FoundationEssentials only.
///
/// Where SwiftPM puts them on Linux: the resource directory `Apiary_ApiaryLearning.resources`
/// next to the executable (what `Bundle.module` looks at first; `make edge-dist` ships it there
/// too), else this module's `Resources` folder in the source tree (a program run from where it
/// was built). On Darwin, Bundle.module.
enum ResourceFiles {
    static let directoryName = "Apiary_ApiaryLearning.resources"

    /// The path of the bundled file `name`, or nil when it is in neither place.
    static func path(_ name: String) -> String? {
        #if canImport(Darwin)
        let dot = name.lastIndex(of: ".")!
        return Bundle.module.url(forResource: String(name[..<dot]), withExtension: String(name[name.index(after: dot)...]))?.path
        #else
        var candidates: [String] = []
        if let exe = executablePath(), let slash = exe.lastIndex(of: "/") {
            candidates.append(String(exe[..<slash]) + "/" + directoryName + "/" + name)
        }
        let source = #filePath
        if let slash = source.lastIndex(of: "/") {
            candidates.append(String(source[..<slash]) + "/Resources/" + name)
        }
        return candidates.first { FileManager.default.isReadableFile(atPath: $0) }
        #endif
    }

    /// The bytes of the bundled file `name`.
    static func data(_ name: String) throws(ResourceFileError) -> Data {
        guard let path = path(name) else { throw .notFound }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .unreadable("\(error)")
        }
    }

    /// This process's executable, symbolic links resolved (what Bundle.main is on Linux).
    private static func executablePath() -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments.first.flatMap { $0.contains("/" as Character) ? $0 : nil }
    }
}

enum ResourceFileError: Error {
    case notFound
    case unreadable(String)
}
