import ApiaryCommandLine
import ApiaryLearning
import ApiaryCore
import Foundation
import Configuration
import Logging
import ApiaryServer

/// The model an aggregator serves: the bundled digits softmax, or the user's own from a
/// safetensors file (`model.initial`, `--model`), less the tensors `model.exclude` leaves out.
struct ServedModel {
    var layout: ParameterLayout
    var parameters: [Float]
    /// The file it came from; nil for the bundled digits model.
    var path: String?

    /// Whether this is the bundled digits model (which the built-in evaluator can score).
    var isDigits: Bool { layout == DigitsModel.layout }

    static var digits: ServedModel { ServedModel(layout: DigitsModel.layout, parameters: DigitsModel.initialParameters, path: nil) }

    /// Reads `model.initial` (or `override`, the `--model` option) and `model.exclude`; logs
    /// what was loaded, converted and left out. Throws a one-line `SettingsError` naming the
    /// file for a file that cannot be served.
    static func load(_ r: ConfigReader, override: String?, logger: Logger) throws -> ServedModel {
        let exclude = r.stringArray(forKey: "model.exclude", default: []).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let path = override ?? r.string(forKey: "model.initial").flatMap({ $0.isEmpty ? nil : $0 }) else {
            guard exclude.isEmpty else { throw SettingsError("model.exclude is set but model.initial (or --model) is not: the bundled digits model has nothing to leave out") }
            return .digits
        }
        let loaded: ModelFile.Loaded
        do {
            loaded = try AggregatorServer.loadModel(path: path, exclude: exclude, logger: logger)
        } catch {
            throw SettingsError("model.initial \(error)")
        }
        return ServedModel(layout: loaded.layout, parameters: loaded.parameters, path: path)
    }
}
