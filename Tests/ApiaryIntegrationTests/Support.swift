import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ
import ApiaryTesting

let testLayout = try! ParameterLayout([TensorSpec(name: "w", shape: [4, 3]), TensorSpec(name: "b", shape: [3])])

func quietLogger(_ label: String = "test") -> Logger {
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["APIARY_TEST_LOG"] != nil ? .debug : .critical
    return l
}

/// Loopback endpoints with ports picked by the kernel; without CURVE unless a test sets it.
/// The model is re-announced every 50 ms: a `RawPeer` waits for that to know its receipt
/// subscription is in place.
func anyPortConfig(_ rule: FedAsync = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 1000)) -> AggregatorConfig {
    AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                     rule: rule, publishInterval: .milliseconds(5), heartbeatInterval: .milliseconds(50), receiptTimeout: .milliseconds(500), insecure: true)
}

func clientConfig(_ id: String, _ e: Aggregator.Endpoints) -> ClientConfig {
    ClientConfig(clientID: id, modelEndpoint: e.model, snapshotEndpoint: e.snapshot, updateEndpoint: e.update,
                 snapshotTimeout: .milliseconds(300), newModelWait: .milliseconds(200), maxBackoff: .seconds(1), insecure: true)
}

extension RawPeer {
    /// A full-model update in `testLayout`.
    func sendUpdate(runID: UInt64, base: UInt64, seq: UInt64, values: [Float], epoch: UInt64 = 0) throws {
        try sendUpdate(runID: runID, base: base, seq: seq, values: values, layout: testLayout, epoch: epoch)
    }
}

/// Log lines kept for a test to read: level, message and metadata rendered as text.
final class LogLines: @unchecked Sendable {
    struct Line: Sendable { var level: Logger.Level; var message: String; var metadata: [String: String] }
    private let lock = NSLock()
    private var stored: [Line] = []

    var lines: [Line] { lock.withLock { stored } }

    func logger(level: Logger.Level = .info) -> Logger {
        var l = Logger(label: "test") { _ in Handler(sink: self) }
        l.logLevel = level
        return l
    }

    struct Handler: LogHandler {
        let sink: LogLines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }.mapValues { "\($0)" }
            sink.lock.withLock { sink.stored.append(Line(level: event.level, message: "\(event.message)", metadata: all)) }
        }
    }
}
