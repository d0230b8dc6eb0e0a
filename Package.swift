// swift-tools-version:6.0
// Tern: a mail transfer agent on SwiftNIO. The target graph follows SPEC §3.1; the data path
// reads top to bottom: protocol codec → message → DNS → queue → policy → delivery → server →
// service → command line.
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "Tern",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tern", targets: ["TernCommand"]),
        .executable(name: "SMTPFuzzer", targets: ["SMTPFuzzer"]),
        .executable(name: "DNSFuzzer", targets: ["DNSFuzzer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    ],
    targets: [
        .target(
            name: "SMTPProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "MailMessage",
            dependencies: ["SMTPProtocol", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "DNSClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MailQueue",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // libxcrypt's crypt(3): the password hashes of Dovecot's passwd-file (SHA-crypt, bcrypt).
        .systemLibrary(name: "CCrypt"),
        // zlib's deflate: TLS-RPT reports travel gzipped (RFC 8460 §5.1).
        .systemLibrary(name: "CZlib"),
        .target(
            name: "MailPolicy",
            dependencies: [
                "DNSClient", "MailMessage", "SMTPProtocol", "CCrypt",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // DKIM: Ed25519 and SHA-256 (RFC 8463), RSA through _CryptoExtras (RFC 6376).
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MailDelivery",
            dependencies: [
                "SMTPProtocol", "MailMessage", "DNSClient", "MailQueue", "MailPolicy", "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SMTPServer",
            dependencies: [
                "SMTPProtocol", "MailMessage", "DNSClient", "MailQueue", "MailPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernService",
            dependencies: [
                "SMTPProtocol", "MailMessage", "DNSClient", "MailQueue", "MailPolicy",
                "MailDelivery", "SMTPServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "TernCommand",
            dependencies: [
                "TernService", "MailPolicy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // libFuzzer entry point; see docs/testing.md and ../shared/FUZZING.md.
        .executableTarget(
            name: "SMTPFuzzer",
            dependencies: ["SMTPProtocol", "MailMessage", "FuzzSupport"],
            swiftSettings: strict
        ),
        // Replaying corpus files when a fuzz target is built without libFuzzer.
        .target(name: "FuzzSupport", swiftSettings: strict),
        .executableTarget(
            // libFuzzer entry point for the DNS message parser; see docs/testing.md.
            name: "DNSFuzzer",
            dependencies: ["DNSClient", "FuzzSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "SMTPProtocolTests", dependencies: ["SMTPProtocol"], exclude: ["FuzzCorpus"]),
        .testTarget(name: "MailMessageTests", dependencies: ["MailMessage"]),
        .testTarget(name: "DNSClientTests", dependencies: ["DNSClient"], exclude: ["FuzzCorpus"]),
        .testTarget(
            name: "MailQueueTests",
            dependencies: [
                "MailQueue", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MailPolicyTests",
            dependencies: [
                "MailPolicy", "DNSClient", "MailMessage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "MailDeliveryTests", dependencies: ["MailDelivery"]),
        .testTarget(name: "TernServiceTests", dependencies: ["TernService", "MailDelivery"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "TernService", "SMTPServer", "MailQueue",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Transcripts"]
        ),
    ]
)
