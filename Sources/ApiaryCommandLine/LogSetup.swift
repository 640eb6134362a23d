import Logging
import Synchronization

/// Installs swift-log's stderr handler once per process at `level` (what `apiary`,
/// `apiary-bench` and `apiary-edge` log through).
public enum LogSetup {
    private static let done = Mutex(false)

    public static func bootstrap(level: Logger.Level) -> Logger {
        done.withLock { done in
            if !done {
                LoggingSystem.bootstrap { label in
                    var h = StreamLogHandler.standardError(label: label)
                    h.logLevel = level
                    return h
                }
                done = true
            }
        }
        var l = Logger(label: "apiary")
        l.logLevel = level
        return l
    }
}
