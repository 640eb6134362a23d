import Foundation
import Testing
import ApiaryLearning

@Suite struct PartitionerTests {
    private func expectExactCover(_ parts: [[Int]], count: Int) {
        let all = parts.flatMap { $0 }
        #expect(all.count == count)
        #expect(all.sorted() == Array(0..<count))
        for p in parts { #expect(p == p.sorted()) }
    }

    @Test func iidIsDeterministicBalancedAndCovering() throws {
        let a = try Partitioner.iid(count: 1437, clients: 20, seed: 1)
        let b = try Partitioner.iid(count: 1437, clients: 20, seed: 1)
        let c = try Partitioner.iid(count: 1437, clients: 20, seed: 2)
        #expect(a == b)
        #expect(a != c)
        #expect(a.count == 20)
        expectExactCover(a, count: 1437)
        expectExactCover(c, count: 1437)
        let sizes = a.map(\.count)
        #expect(sizes.max()! - sizes.min()! <= 1)
        #expect(try Partitioner.iid(count: 3, clients: 5, seed: 0).map(\.count) == [1, 1, 1, 0, 0])
    }

    @Test func iidRejectsBadArguments() {
        #expect(throws: PartitionError.invalidClientCount(0)) { try Partitioner.iid(count: 10, clients: 0, seed: 0) }
        #expect(throws: PartitionError.invalidItemCount(-1)) { try Partitioner.iid(count: -1, clients: 2, seed: 0) }
    }

    @Test func dirichletIsDeterministicAndCovering() throws {
        let labels = try Fixtures.workload().fullTrainSet.labels
        let a = try Partitioner.dirichletLabelSkew(labels: labels, clients: 20, concentration: 0.5, seed: 0, minPartitionSize: 10)
        let b = try Partitioner.dirichletLabelSkew(labels: labels, clients: 20, concentration: 0.5, seed: 0, minPartitionSize: 10)
        let c = try Partitioner.dirichletLabelSkew(labels: labels, clients: 20, concentration: 0.5, seed: 1, minPartitionSize: 10)
        #expect(a == b)
        #expect(a != c)
        #expect(a.count == 20)
        expectExactCover(a, count: labels.count)
        expectExactCover(c, count: labels.count)
        #expect(a.allSatisfy { $0.count >= 10 })
        #expect(c.allSatisfy { $0.count >= 10 })
    }

    @Test func dirichletRespectsMinPartitionSizeOrThrows() throws {
        let labels = (0..<200).map { $0 % 4 }
        let parts = try Partitioner.dirichletLabelSkew(labels: labels, clients: 8, concentration: 0.3, seed: 5, minPartitionSize: 15)
        #expect(parts.allSatisfy { $0.count >= 15 })
        expectExactCover(parts, count: 200)
        // Impossible outright: 8 * 30 > 200.
        #expect(throws: PartitionError.minPartitionSizeUnreachable(minPartitionSize: 30, attempts: 0)) {
            try Partitioner.dirichletLabelSkew(labels: labels, clients: 8, concentration: 0.3, seed: 5, minPartitionSize: 30)
        }
        // Possible in principle but (practically) never drawn at this skew.
        #expect(throws: PartitionError.minPartitionSizeUnreachable(minPartitionSize: 25, attempts: 5)) {
            try Partitioner.dirichletLabelSkew(
                labels: labels, clients: 8, concentration: 0.01, seed: 5, minPartitionSize: 25, maxAttempts: 5)
        }
        #expect(throws: PartitionError.self) {
            try Partitioner.dirichletLabelSkew(labels: labels, clients: 8, concentration: 0, seed: 5)
        }
        #expect(throws: PartitionError.self) {
            try Partitioner.dirichletLabelSkew(labels: labels, clients: 0, concentration: 1, seed: 5)
        }
    }

    @Test func concentrationControlsSkew() throws {
        let labels = try Fixtures.workload().fullTrainSet.labels
        let clients = 10
        let balanced = try Partitioner.dirichletLabelSkew(labels: labels, clients: clients, concentration: 1000, seed: 3)
        let medium = try Partitioner.dirichletLabelSkew(labels: labels, clients: clients, concentration: 1, seed: 3, minPartitionSize: 1)
        let skewed = try Partitioner.dirichletLabelSkew(labels: labels, clients: clients, concentration: 0.05, seed: 3, minPartitionSize: 1)
        let hBalanced = Fixtures.meanLabelEntropy(balanced, labels: labels, classCount: 10)
        let hMedium = Fixtures.meanLabelEntropy(medium, labels: labels, classCount: 10)
        let hSkewed = Fixtures.meanLabelEntropy(skewed, labels: labels, classCount: 10)
        #expect(hBalanced > hMedium)
        #expect(hMedium > hSkewed)
        #expect(hBalanced > 0.98 * log(10.0))
        // Near-balanced sizes with a large concentration.
        let mean = Double(labels.count) / Double(clients)
        #expect(balanced.allSatisfy { abs(Double($0.count) - mean) < 0.15 * mean })
    }
}
