/// A federated workload: a data set, its train/test split, each client's share of the train
/// set and each client's simulated extra delay per local training run.
public struct Workload: Sendable {
    /// A short name of the workload.
    public let name: String
    /// The whole data set; all indices below are row indices into it.
    public let dataset: Dataset
    /// Rows of the train set, ascending.
    public let trainIndices: [Int]
    /// Rows of the test set, ascending.
    public let testIndices: [Int]
    /// For each client (by id `0..<clientCount`), its rows of the train set, ascending.
    public let clientIndices: [[Int]]
    /// For each client, the extra delay per local training run, in seconds.
    public let clientDelaySeconds: [Double]
    /// For each client, its device tier name (e.g. "fast", "medium", "slow").
    public let clientTiers: [String]
    /// The whole train set (central training), in `trainIndices` order.
    public let fullTrainSet: Dataset
    /// The test set, in `testIndices` order.
    public let testSet: Dataset
    private let clientSets: [Dataset]

    /// Creates a workload after checking its consistency.
    /// - Throws: `WorkloadError.malformedPartition` when an index is outside the data set, no
    ///   client is given, or the delay and tier lists do not have one entry per client (an
    ///   empty `clientTiers` is allowed and means "no tiers"), or a delay is negative or not
    ///   finite.
    public init(
        name: String, dataset: Dataset, trainIndices: [Int], testIndices: [Int],
        clientIndices: [[Int]], clientDelaySeconds: [Double], clientTiers: [String] = []
    ) throws(WorkloadError) {
        let n = dataset.count
        func checkRange(_ list: [Int], _ what: String) throws(WorkloadError) {
            if let bad = list.first(where: { $0 < 0 || $0 >= n }) {
                throw .malformedPartition("\(what) holds row \(bad), outside 0..<\(n)")
            }
        }
        try checkRange(trainIndices, "train_indices")
        try checkRange(testIndices, "test_indices")
        guard !clientIndices.isEmpty else { throw .malformedPartition("no clients") }
        for (c, list) in clientIndices.enumerated() { try checkRange(list, "client \(c)") }
        guard clientDelaySeconds.count == clientIndices.count else {
            throw .malformedPartition("\(clientDelaySeconds.count) delays for \(clientIndices.count) clients")
        }
        if let bad = clientDelaySeconds.first(where: { !($0 >= 0 && $0.isFinite) }) {
            throw .malformedPartition("invalid delay \(bad)")
        }
        guard clientTiers.isEmpty || clientTiers.count == clientIndices.count else {
            throw .malformedPartition("\(clientTiers.count) tiers for \(clientIndices.count) clients")
        }
        self.name = name
        self.dataset = dataset
        self.trainIndices = trainIndices
        self.testIndices = testIndices
        self.clientIndices = clientIndices
        self.clientDelaySeconds = clientDelaySeconds
        self.clientTiers = clientTiers
        self.fullTrainSet = dataset.subset(indices: trainIndices)
        self.testSet = dataset.subset(indices: testIndices)
        self.clientSets = clientIndices.map { dataset.subset(indices: $0) }
    }

    /// Number of clients.
    public var clientCount: Int { clientIndices.count }

    /// The private train set of `client` (`0..<clientCount`; other values trap).
    public func trainSet(client: Int) -> Dataset {
        precondition(clientSets.indices.contains(client), "client \(client) is outside 0..<\(clientCount)")
        return clientSets[client]
    }

    /// The extra delay of `client` per local training run, in seconds
    /// (`0..<clientCount`; other values trap).
    public func delaySeconds(client: Int) -> Double {
        precondition(clientDelaySeconds.indices.contains(client), "client \(client) is outside 0..<\(clientCount)")
        return clientDelaySeconds[client]
    }

    /// The extra delay of `client` per local training run (`0..<clientCount`; other values trap).
    public func delay(client: Int) -> Duration {
        .seconds(delaySeconds(client: client))
    }
}
