// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Apiary",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "apiary", targets: ["apiary"]),
        // The benchmark suite and the helpers its child processes run (docs/BENCHMARKS.md).
        .executable(name: "apiary-bench", targets: ["apiary-bench"]),
        .executable(name: "apiary-edge", targets: ["ApiaryEdge"]),
        .library(name: "ApiaryClient", targets: ["ApiaryClient"]),
        .library(name: "ApiaryAggregator", targets: ["ApiaryAggregator"]),
        // The merge path without sockets or files: frames in, outcome out (the rules).
        .library(name: "ApiaryMerge", targets: ["ApiaryMerge"]),
        // An aggregator with its status server, metrics and evaluator: what a Swift program
        // embeds to serve a model (see Examples/).
        .library(name: "ApiaryServer", targets: ["ApiaryServer"]),
        .library(name: "ApiaryObservability", targets: ["ApiaryObservability"]),
        .library(name: "ApiaryCore", targets: ["ApiaryCore"]),
        .library(name: "ApiaryProtocol", targets: ["ApiaryProtocol"]),
        .library(name: "ApiaryLearning", targets: ["ApiaryLearning"]),
        .library(name: "ZeroMQ", targets: ["ZeroMQ"]),
        // What a user tests their own trainer with (and what this package's tests share).
        .library(name: "ApiaryTesting", targets: ["ApiaryTesting"]),
    ],
    // YAML (on by default): config files are read with Yams, through swift-configuration's YAML
    // provider. The edge build turns it off (`make edge`: --disable-default-traits): Yams imports
    // Foundation, whose static link alone costs about 5 MiB of resident memory; config files are
    // then read with FlatYAML (Sources/ApiaryCommandLine), the same keys and checks.
    traits: [
        .trait(name: "YAML", description: "Read config files with Yams (swift-configuration's YAML provider)."),
        .default(enabledTraits: ["YAML"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Only the YAML trait (no JSON, the default: its provider imports Foundation), and only in
        // builds with this package's YAML trait: the edge build goes without (see `traits`).
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0",
                 traits: [.trait(name: "YAML", condition: .when(traits: ["YAML"]))]),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // swift-configuration's YAML trait reads the file with Yams; `training.extra` (a map of
        // the user's own keys, which a ConfigReader cannot list) is read with it too.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ", "ApiaryCore"], swiftSettings: strict),
        .target(name: "ApiaryCore", swiftSettings: strict),
        .target(name: "ApiaryProtocol", dependencies: ["ApiaryCore"], swiftSettings: strict),
        .target(
            name: "ApiaryLearning",
            dependencies: ["ApiaryCore"],
            resources: [.copy("Resources/digits.csv"), .copy("Resources/partition.json")],
            swiftSettings: strict
        ),
        .target(name: "ApiaryMerge", dependencies: ["ApiaryCore", "ApiaryProtocol"], swiftSettings: strict),
        .target(
            name: "ApiaryAggregator",
            dependencies: [
                "ApiaryCore", "ApiaryProtocol", "ApiaryMerge", "ZeroMQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ApiaryObservability",
            dependencies: [
                "ApiaryAggregator", "ApiaryCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Resources/dashboard.html")],
            swiftSettings: strict
        ),
        .target(
            name: "ApiaryServer",
            dependencies: [
                "ApiaryAggregator", "ApiaryCore", "ApiaryObservability",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ApiaryClient",
            dependencies: [
                "ApiaryCore", "ApiaryProtocol", "ZeroMQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ApiaryGateway",
            dependencies: [
                "ApiaryAggregator", "ApiaryClient", "ApiaryCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The benchmark suite: a library (`apiary bench` calls it) and its own executable, which
        // owns the helper commands the suite's child processes run.
        .target(
            name: "ApiaryBench",
            dependencies: [
                "ApiaryAggregator", "ApiaryClient", "ApiaryCommandLine", "ApiaryCore", "ApiaryLearning", "ApiaryMerge", "ApiaryObservability",
                "ApiaryProtocol", "ApiaryTesting", "ZeroMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "apiary-bench",
            dependencies: ["ApiaryBench"],
            swiftSettings: strict
        ),
        // What the command-line programs share: config files with environment overrides and
        // the strict key check, logging setup, and the training client's options and run.
        .target(
            name: "ApiaryCommandLine",
            dependencies: [
                "ApiaryClient", "ApiaryCore", "ApiaryLearning", "ZeroMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams", condition: .when(traits: ["YAML"])),
            ],
            swiftSettings: strict
        ),
        // glibc's malloc tuned for the edge binary's small resident set (one arena, a fixed
        // mmap threshold); called first thing in its main.
        .target(name: "CEdgeMalloc"),
        // The edge client (`make edge`): only the client, for devices; no aggregator, HTTP
        // server, SQLite or benchmarks.
        .executableTarget(
            name: "ApiaryEdge",
            dependencies: [
                "ApiaryCommandLine", "CEdgeMalloc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict,
            // Built with the YAML trait (a plain `swift build`), Foundation is linked through Yams
            // and needs its ICU part when linked statically (`--static-swift-stdlib`); the autolink
            // entries do not always name it. Without the trait (`make edge`) nothing uses it.
            linkerSettings: [.linkedLibrary("_FoundationICU", .when(platforms: [.linux]))]
        ),
        .executableTarget(
            name: "apiary",
            dependencies: [
                "ApiaryAggregator", "ApiaryBench", "ApiaryClient", "ApiaryCommandLine", "ApiaryGateway", "ApiaryLearning", "ApiaryCore", "ApiaryProtocol", "ApiaryObservability", "ApiaryServer", "ApiaryTesting", "ZeroMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // Testing a trainer or a deployment: child processes, ports, waiting without blocking,
        // raw protocol peers and an in-process fleet. No test framework: the demo links it too.
        .target(
            name: "ApiaryTesting",
            dependencies: [
                "ApiaryAggregator", "ApiaryClient", "ApiaryGateway", "ApiaryLearning", "ApiaryCore", "ApiaryProtocol", "ZeroMQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"], swiftSettings: strict),
        // FlatYAML (the edge build's config reader) against Yams and YAMLSnapshot.
        .testTarget(
            name: "ApiaryCommandLineTests",
            dependencies: [
                "ApiaryCommandLine",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "ApiaryCoreTests", dependencies: ["ApiaryCore"], swiftSettings: strict),
        .testTarget(name: "ApiaryProtocolTests", dependencies: ["ApiaryProtocol", "ApiaryCore"], swiftSettings: strict),
        .testTarget(
            name: "ApiaryAggregatorTests",
            dependencies: ["ApiaryAggregator", "ApiaryCore", "ApiaryCommandLine", .product(name: "Configuration", package: "swift-configuration")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ApiaryClientTests",
            dependencies: ["ApiaryClient", "ApiaryCore", .product(name: "Configuration", package: "swift-configuration")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ApiaryGatewayTests",
            dependencies: ["ApiaryGateway", "ApiaryAggregator", "ApiaryClient", "ApiaryCore", .product(name: "Configuration", package: "swift-configuration")],
            swiftSettings: strict
        ),
        .testTarget(name: "ApiaryMergeTests", dependencies: ["ApiaryMerge", "ApiaryProtocol", "ApiaryCore"], swiftSettings: strict),
        .testTarget(name: "ApiaryLearningTests", dependencies: ["ApiaryLearning", "ApiaryCore"], swiftSettings: strict),
        .testTarget(
            name: "ApiaryObservabilityTests",
            dependencies: [
                "ApiaryObservability", "ApiaryServer", "ApiaryAggregator", "ApiaryCore", "ApiaryProtocol", "ZeroMQ", "ApiaryTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ApiaryIntegrationTests",
            dependencies: [
                "ApiaryAggregator", "ApiaryClient", "ApiaryGateway", "ApiaryLearning", "ApiaryCore", "ApiaryProtocol", "ZeroMQ", "ApiaryTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
