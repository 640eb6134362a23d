// swift-tools-version: 6.1
// An Apiary program of your own: depends on Apiary by path, as a project of yours would
// depend on it by URL (`.package(url: "https://github.com/.../apiary", from: "...")`).
import PackageDescription

let package = Package(
    name: "mlp-digits",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Apiary", path: "../.."),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "MLPDigits",
            dependencies: [
                .product(name: "ApiaryServer", package: "Apiary"),
                .product(name: "ApiaryClient", package: "Apiary"),
                .product(name: "ApiaryLearning", package: "Apiary"),
                .product(name: "ZeroMQ", package: "Apiary"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
