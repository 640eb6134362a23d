#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The scikit-learn digits data set (8x8 grey-level images of hand-written digits), bundled
/// with this module as `digits.csv` (columns `p0`...`p63`, `label`; 1797 rows; raw pixel values
/// 0...16, row order = sklearn index).
public enum Digits {
    /// Features per image (8x8 pixels).
    public static let featureCount = 64
    /// Number of classes (digits 0...9).
    public static let classCount = 10
    /// The file name of the bundled resource.
    public static let resourceName = "digits.csv"

    /// Loads the bundled digits CSV, with features scaled `x / 16` into [0, 1].
    /// - Throws: `DatasetError.resourceNotFound` / `.unreadableResource` when the resource is
    ///   missing or unreadable, `DatasetError.malformed` when its content is invalid.
    public static func load() throws(DatasetError) -> Dataset {
        let data: Data
        do throws(ResourceFileError) {
            data = try ResourceFiles.data(resourceName)
        } catch {
            switch error {
            case .notFound: throw .resourceNotFound(resourceName)
            case .unreadable(let reason): throw .unreadableResource(resourceName, reason: reason)
            }
        }
        return try parse(csv: data)
    }

    /// Parses digits CSV content (header `p0,...,p63,label`, raw pixel values), scaling
    /// features by 1/16.
    /// - Throws: `DatasetError.malformed` for a wrong header, a non-numeric field, a wrong column
    ///   count, a label outside 0...9, or a feature count other than 64.
    public static func parse(csv data: Data, resourceName: String = Digits.resourceName) throws(DatasetError) -> Dataset {
        let result: Result<Dataset, DatasetError> = data.withUnsafeBytes { bytes in
            do throws(DatasetError) {
                return .success(try NumericCSV.parse(
                    bytes, resource: resourceName, labelColumn: "label", scale: 1.0 / 16.0, classCount: classCount))
            } catch {
                return .failure(error)
            }
        }
        let dataset = try result.get()
        guard dataset.featureCount == featureCount else {
            throw .malformed(resource: resourceName, line: 1, reason: "expected \(featureCount) feature columns, found \(dataset.featureCount)")
        }
        guard !dataset.isEmpty else {
            throw .malformed(resource: resourceName, line: 2, reason: "no data rows")
        }
        return dataset
    }
}
