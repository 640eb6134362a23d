import Foundation
import Testing
import ApiaryLearning

@Suite struct DigitsTests {
    @Test func loadsTheBundledCSV() throws {
        let data = try Digits.load()
        #expect(data.count == 1797)
        #expect(data.featureCount == 64)
        #expect(data.classCount == 10)
        #expect(data.features.count == 1797 * 64)
        #expect(data.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(data.features.contains(1))  // 16 / 16
        #expect(data.labels.allSatisfy { (0...9).contains($0) })
        #expect(data.labelCounts.allSatisfy { $0 > 150 })
        // First row of sklearn's digits: 0,0,5,13,9,1,0,0,... label 0.
        let expectedStart: [Float] = [0, 0, 5.0 / 16, 13.0 / 16]
        #expect(Array(data.features[0..<4]) == expectedStart)
        #expect(data.labels[0] == 0)
        #expect(data.labels[1] == 1)
    }

    @Test func subsetKeepsRowsInOrder() throws {
        let data = try Digits.load()
        let sub = data.subset(indices: [5, 0, 5])
        #expect(sub.count == 3)
        #expect(sub.labels == [data.labels[5], data.labels[0], data.labels[5]])
        #expect(Array(sub.features[0..<64]) == Array(data.features[(5 * 64)..<(6 * 64)]))
        #expect(Array(sub.features[64..<128]) == Array(data.features[0..<64]))
    }

    private func csv(_ body: String) -> Data {
        let header = (0..<64).map { "p\($0)" }.joined(separator: ",") + ",label\n"
        return Data((header + body).utf8)
    }

    private func row(_ value: String = "16", label: String = "3") -> String {
        Array(repeating: value, count: 64).joined(separator: ",") + "," + label
    }

    @Test func parsesCRLFAndDecimals() throws {
        let data = try Digits.parse(csv: csv(row("8.0") + "\r\n" + row("4", label: "9") + "\r\n"))
        #expect(data.count == 2)
        #expect(data.features[0] == 0.5)
        #expect(data.features[64] == 0.25)
        #expect(data.labels == [3, 9])
    }

    @Test func rejectsMalformedContent() {
        #expect(throws: DatasetError.self) { try Digits.parse(csv: Data("a,b,c\n1,2,3\n".utf8)) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv(row(label: "10") + "\n")) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv(row(label: "1.5") + "\n")) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv(row("x") + "\n")) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv("1,2,3\n")) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv(row() + ",7\n")) }
        #expect(throws: DatasetError.self) { try Digits.parse(csv: csv("")) }
        do {
            _ = try Digits.parse(csv: csv(row() + "\n" + row("?") + "\n"))
            Issue.record("expected an error")
        } catch {
            guard case .malformed(_, let line, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(line == 3)
        }
    }

    @Test func datasetInitChecksShape() {
        #expect(throws: DatasetError.self) { try Dataset(features: [0, 1, 2], labels: [0], featureCount: 2, classCount: 2) }
        #expect(throws: DatasetError.labelOutOfRange(label: 2, classCount: 2)) {
            try Dataset(features: [0, 1], labels: [2], featureCount: 2, classCount: 2)
        }
        #expect(throws: DatasetError.self) { try Dataset(features: [], labels: [], featureCount: 0, classCount: 2) }
    }
}
