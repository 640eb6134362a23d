import ApiaryAggregator
import ApiaryCore
import ApiaryObservability
import ApiaryProtocol
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization
import ZeroMQ
import ApiaryTesting

let testLayout = try! ParameterLayout([TensorSpec(name: "w", shape: [4, 3]), TensorSpec(name: "b", shape: [3])])

func quietLogger(_ label: String = "test") -> Logger {
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["APIARY_TEST_LOG"] != nil ? .debug : .critical
    return l
}

/// An aggregator on loopback ports picked by the kernel, recording into its own registry.
func makeAggregator(exporter: PrometheusExporter, maxStaleness: UInt64 = 1000, checkpointDirectory: String? = nil,
                    buffer: FedBuffConfig? = nil, logger: Logger = quietLogger()) throws -> Aggregator {
    var config = AggregatorConfig(modelEndpoint: "tcp://127.0.0.1:*", snapshotEndpoint: "tcp://127.0.0.1:*",
                                  updateEndpoint: "tcp://127.0.0.1:*",
                                  rule: FedAsync(alpha: 0.5, staleness: .polynomial(a: 0.5), maxStaleness: maxStaleness),
                                  publishInterval: .milliseconds(5), receiptTimeout: .milliseconds(500),
                                  checkpointDirectory: checkpointDirectory, checkpointInterval: .milliseconds(50), insecure: true)
    config.metricsFactory = exporter.factory
    config.buffer = buffer
    return try Aggregator(config: config, layout: testLayout,
                          initialParameters: [Float](repeating: 0, count: testLayout.parameterCount), logger: logger)
}

func temporaryDirectory(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("apiary-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A client speaking the wire protocol with a raw PUSH socket: it sends updates that move
/// every parameter halfway to 1 from the aggregator's newest model (read in process, as a
/// subscriber would have it), so the model converges and evaluations improve.
final class RawClient {
    let push: Socket
    let clientID: String
    private(set) var seq: UInt64 = 0

    init(context: Context, endpoint: String, clientID: String) throws {
        push = try context.socket(.push)
        try push.set(.linger, 0)
        try push.connect(endpoint)
        self.clientID = clientID
    }

    /// Sends the next update trained on `aggregator`'s newest model (or on `base` when given).
    func sendUpdate(to aggregator: Aggregator, base: UInt64? = nil, repeatSeq: Bool = false) throws {
        guard let model = aggregator.latestModel else { return }
        if !repeatSeq { seq += 1 }
        let values = model.parameters.map { $0 + 0.5 * (1 - $0) }
        let header = Codec.encode(UpdateHeader(runID: model.runID, baseVersion: base ?? model.version, seq: seq,
                                               sampleCount: 10, clientID: clientID))
        let payload = values.withUnsafeBytes { Array($0) }
        _ = try push.send(multipart: [Message(header), Message(Codec.encodeLayout(model.layout)), Message(payload)])
    }

    /// Sends a FedBuff delta (header flag bit 1) of `values` on the newest model.
    func sendDelta(to aggregator: Aggregator, values: [Float]) throws {
        guard let model = aggregator.latestModel else { return }
        seq += 1
        let header = Codec.encode(UpdateHeader(runID: model.runID, baseVersion: model.version, seq: seq, sampleCount: 10,
                                               clientID: clientID, isDelta: true))
        _ = try push.send(multipart: [Message(header), Message(Codec.encodeLayout(model.layout)), Message(values.withUnsafeBytes { Array($0) })])
    }

    /// Sends an update whose layout does not match the model's.
    func sendWrongLayout(to aggregator: Aggregator) throws {
        guard let model = aggregator.latestModel else { return }
        seq += 1
        let other = try ParameterLayout([TensorSpec(name: "w", shape: [2])])
        let header = Codec.encode(UpdateHeader(runID: model.runID, baseVersion: model.version, seq: seq, sampleCount: 1, clientID: clientID))
        _ = try push.send(multipart: [Message(header), Message(Codec.encodeLayout(other)), Message([UInt8](repeating: 0, count: 8))])
    }
}

/// A fleet of raw clients on one thread, pushing an update every `period` until stopped;
/// every `duplicateEvery`-th send repeats the previous sequence number (a duplicate).
final class Feeder: @unchecked Sendable {
    // @unchecked Sendable: the sockets are created, used and closed on the feeder's own thread;
    // other threads only touch the atomics.
    private let stopRequested = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    let sent = Atomic<Int>(0)

    init(aggregator: Aggregator, endpoint: String, clients: [String], period: Duration = .milliseconds(10), duplicateEvery: Int = 0) {
        let thread = Thread { [self] in
            defer { finished.store(true, ordering: .releasing) }
            guard let context = try? Context(),
                  let peers = try? clients.map({ try RawClient(context: context, endpoint: endpoint, clientID: $0) }) else { return }
            var n = 0
            while !stopRequested.load(ordering: .acquiring) {
                let peer = peers[n % peers.count]
                n += 1
                let duplicate = duplicateEvery > 0 && n % duplicateEvery == 0 && peer.seq > 0
                try? peer.sendUpdate(to: aggregator, repeatSeq: duplicate)
                sent.add(1, ordering: .relaxed)
                Thread.sleep(forTimeInterval: Double(period.components.attoseconds) / 1e18 + Double(period.components.seconds))
            }
            for p in peers { p.push.close() }
        }
        thread.name = "feeder"
        thread.start()
    }

    /// Stops the thread and waits until its sockets are closed.
    func stop() {
        stopRequested.store(true, ordering: .releasing)
        while !finished.load(ordering: .acquiring) { Thread.sleep(forTimeInterval: 0.005) }
    }
}

/// Runs a status server on a free loopback port for the duration of `body`, then cancels it
/// and waits until it has stopped.
func withStatusServer<R>(monitor: AggregatorMonitor, exporter: PrometheusExporter?,
                         _ body: (Int) async throws -> R) async throws -> R {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let server = StatusServer(config: StatusServerConfig(host: "127.0.0.1", port: 0), monitor: monitor, exporter: exporter,
                              logger: quietLogger("http"), onListening: { continuation.yield($0) })
    let task = Task {
        defer { continuation.finish() }
        try await server.run()
    }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else {
        try await task.value
        throw Timeout(what: "the status server to listen")
    }
    do {
        let result = try await body(port)
        task.cancel()
        _ = try? await task.value
        return result
    } catch {
        task.cancel()
        _ = try? await task.value
        throw error
    }
}

/// The answer to one HTTP GET.
struct HTTPAnswer {
    var status: Int
    var contentType: String
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// GET http://127.0.0.1:PORT/PATH over a fresh connection.
func httpGet(_ port: Int, _ path: String) async throws -> HTTPAnswer {
    let session = URLSession(configuration: .ephemeral)
    defer { session.finishTasksAndInvalidate() }
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.timeoutInterval = 10
    let (data, response) = try await session.data(for: request)
    let http = response as! HTTPURLResponse
    return HTTPAnswer(status: http.statusCode, contentType: http.value(forHTTPHeaderField: "Content-Type") ?? "", body: data)
}

/// Parses the Prometheus text format into `series -> value` (series like `name{label="v"}`),
/// and checks the structure: every sample belongs to a family announced by `# TYPE`.
struct Exposition {
    var samples: [String: Double] = [:]
    var types: [String: String] = [:]
    var helps: [String: String] = [:]
    var problems: [String] = []

    init(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                if parts.count == 2 { types[String(parts[0])] = String(parts[1]) } else { problems.append("bad TYPE: \(line)") }
            } else if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                if let space = rest.firstIndex(of: " ") { helps[String(rest[..<space])] = String(rest[rest.index(after: space)...]) }
            } else if line.hasPrefix("#") {
                continue
            } else {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                    problems.append("bad sample: \(line)")
                    continue
                }
                let series = String(line[..<space])
                samples[series] = value
                let name = String(series.prefix { $0 != "{" })
                let family = types[name] != nil ? name
                    : ["_bucket", "_sum", "_count"].compactMap { name.hasSuffix($0) ? String(name.dropLast($0.count)) : nil }.first ?? name
                if types[family] == nil { problems.append("sample without TYPE: \(line)") }
            }
        }
    }

    subscript(_ series: String) -> Double? { samples[series] }
}
