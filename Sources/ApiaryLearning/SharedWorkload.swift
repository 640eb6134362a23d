#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The project's shared benchmark workload ("digits-softmax-dirichlet0.5-n20"): the digits set,
/// a stratified 80/20 split, 20 clients by Dirichlet label skew (concentration 0.5) and
/// per-client delays of 0.2 s, 1.0 s or 5.0 s, read from the bundled `partition.json` (generated
/// by the reference Python script; it is read, never re-derived).
public enum SharedWorkload {
    /// The file name of the bundled partition resource.
    public static let resourceName = "partition.json"

    /// Loads the bundled digits data set and partition.
    /// - Throws: `WorkloadError.dataset` when the digits resource fails to load,
    ///   `.resourceNotFound` / `.unreadableResource` / `.malformedPartition` for the partition.
    public static func load() throws(WorkloadError) -> Workload {
        let dataset: Dataset
        do {
            dataset = try Digits.load()
        } catch {
            throw .dataset(error)
        }
        return try load(dataset: dataset)
    }

    /// Loads the bundled partition over an already loaded digits data set.
    /// - Throws: `WorkloadError.resourceNotFound` / `.unreadableResource` /
    ///   `.malformedPartition`.
    public static func load(dataset: Dataset) throws(WorkloadError) -> Workload {
        let data: Data
        do throws(ResourceFileError) {
            data = try ResourceFiles.data(resourceName)
        } catch {
            switch error {
            case .notFound: throw .resourceNotFound(resourceName)
            case .unreadable(let reason): throw .unreadableResource(resourceName, reason: reason)
            }
        }
        return try decode(partitionJSON: data, dataset: dataset)
    }

    /// Decodes partition JSON (keys `train_indices`, `test_indices`, `clients` mapping client
    /// ids "0", "1", ... to row indices, `client_delay_s`, optional `client_tier`, `workload`
    /// and `num_clients`) over `dataset`.
    /// - Throws: `WorkloadError.malformedPartition` when the JSON does not decode, the client
    ///   ids are not exactly "0"..."N-1", `num_clients` disagrees, or `Workload.init` rejects it.
    public static func decode(partitionJSON data: Data, dataset: Dataset) throws(WorkloadError) -> Workload {
        let file: PartitionFile
        do {
            file = try JSONDecoder().decode(PartitionFile.self, from: data)
        } catch {
            throw .malformedPartition("\(error)")
        }
        var byID: [Int: [Int]] = [:]
        for (key, rows) in file.clients {
            guard let id = Int(key), id >= 0, String(id) == key else {
                throw .malformedPartition("client id '\(key)' is not a non-negative integer")
            }
            byID[id] = rows
        }
        let count = byID.count
        guard (0..<count).allSatisfy({ byID[$0] != nil }) else {
            throw .malformedPartition("client ids are not exactly 0..<\(count)")
        }
        if let declared = file.numClients, declared != count {
            throw .malformedPartition("num_clients is \(declared) but \(count) clients are listed")
        }
        return try Workload(
            name: file.workload ?? "partition",
            dataset: dataset,
            trainIndices: file.trainIndices,
            testIndices: file.testIndices,
            clientIndices: (0..<count).map { byID[$0]! },
            clientDelaySeconds: file.clientDelaySeconds,
            clientTiers: file.clientTiers ?? []
        )
    }
}

/// The on-disk shape of `partition.json` (extra keys are ignored).
private struct PartitionFile: Decodable {
    var workload: String?
    var numClients: Int?
    var trainIndices: [Int]
    var testIndices: [Int]
    var clients: [String: [Int]]
    var clientDelaySeconds: [Double]
    var clientTiers: [String]?

    enum CodingKeys: String, CodingKey {
        case workload
        case numClients = "num_clients"
        case trainIndices = "train_indices"
        case testIndices = "test_indices"
        case clients
        case clientDelaySeconds = "client_delay_s"
        case clientTiers = "client_tier"
    }
}
