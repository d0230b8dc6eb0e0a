import Foundation
import Logging
import SMTPServer
import TernService

#if canImport(Glibc)
    import Glibc
#endif

/// A real Tern (the same `TernApplication` that `tern serve` runs) on a loopback port, with its
/// own data directory, for tests that speak SMTP over real sockets.
final class TestServer: @unchecked Sendable {
    let directory: String
    let port: Int
    let configuration: TernConfiguration
    private let task: Task<Void, any Error>

    /// The configuration of Tests/IntegrationTests/Transcripts/README.md; `extra` is appended.
    static func configurationText(directory: String, port: Int, dnsPort: Int, extra: String) -> String {
        """
        hostname = "mx.example.test"
        data_dir = "\(directory)/data"

        [listen]
        smtp = ["127.0.0.1:\(port)"]

        [limits]
        max_message_size = 20000
        max_recipients = 5
        max_header_size = 10000
        command_timeout = "20s"
        data_timeout = "20s"

        [relay]
        trusted_networks = ["127.0.0.1/32"]

        [dns]
        servers = ["127.0.0.1:\(dnsPort)"]

        [[domains]]
        name = "example.test"
        mailboxes = ["alice", "bob", "postmaster"]
        aliases = { sales = ["alice", "carol@elsewhere.test"] }
        \(extra)
        """
    }

    /// Starts a server and waits until it listens. `dnsPort` defaults to a port where nothing
    /// listens, so reverse lookups fail fast.
    static func start(extra: String = "", dnsPort: Int? = nil) async throws -> TestServer {
        let directory = NSTemporaryDirectory() + "tern-it-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try freePort()
        let text = configurationText(
            directory: directory, port: port, dnsPort: try dnsPort ?? freePort(udp: true), extra: extra)
        try text.write(toFile: "\(directory)/tern.toml", atomically: true, encoding: .utf8)
        let configuration = try TernConfiguration.load(contentsOf: "\(directory)/tern.toml")
        let server = TestServer(directory: directory, port: port, configuration: configuration)
        try await server.waitUntilListening()
        return server
    }

    private init(directory: String, port: Int, configuration: TernConfiguration) {
        self.directory = directory
        self.port = port
        self.configuration = configuration
        let logFile = open("\(directory)/tern.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        var logger = Logger(label: "tern") { label in
            var handler = KeyValueLogHandler(label: label, descriptor: logFile)
            handler.logLevel = .debug
            return handler
        }
        logger.logLevel = .debug
        task = Task {
            try await TernApplication.serve(configuration, logger: logger)
        }
    }

    private func waitUntilListening() async throws {
        for _ in 0..<200 {
            if let client = try? SMTPTestClient(port: port) {
                client.close()
                return
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw TestServerError("server did not start; log:\n\(log)")
    }

    var log: String {
        (try? String(contentsOfFile: "\(directory)/tern.log", encoding: .utf8)) ?? ""
    }

    func stop() async {
        task.cancel()
        _ = await task.result
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Messages in the Maildir of `user@domain` (SPEC §1.3 layout).
    func maildirCount(_ user: String, domain: String = "example.test") -> Int {
        let path = "\(directory)/data/mail/\(domain)/\(user)/new"
        return (try? FileManager.default.contentsOfDirectory(atPath: path).count) ?? 0
    }

    func maildirMessages(_ user: String, domain: String = "example.test") -> [String] {
        let path = "\(directory)/data/mail/\(domain)/\(user)/new"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().compactMap { try? String(contentsOfFile: "\(path)/\($0)", encoding: .utf8) }
    }

    /// Waits until no local recipient is still pending, asking the server as `tern queue list`
    /// does.
    func waitForLocalDeliveries(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let response = try ControlSocket.send(
                .init(op: .list), path: ControlSocket.path(dataDirectory: configuration.dataDirectory))
            let pending = (response?.listings ?? []).flatMap(\.recipients).filter {
                $0.status == "pending" && $0.address.hasSuffix("@example.test")
            }
            if response != nil && pending.isEmpty { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestServerError("local deliveries still pending after \(timeout)")
    }
}

struct TestServerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A port on 127.0.0.1 that was free a moment ago.
func freePort(udp: Bool = false) throws -> Int {
    let descriptor = socket(AF_INET, Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(descriptor, pointer, length) == 0 else { return -1 }
            return getsockname(descriptor, pointer, &length)
        }
    }
    guard bound == 0 else { throw TestServerError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
