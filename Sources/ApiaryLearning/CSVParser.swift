/// A minimal hand-written parser for numeric CSV files whose last column is an integer label.
/// It accepts `\n` or `\r\n` line ends, skips blank lines, and numbers of the form
/// `[-]digits[.digits]`.
enum NumericCSV {
    /// Parses `bytes` (with a header row) into features scaled by `scale` and integer labels.
    static func parse(
        _ bytes: UnsafeRawBufferPointer, resource: String, labelColumn: String, scale: Double, classCount: Int
    ) throws(DatasetError) -> Dataset {
        let n = bytes.count
        var i = 0
        var line = 1

        // Header.
        var headerEnd = i
        while headerEnd < n && bytes[headerEnd] != UInt8(ascii: "\n") { headerEnd += 1 }
        var header = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[i..<headerEnd]), as: UTF8.self)
        if header.hasSuffix("\r") { header.removeLast() }
        if header.hasPrefix("\u{FEFF}") { header.removeFirst() }
        let columns = header.split(separator: ",", omittingEmptySubsequences: false)
        guard columns.count >= 2, columns.last.map(String.init) == labelColumn else {
            throw .malformed(resource: resource, line: 1, reason: "header must end with a '\(labelColumn)' column")
        }
        let d = columns.count - 1
        i = headerEnd + 1

        var features = [Float]()
        var labels = [Int]()
        features.reserveCapacity(2048 * d)
        labels.reserveCapacity(2048)

        while i < n {
            line += 1
            // Blank line (also the trailing newline).
            if bytes[i] == UInt8(ascii: "\n") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "\r"), i + 1 < n, bytes[i + 1] == UInt8(ascii: "\n") { i += 2; continue }
            for col in 0...d {
                guard let (value, isInteger, next) = parseNumber(bytes, from: i) else {
                    throw .malformed(resource: resource, line: line, reason: "column \(col + 1) is not a number")
                }
                i = next
                let isLast = col == d
                if isLast {
                    guard isInteger, let label = Int(exactly: value) else {
                        throw .malformed(resource: resource, line: line, reason: "label is not an integer")
                    }
                    guard label >= 0 && label < classCount else {
                        throw .malformed(resource: resource, line: line, reason: "label \(label) is outside 0..<\(classCount)")
                    }
                    labels.append(label)
                    if i < n && bytes[i] == UInt8(ascii: "\r") { i += 1 }
                    if i < n {
                        guard bytes[i] == UInt8(ascii: "\n") else {
                            throw .malformed(resource: resource, line: line, reason: "expected \(d + 1) columns")
                        }
                        i += 1
                    }
                } else {
                    guard i < n, bytes[i] == UInt8(ascii: ",") else {
                        throw .malformed(resource: resource, line: line, reason: "expected \(d + 1) columns, found \(col + 1)")
                    }
                    i += 1
                    features.append(Float(value * scale))
                }
            }
        }
        return Dataset(unchecked: features, labels: labels, featureCount: d, classCount: classCount)
    }

    /// Parses `[-]digits[.digits]` at `start`; returns the value, whether it had no fraction
    /// part, and the index after it; nil when no number starts there.
    @inline(__always)
    private static func parseNumber(_ b: UnsafeRawBufferPointer, from start: Int) -> (Double, Bool, Int)? {
        let n = b.count
        var i = start
        var negative = false
        if i < n && b[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        var value = 0.0
        var digits = 0
        while i < n, case let c = b[i], c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
            value = value * 10 + Double(c &- UInt8(ascii: "0"))
            digits += 1
            i += 1
        }
        var isInteger = true
        if i < n && b[i] == UInt8(ascii: ".") {
            i += 1
            isInteger = false
            var fraction = 0.0
            var scale = 1.0
            var fractionDigits = 0
            while i < n, case let c = b[i], c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
                fraction = fraction * 10 + Double(c &- UInt8(ascii: "0"))
                scale *= 10
                fractionDigits += 1
                i += 1
            }
            guard fractionDigits > 0 else { return nil }
            value += fraction / scale
            if fraction == 0 { isInteger = true }
        }
        guard digits > 0 else { return nil }
        return (negative ? -value : value, isInteger, i)
    }
}
