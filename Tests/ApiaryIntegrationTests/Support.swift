import ApiaryAggregator
import ApiaryClient
import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ZeroMQ
import ApiaryTesting

/// A trainer for protocol tests: moves every parameter toward `target` by `step`.
struct StepTrainer: Trainer {
    let layout: ParameterLayout
    var target: Float = 1
    var step: Float = 0.5
    var delay: Duration = .milliseconds(5)

    func train(model: ModelSnapshot, config: TrainingConfig, round: Int) async throws -> TrainingResult {
        try await Task.sleep(for: delay)
        return TrainingResult(parameters: model.parameters.map { $0 + step * (target - $0) }, sampleCount: 10)
    }
}

let testLayout = try! ParameterLayout([TensorSpec(name: "w", shape: [4, 3]), TensorSpec(name: "b", shape: [3])])

func quietLogger(_ label: String = "test") -> Logger {
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["APIARY_TEST_LOG"] != nil ? .debug : .critical
    return l
}

/// Loopback endpoints with ports picked by the kernel; without CURVE unless a test sets it.
func anyPortConfig(_ rule: FedAsync = FedAsync(alpha: 0.5, staleness: .constant, maxStaleness: 1000)) -> AggregatorConfig {
    AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*", updateEndpoint: "tcp://127.0.0.1:*",
                     rule: rule, publishInterval: .milliseconds(5), receiptTimeout: .milliseconds(500), insecure: true)
}

func clientConfig(_ id: String, _ e: Aggregator.Endpoints) -> ClientConfig {
    ClientConfig(clientID: id, modelEndpoint: e.model, snapshotEndpoint: e.snapshot, updateEndpoint: e.update,
                 snapshotTimeout: .milliseconds(300), newModelWait: .milliseconds(200), maxBackoff: .seconds(1), insecure: true)
}

/// A test peer speaking the wire protocol with raw sockets: pushes hand-made updates and
/// reads its receipts.
final class RawPeer {
    let context: Context
    let push: Socket
    let sub: Socket
    let clientID: String

    convenience init(_ e: Aggregator.Endpoints, clientID: String) throws {
        try self.init(model: e.model, update: e.update, clientID: clientID)
    }

    init(model: String, update: String, clientID: String) throws {
        context = try Context()
        self.clientID = clientID
        push = try context.socket(.push)
        try push.connect(update)
        sub = try context.socket(.sub)
        try sub.set(.subscribe, Topic.receipt(clientID: clientID))
        try sub.set(.receiveTimeout, 15_000)
        // The subscription goes out right after the ZMTP handshake: wait for that (up to
        // 10 s on a loaded machine), then give the PUB's I/O thread a moment to apply it.
        let monitor = try SocketMonitor(sub, events: Int32(SocketEvent.handshakeSucceeded))
        defer { monitor.close() }
        try sub.connect(model)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !monitor.drain().contains(where: { $0.event == SocketEvent.handshakeSucceeded }) {
            Thread.sleep(forTimeInterval: 0.005)
        }
        Thread.sleep(forTimeInterval: 0.05)
    }

    func send(frames: [[UInt8]]) throws {
        try push.send(multipart: frames.map { Message($0) })
    }

    /// `epoch`: the client epoch (0: none, as from clients before epochs).
    func sendUpdate(runID: UInt64, base: UInt64, seq: UInt64, values: [Float], layout: ParameterLayout = testLayout, epoch: UInt64 = 0) throws {
        let header = Codec.encode(UpdateHeader(runID: runID, baseVersion: base, seq: seq, sampleCount: 1, clientID: clientID, epoch: epoch))
        let payload = values.withUnsafeBytes { Array($0) }
        try send(frames: [header, Codec.encodeLayout(layout), payload])
    }

    func receipt() throws -> Receipt {
        guard let m = try sub.receiveMultipart() else { throw Timeout(what: "a receipt") }
        return try m.withFrameBytes { f throws(WireError) in try Codec.decodeReceipt(f) }
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
