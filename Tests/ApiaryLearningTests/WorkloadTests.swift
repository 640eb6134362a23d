import Foundation
import Testing
import ApiaryLearning

@Suite struct WorkloadTests {
    @Test func sharedWorkloadShape() throws {
        let w = try Fixtures.workload()
        #expect(w.clientCount == 20)
        #expect(w.trainIndices.count == 1437)
        #expect(w.testIndices.count == 360)
        #expect(Set(w.trainIndices).isDisjoint(with: w.testIndices))
        #expect(Set(w.trainIndices).union(w.testIndices) == Set(0..<1797))
        #expect(w.fullTrainSet.count == 1437)
        #expect(w.testSet.count == 360)
        #expect(w.name == "digits-softmax-dirichlet0.5-n20")
    }

    @Test func clientsPartitionTheTrainSet() throws {
        let w = try Fixtures.workload()
        let all = w.clientIndices.flatMap { $0 }
        #expect(all.count == w.trainIndices.count)  // no index twice
        #expect(Set(all) == Set(w.trainIndices))
        for c in 0..<w.clientCount {
            #expect(w.clientIndices[c] == w.clientIndices[c].sorted())
            #expect(w.clientIndices[c].count >= 10)
            let set = w.trainSet(client: c)
            #expect(set.count == w.clientIndices[c].count)
            #expect(set.labels == w.clientIndices[c].map { w.dataset.labels[$0] })
        }
        // Client "0" as listed in partition.json.
        #expect(w.clientIndices[0].prefix(3) == [23, 56, 60])
        #expect(w.clientIndices[0].count == 76)
    }

    @Test func delaysAndTiers() throws {
        let w = try Fixtures.workload()
        #expect(w.clientDelaySeconds.count == 20)
        #expect(Set(w.clientDelaySeconds).isSubset(of: [0.2, 1.0, 5.0]))
        #expect(w.clientDelaySeconds.filter { $0 == 0.2 }.count == 14)
        #expect(w.clientDelaySeconds.filter { $0 == 1.0 }.count == 4)
        #expect(w.clientDelaySeconds.filter { $0 == 5.0 }.count == 2)
        #expect(w.delay(client: 1) == .seconds(5))
        #expect(w.delay(client: 0) == .milliseconds(200))
        let tierDelay = ["fast": 0.2, "medium": 1.0, "slow": 5.0]
        for c in 0..<w.clientCount { #expect(tierDelay[w.clientTiers[c]] == w.delaySeconds(client: c)) }
    }

    @Test func decodeRejectsBadPartitions() throws {
        let dataset = try Fixtures.workload().dataset
        func decode(_ json: String) throws(WorkloadError) -> Workload {
            try SharedWorkload.decode(partitionJSON: Data(json.utf8), dataset: dataset)
        }
        let ok = try decode(#"{"train_indices":[0,1,2],"test_indices":[3],"clients":{"1":[2],"0":[0,1]},"client_delay_s":[0,1]}"#)
        #expect(ok.clientIndices == [[0, 1], [2]])
        #expect(ok.clientTiers.isEmpty)
        #expect(throws: WorkloadError.self) { try decode("{") }
        #expect(throws: WorkloadError.self) {
            try decode(#"{"train_indices":[0],"test_indices":[3],"clients":{"0":[0],"2":[1]},"client_delay_s":[0,1]}"#)
        }
        #expect(throws: WorkloadError.self) {
            try decode(#"{"train_indices":[0],"test_indices":[3],"clients":{"x":[0]},"client_delay_s":[0]}"#)
        }
        #expect(throws: WorkloadError.self) {
            try decode(#"{"train_indices":[0],"test_indices":[99999],"clients":{"0":[0]},"client_delay_s":[0]}"#)
        }
        #expect(throws: WorkloadError.self) {
            try decode(#"{"train_indices":[0],"test_indices":[3],"clients":{"0":[0]},"client_delay_s":[0,1]}"#)
        }
        #expect(throws: WorkloadError.self) {
            try decode(#"{"num_clients":2,"train_indices":[0],"test_indices":[3],"clients":{"0":[0]},"client_delay_s":[0]}"#)
        }
    }
}
