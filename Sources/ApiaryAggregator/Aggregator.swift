import ApiaryCore
import ApiaryProtocol
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ZeroMQ

/// The asynchronous aggregator: binds the model PUB, the snapshot ROUTER and the update PULL
/// sockets and merges every update the moment it arrives (FedAsync).
///
/// All sockets and the model belong to one thread (`apiary-aggregator`), which polls the
/// sockets, merges in memory (no I/O on the merge path) and publishes the newest model at
/// most once per `publishInterval`. Other threads read `stats` and `latestModel`.
public final class Aggregator: Service, Sendable {
    /// The endpoints actually bound (a `:*` port resolved).
    public struct Endpoints: Sendable, Hashable {
        public var model: String
        public var snapshot: String
        public var update: String
    }

    public let config: AggregatorConfig
    public let layout: ParameterLayout
    /// The metrics clients sent with their merged updates and the evaluators' reports.
    public let fleet = FleetMetrics()
    /// The shard map when this aggregator is one parameter shard of several; nil otherwise.
    public let shardMap: [ShardEntry]?
    /// The range of the flat parameter vector this aggregator owns (all of it unless sharded).
    public let range: Range<Int>
    /// The starting parameters of `range`, until the aggregator thread took them.
    private let initial: Mutex<[Float]?>
    private let newRunID: UInt64
    private let initialVersion: UInt64
    private let logger: Logger
    private let shared = Mutex(Shared())
    private let stopRequested = Atomic<Bool>(false)
    /// Relay-mode requests for the aggregator thread, and the doorbell that wakes it.
    private let commands = Mutex<[RelayCommand]>([])
    let commandDoorbell = Wakeup()

    enum RelayCommand: Sendable {
        case rebase([Float], CheckedContinuation<UInt64?, Never>)
        case takeProgress(CheckedContinuation<RelayProgress?, Never>)
        case restore([Float], [Range<Int>], CheckedContinuation<Bool, Never>)
    }


    private struct Shared: Sendable {
        var stats = AggregatorStats()
        var activity = AggregatorActivity()
        var latest: PublishedModel?
        var endpoints: Endpoints?
        var startError: AggregatorError?
        var finished = false
        var runID: UInt64 = 0
        var handshakeFailures: [String: UInt64] = [:]
    }

    /// Left by the aggregator thread when it ends; `stop()` waits on it.
    private let threadDone = DispatchGroup()
    /// Announces the aggregator thread's end (to `shutdown()` and `run()`).
    private let ended = ChangeSignal()
    /// Announces newly published stats (merges, versions): what a gateway's relay waits for.
    public let statsChanged = ChangeSignal()

    /// Creates an aggregator for a model of `layout` starting from `initialParameters`
    /// (at `initialVersion`): the whole model, or, for a parameter shard, either the whole
    /// model or just the shard's range (so a shard of a model too large for one process never
    /// holds all of it). Throws when the config is out of range.
    public init(config: AggregatorConfig, layout: ParameterLayout, initialParameters: [Float], initialVersion: UInt64 = 0, logger: Logger) throws {
        if let e = config.validationError() { throw AggregatorError.invalidConfig(e) }
        if config.curve == nil && !config.insecure {
            throw AggregatorError.invalidConfig("no CURVE keys: set curve (CurveServerConfig: the aggregator's key pair and its authorized keys), or set insecure = true to run without encryption or authentication")
        }
        if let shard = config.shard {
            let map = try shard.entries(parameterCount: layout.parameterCount).get()
            self.shardMap = map
            self.range = map[shard.index].range
        } else {
            self.shardMap = nil
            self.range = 0..<layout.parameterCount
        }
        let range = self.range
        guard initialParameters.count == layout.parameterCount || initialParameters.count == range.count else {
            let part = range.count == layout.parameterCount ? "" : " or the shard's \(range.count)"
            throw AggregatorError.invalidConfig("initial model has \(initialParameters.count) parameters, the layout \(layout.parameterCount)\(part)")
        }
        guard initialParameters.allSatisfy(\.isFinite) else { throw AggregatorError.invalidConfig("initial model is not finite") }
        self.config = config
        self.layout = layout
        self.initial = Mutex(initialParameters.count == range.count ? initialParameters : Array(initialParameters[range]))
        self.initialVersion = initialVersion
        self.newRunID = config.runID ?? UInt64.random(in: 1...UInt64.max)
        self.logger = logger
        shared.withLock { $0.runID = newRunID }
    }

    /// Identifies the training run: new for a fresh start, kept when resuming a checkpoint
    /// (known once `start` returned).
    public var runID: UInt64 { shared.withLock { $0.runID } }

    /// A copy of the counters.
    public var stats: AggregatorStats { shared.withLock { $0.stats } }

    /// Per-client activity and the staleness distribution, as of at most about a second ago.
    public var activity: AggregatorActivity { shared.withLock { $0.activity } }

    /// Peers whose handshake failed, by `HandshakeFailure.cause` (`unauthorized_key`,
    /// `cryptographic`, `mechanism_mismatch`, ...): what `apiary_handshake_failures_total` counts.
    public var handshakeFailures: [String: UInt64] { shared.withLock { $0.handshakeFailures } }

    func publish(handshakeFailures: [String: UInt64]) { shared.withLock { $0.handshakeFailures = handshakeFailures } }

    /// The newest published model (nil before the aggregator started).
    public var latestModel: PublishedModel? { shared.withLock { $0.latest } }

    /// Whether `start` succeeded and the aggregator has not stopped yet.
    public var isRunning: Bool { shared.withLock { $0.endpoints != nil && !$0.finished } }

    /// The bound endpoints (nil before `start` returned).
    public var endpoints: Endpoints? { shared.withLock { $0.endpoints } }

    /// Binds the sockets and starts the aggregator thread. Returns the bound endpoints once
    /// the sockets are bound; throws when binding fails.
    @discardableResult
    public func start() throws -> Endpoints {
        let ready = DispatchSemaphore(value: 0)
        threadDone.enter()
        let thread = Thread { [self] in
            self.threadMain(ready: ready)
            self.threadDone.leave()
        }
        thread.name = "apiary-aggregator"
        thread.stackSize = 1 << 20
        thread.start()
        ready.wait()
        let (eps, err) = shared.withLock { ($0.endpoints, $0.startError) }
        if let err { throw err }
        return eps!
    }

    /// Asks the aggregator thread to stop and blocks the calling thread until it has written
    /// the final checkpoint and closed its sockets. For synchronous callers (tests, benchmarks);
    /// from async code use `shutdown()`, which suspends instead of blocking.
    public func stop() {
        requestStop()
        threadDone.wait()
    }

    /// Asks the aggregator thread to stop and returns once it has written the final
    /// checkpoint and closed its sockets (at once when it never started or has stopped).
    public func shutdown() async {
        requestStop()
        await finished()
    }

    /// Runs until the calling task is cancelled or a service group shuts down gracefully
    /// (SIGTERM, SIGINT), then stops: no more updates are taken, the final version is
    /// published, and the sockets are closed with a finite linger.
    public func run() async throws {
        // Started already (`AggregatorServer.run` starts it before the status server, so
        // that a start-up error comes before anything else listens): just run.
        if !isRunning { try start() }
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await finished()
            } onCancel: {
                requestStop()
            }
        } onGracefulShutdown: {
            self.requestStop()
        }
        // Cancelled: the thread is stopping; return once it is done.
        await finished()
    }

    private func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        commandDoorbell.ring()  // the loop wakes now instead of at its next poll timeout
    }

    /// Suspends until the aggregator thread has ended (or never started).
    private func finished() async {
        while true {
            let generation = ended.generation
            if shared.withLock({ $0.finished || $0.startError != nil || $0.endpoints == nil }) { return }
            await ended.wait(after: generation)
        }
    }

    // MARK: Relay mode (gateways)

    /// Relay mode: moves the model onto a newer upstream model, keeping the local progress
    /// made since the last one (`x = g + (x - previous g)`), as a new local version that is
    /// broadcast to the devices. Returns that version; nil when the aggregator is not
    /// running in relay mode or `parameters` does not fit or is not finite.
    public func rebase(onto parameters: [Float]) async -> UInt64? {
        guard config.relay else { return nil }
        return await withCheckedContinuation { c in submit(.rebase(parameters, c)) }
    }

    /// Relay mode: the current model as progress to push upstream; the merge counters
    /// restart from zero. Nil when the aggregator is not running in relay mode.
    public func takeProgress() async -> RelayProgress? {
        guard config.relay else { return nil }
        return await withCheckedContinuation { c in submit(.takeProgress(c)) }
    }

    /// Relay mode: a push the tier above did not merge (rejected, say too stale after a long
    /// outage): its progress, `delta` of `takeProgress()`, over `ranges` of the vector, is kept
    /// for the next push instead of being dropped at the next rebase.
    @discardableResult
    public func restore(progress delta: [Float], in ranges: [Range<Int>]) async -> Bool {
        guard config.relay else { return false }
        return await withCheckedContinuation { c in submit(.restore(delta, ranges, c)) }
    }

    private func submit(_ c: RelayCommand) {
        let accepted = shared.withLock { s -> Bool in
            guard !s.finished, s.startError == nil else { return false }
            commands.withLock { $0.append(c) }
            return true
        }
        if accepted { commandDoorbell.ring() } else { Aggregator.refuse(c) }
    }

    /// Called by the aggregator thread.
    func takeCommands() -> [RelayCommand] {
        commands.withLock { q in
            defer { q = [] }
            return q
        }
    }

    static func refuse(_ c: RelayCommand) {
        switch c {
        case .rebase(_, let k): k.resume(returning: nil)
        case .takeProgress(let k): k.resume(returning: nil)
        case .restore(_, _, let k): k.resume(returning: false)
        }
    }

    // MARK: The aggregator thread

    private func threadMain(ready: DispatchSemaphore) {
        serve(ready: ready)
        // The loop, its sockets and its context are gone by now: the ports are free again
        // when `stop()` returns, so a new aggregator can bind them at once.
        shared.withLock { $0.finished = true }
        ended.notify()
        // Nobody will answer requests made while stopping.
        for c in takeCommands() { Aggregator.refuse(c) }
    }

    private func serve(ready: DispatchSemaphore) {
        let loop: AggregatorLoop
        do {
            // The loop copies the starting point; nothing else needs it afterwards (it is put
            // back when starting fails, so a later start can use it).
            guard let start = initial.withLock({ s -> [Float]? in
                defer { s = nil }
                return s
            }) else { throw AggregatorError.startFailed("this aggregator has run already: create a new one", code: .alreadyRan) }
            do {
                loop = try AggregatorLoop(aggregator: self, config: config, layout: layout, range: range, shardMap: shardMap, initial: start,
                                          initialVersion: initialVersion, runID: newRunID, logger: logger)
            } catch {
                initial.withLock { $0 = start }
                throw error
            }
        } catch {
            shared.withLock { $0.startError = AggregatorError.wrapping(error) }
            ready.signal()
            return
        }
        shared.withLock {
            $0.endpoints = loop.endpoints
            $0.runID = loop.engine.runID
        }
        ready.signal()
        var logger = self.logger
        logger[metadataKey: "run"] = "\(hex(loop.engine.runID))"
        logger.info("aggregator started", metadata: [
            "version": "\(loop.engine.version)", "checkpoints": "\(config.checkpointDirectory ?? "off")",
            "model": "\(loop.endpoints.model)", "snapshot": "\(loop.endpoints.snapshot)", "update": "\(loop.endpoints.update)",
            "parameters": "\(layout.parameterCount)", "shard": "\(config.shard.map { "\($0.index) of \($0.map.count), parameters \(range)" } ?? "none")",
            "rule": "\(config.algorithm.rawValue)\(config.algorithm == .fedasync ? " alpha=\(config.rule.alpha)" : "") \(config.rule.staleness) max_staleness=\(config.rule.maxStaleness)",
        ])
        loop.run(shouldStop: { self.stopRequested.load(ordering: .acquiring) })
        loop.close()
        logger.info("aggregator stopped", metadata: ["version": "\(loop.engine.version)", "merged": "\(loop.engine.stats.merged)"])
    }

    func publish(activity: AggregatorActivity) {
        shared.withLock { $0.activity = activity }
    }

    func publish(stats: AggregatorStats, latest: PublishedModel?) {
        shared.withLock {
            $0.stats = stats
            if let latest { $0.latest = latest }
        }
        statsChanged.notify()
    }
}

/// Why an aggregator did not start or was refused (`ApiaryError`'s shape: a code, the reason,
/// the underlying error, where). `start()` throws one whatever failed underneath.
public typealias AggregatorError = ApiaryError<AggregatorErrors>

/// The domain of `AggregatorError`.
public enum AggregatorErrors: ApiaryErrorDomain {
    public static func describe(code: String, reason: String) -> String {
        code == AggregatorError.Code.invalidConfig.description ? "invalid aggregator config: \(reason)" : "aggregator failed to start: \(reason)"
    }
}

extension ApiaryError.Code where Domain == AggregatorErrors {
    /// The configuration (or the initial model given with it) is out of range.
    public static let invalidConfig = Self("invalid config")
    /// An endpoint to bind is taken by another process.
    public static let addressInUse = Self("address in use")
    /// Another aggregator holds the checkpoint directory.
    public static let stateDirectoryLocked = Self("state directory locked")
    /// The checkpoint directory or the ledger cannot be created, opened or written.
    public static let stateUnusable = Self("state unusable")
    /// The newest valid checkpoint holds a model of another layout.
    public static let checkpointOfAnotherModel = Self("checkpoint of another model")
    /// CURVE is on but an unknown key was not refused.
    public static let securitySelfTestFailed = Self("security self-test failed")
    /// `start()` on an aggregator that has run already.
    public static let alreadyRan = Self("already ran")
    /// Anything else that stopped the start (see `underlying`).
    public static let startFailed = Self("start failed")
}

extension ApiaryError where Domain == AggregatorErrors {
    public static func invalidConfig(_ reason: String, file: String = #fileID, line: Int = #line) -> Self {
        Self(.invalidConfig, reason, file: file, line: line)
    }

    public static func startFailed(_ reason: String, code: Code = .startFailed, underlying: (any Error)? = nil,
                                   file: String = #fileID, line: Int = #line) -> Self {
        Self(code, reason, underlying: underlying, file: file, line: line)
    }

    /// An error that stopped the start, as an `AggregatorError` (kept as it is when it is one).
    static func wrapping(_ error: any Error, file: String = #fileID, line: Int = #line) -> Self {
        if let e = error as? Self { return e }
        if let z = error as? ZMQError, z.errno == EADDRINUSE {
            return .startFailed("\(z)", code: .addressInUse, underlying: z, file: file, line: line)
        }
        return .startFailed("\(error)", underlying: error, file: file, line: line)
    }
}
