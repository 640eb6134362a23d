import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// Where the status server listens.
public struct StatusServerConfig: Sendable, Hashable {
    /// Interface to bind (`127.0.0.1` keeps it on this host; `0.0.0.0` serves every interface).
    public var host: String
    /// TCP port; 0 lets the kernel pick one (reported to `onListening`).
    public var port: Int

    /// A server on `host:port`.
    public init(host: String = "127.0.0.1", port: Int = 9464) {
        self.host = host
        self.port = port
    }
}

/// The aggregator's HTTP endpoints (Hummingbird):
///
/// - `GET /` the live dashboard (`DashboardPage`),
/// - `GET /status` the `StatusReport` as JSON,
/// - `GET /history` the `HistoryReport` as JSON,
/// - `GET /metrics` the Prometheus text format (when an exporter is given),
/// - `GET /healthz` `ok`.
///
/// A `Service`: run it in the aggregator's `ServiceGroup`; on graceful shutdown it stops
/// accepting connections and finishes the requests in flight. Requests are answered from
/// copies of the aggregator's state; they never wait for the merge path.
public struct StatusServer: Service {
    private let config: StatusServerConfig
    private let monitor: AggregatorMonitor
    private let exporter: PrometheusExporter?
    private let logger: Logger
    private let onListening: @Sendable (Int) async -> Void

    /// A server for `monitor`'s reports and `exporter`'s metrics.
    /// - Parameter onListening: called with the bound port once the server accepts connections.
    public init(config: StatusServerConfig, monitor: AggregatorMonitor, exporter: PrometheusExporter?, logger: Logger,
                onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.config = config
        self.monitor = monitor
        self.exporter = exporter
        self.logger = logger
        self.onListening = onListening
    }

    /// Serves until cancelled or shut down gracefully; throws `StatusServerError` when the
    /// address cannot be bound.
    public func run() async throws {
        let router = Router()
        let monitor = self.monitor
        let exporter = self.exporter
        router.get("/") { _, _ in
            Self.response(DashboardPage.html, type: "text/html; charset=utf-8")
        }
        router.get("/status") { _, _ in
            try Self.json(monitor.status())
        }
        router.get("/history") { _, _ in
            try Self.json(monitor.history())
        }
        router.get("/metrics") { _, _ in
            guard let exporter else { return Self.response("metrics are not enabled\n", type: "text/plain", status: .notFound) }
            monitor.refreshGauges()
            return Self.response(exporter.exposition(), type: PrometheusExporter.contentType)
        }
        router.get("/healthz") { _, _ in
            Self.response("ok\n", type: "text/plain")
        }
        let logger = self.logger
        let onListening = self.onListening
        let host = config.host
        let listening = ListeningFlag()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: config.port), serverName: "apiary"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                listening.value.store(true, ordering: .relaxed)
                logger.info("status server listening", metadata: ["address": "http://\(host):\(port)/"])
                await onListening(port)
            },
            logger: logger
        )
        do {
            try await app.run()
        } catch where !listening.value.load(ordering: .relaxed) {
            throw StatusServerError(description: "status server cannot listen on \(host):\(config.port) (http.host, http.port): \(error)")
        }
    }

    private static func response(_ text: String, type: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private static func json(_ value: some Encodable) throws -> Response {
        let data = try StatusJSON.encoder.encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The status server could not start (the address is in use, say).
extension StatusServer {
    /// Throws when `config`'s address cannot be bound now (in use, not this host's, no
    /// permission), naming it and the config keys; port 0 (any) always passes. Binds with
    /// SO_REUSEADDR, as the server itself does, and closes the socket at once.
    public static func checkAddress(_ config: StatusServerConfig) throws {
        guard config.port != 0 else { return }
        func fail(_ why: String) -> StatusServerError {
            StatusServerError(description: "status server cannot listen on \(config.host):\(config.port) (http.host, http.port): \(why)")
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(config.host, String(config.port), &hints, &list)
        guard rc == 0, let first = list else { throw fail("cannot resolve the host: \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            let e = errno
            throw fail("\(String(cString: strerror(e))) (errno \(e))")
        }
    }
}

public struct StatusServerError: Error, CustomStringConvertible {
    /// What went wrong, naming the address and the config keys.
    public let description: String
}

/// Whether the server got as far as listening (set on an event loop, read after `run`).
private final class ListeningFlag: Sendable {
    let value = Atomic<Bool>(false)
}
