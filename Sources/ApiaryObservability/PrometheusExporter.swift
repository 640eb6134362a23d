import Metrics
import Prometheus
import Synchronization

/// A Prometheus registry and the swift-metrics factory that fills it. Metrics recorded
/// through `factory` appear in `exposition()` with the help text and histogram buckets of
/// `MetricCatalog`.
///
/// Thread-safe. A process normally has one, installed with `bootstrapSystem()`; tests make
/// their own and hand `factory` to the aggregator (`AggregatorConfig.metricsFactory`), the
/// monitor and the evaluator, so that no global state is shared between suites.
public final class PrometheusExporter: Sendable {
    /// The registry `exposition()` reads.
    public let registry: PrometheusCollectorRegistry
    /// A swift-metrics factory that registers into `registry`.
    public let factory: any MetricsFactory

    /// Creates an exporter with a fresh registry.
    public init() {
        registry = PrometheusCollectorRegistry()
        factory = CatalogMetricsFactory(registry: registry)
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    public func exposition() -> String {
        registry.emitToString()
    }

    /// The content type of `exposition()`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private static let system = Mutex<PrometheusExporter?>(nil)

    /// Makes this process's metrics go to one Prometheus registry (`MetricsSystem.bootstrap`)
    /// and returns its exporter. Safe to call more than once: swift-metrics allows a single
    /// bootstrap per process, so later calls return the first exporter.
    public static func bootstrapSystem() -> PrometheusExporter {
        system.withLock { existing in
            if let existing { return existing }
            let exporter = PrometheusExporter()
            MetricsSystem.bootstrap(exporter.factory)
            existing = exporter
            return exporter
        }
    }
}

/// A swift-metrics factory over a Prometheus registry that names every metric of
/// `MetricCatalog` with its help text and buckets (swift-prometheus's own factory registers
/// without help text, and a name's help text cannot change once registered).
struct CatalogMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricCatalog.description(of: label)?.help ?? "")
    }

    private func buckets(_ label: String, default d: [Double]) -> [Double] {
        let b = MetricCatalog.description(of: label)?.buckets ?? []
        return b.isEmpty ? d : b
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions,
                                           buckets: buckets(label, default: [0.001, 0.01, 0.1, 1, 10, 100, 1000, 10000]))
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let seconds = buckets(label, default: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10])
        return registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions,
                                              buckets: seconds.map { Duration.nanoseconds(Int64(($0 * 1e9).rounded())) })
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}
