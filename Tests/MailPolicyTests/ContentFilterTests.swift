import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SMTPProtocol
import Testing

@testable import MailPolicy

/// A filter server on loopback for tests: each connection runs `handler` with the
/// connection's reader and writer, and is closed when it returns. TCP on 127.0.0.1 and a free
/// port, or a Unix socket.
final class FakeFilterServer<In: Sendable, Out: Sendable>: Sendable {
    typealias Handler =
        @Sendable (inout FilterConnection.Inbound<In>, FilterConnection.Outbound<Out>) async throws -> Void

    let endpoint: FilterEndpoint
    private let channel: any Channel
    private let task: Task<Void, Never>
    /// Connections accepted so far.
    var connections: Int { accepted.withLockedValue { $0 } }
    private let accepted: NIOLockedValueBox<Int>

    private init(
        endpoint: FilterEndpoint, channel: any Channel, task: Task<Void, Never>, accepted: NIOLockedValueBox<Int>
    ) {
        self.endpoint = endpoint
        self.channel = channel
        self.task = task
        self.accepted = accepted
    }

    static func start(
        unixPath: String? = nil, configure: @escaping @Sendable (any Channel) throws -> Void = { _ in },
        handler: @escaping Handler
    ) async throws -> FakeFilterServer {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<In, Out>> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try configure(channel)
                return try NIOAsyncChannel<In, Out>(wrappingChannelSynchronously: channel)
            }
        }
        let server: NIOAsyncChannel<NIOAsyncChannel<In, Out>, Never>
        let endpoint: FilterEndpoint
        if let unixPath {
            server = try await bootstrap.bind(
                unixDomainSocketPath: unixPath, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
            endpoint = .unix(path: unixPath)
        } else {
            server = try await bootstrap.bind(host: "127.0.0.1", port: 0, childChannelInitializer: initializer)
            endpoint = .tcp(host: "127.0.0.1", port: server.channel.localAddress!.port!)
        }
        let accepted = NIOLockedValueBox(0)
        let task = Task {
            _ = try? await server.executeThenClose { connections in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in connections {
                            accepted.withLockedValue { $0 += 1 }
                            group.addTask {
                                try? await connection.executeThenClose { inbound, outbound in
                                    var iterator = inbound.makeAsyncIterator()
                                    try await handler(&iterator, outbound)
                                }
                            }
                        }
                    } catch {}
                    group.cancelAll()
                }
            }
        }
        return FakeFilterServer(endpoint: endpoint, channel: server.channel, task: task, accepted: accepted)
    }

    func stop() {
        channel.close(promise: nil)
        task.cancel()
    }
}

/// Reads until `count` bytes have come, or the end.
func read(_ inbound: inout FilterConnection.Inbound<ByteBuffer>, count: Int) async throws -> ByteBuffer {
    var collected = ByteBuffer()
    while collected.readableBytes < count, var chunk = try await inbound.next() { collected.writeBuffer(&chunk) }
    return collected
}

let sampleEnvelope = FilterEnvelope(
    clientAddress: IPAddress("192.0.2.7"), clientPort: 40123, clientName: "mail.sender.test",
    helo: "mail.sender.test", authenticatedUser: nil, sender: "alice@sender.test",
    recipients: ["bob@example.test", "carol@example.test"], queueID: "4Q2X7A1B", hostname: "mx.example.test")

let sampleMessage = ByteBuffer(
    string: "Received: from mail.sender.test\r\n\tby mx.example.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        + "From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: Lunch\r\n"
        + "Message-ID: <1@sender.test>\r\n\r\nHi Bob,\r\nlunch tomorrow?\r\n")

/// The first verdict of a freshly started filter daemon: connection failures are retried
/// every 100 ms while `running` says the daemon is up, at most `attempts` times.
func firstVerdict(
    of filter: some ContentFilter, for message: ByteBuffer, attempts: Int, running: () -> Bool
) async throws -> FilterVerdict? {
    for _ in 0..<attempts where running() {
        do {
            return try await filter.check(message, envelope: sampleEnvelope)
        } catch {
            guard case .connectFailed = error else { throw error }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
    return nil
}

/// Runs `body` while `process` (a filter daemon) runs, and stops the daemon afterwards,
/// whether `body` succeeds or not: `signal`, up to 10 s for it to exit (waited for without
/// blocking a thread), then SIGKILL.
///
/// A process started by Foundation's `Process` from the test runner inherits a signal mask
/// that blocks SIGTERM: a daemon that does not unblock it (spamd) must be started through a
/// wrapper that does (see `liveSpamd`).
func whileRunning<Result>(
    _ process: Process, stopWith signal: Int32 = SIGTERM, _ body: () async throws -> Result
) async throws -> Result {
    try process.run()
    func stop() async {
        kill(process.processIdentifier, signal)
        for _ in 0..<200 where process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    do {
        let result = try await body()
        await stop()
        return result
    } catch {
        await stop()
        throw error
    }
}

/// A fresh Unix socket path under the system's temporary directory.
func temporarySocketPath(_ name: String) -> String {
    "/tmp/tern-filter-test-\(name)-\(UInt32.random(in: 0...UInt32.max)).sock"
}

@Suite struct ContentFilterTests {
    @Test(arguments: [
        ("127.0.0.1:783", FilterEndpoint.tcp(host: "127.0.0.1", port: 783)),
        ("localhost:11333", .tcp(host: "localhost", port: 11333)),
        ("[::1]:783", .tcp(host: "::1", port: 783)),
        ("inet:127.0.0.1:8891", .tcp(host: "127.0.0.1", port: 8891)),
        ("http://127.0.0.1:11333", .tcp(host: "127.0.0.1", port: 11333)),
        ("http://127.0.0.1:11333/", .tcp(host: "127.0.0.1", port: 11333)),
        ("http://rspamd.internal", .tcp(host: "rspamd.internal", port: 80)),
        ("unix:/run/opendkim/opendkim.sock", .unix(path: "/run/opendkim/opendkim.sock")),
        ("/var/run/spamd.sock", .unix(path: "/var/run/spamd.sock")),
    ])
    func endpointParses(text: String, expected: FilterEndpoint) {
        #expect(FilterEndpoint(text) == expected)
    }

    @Test(arguments: [
        "", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "::1", "[::1", "unix:relative",
        "https://127.0.0.1:11333", "host name:25", "127.0.0.1:+25",
    ])
    func endpointRefuses(text: String) {
        #expect(FilterEndpoint(text) == nil)
    }

    @Test func endpointTakesDefaultPort() {
        #expect(FilterEndpoint("127.0.0.1", defaultPort: 783) == .tcp(host: "127.0.0.1", port: 783))
        #expect(FilterEndpoint.tcp(host: "::1", port: 783).description == "[::1]:783")
        #expect(FilterEndpoint.unix(path: "/s").description == "unix:/s")
    }

    @Test(arguments: [
        (" Yes", "Yes"),
        ("Yes, score=7.2\n\ttests=A,B", "Yes, score=7.2\r\n\ttests=A,B"),
        ("a\r\n b", "a\r\n b"),
        // A break without white space after it would start a new field: it gets a tab.
        ("a\nX-Injected: yes", "a\r\n\tX-Injected: yes"),
        // An empty line would end the header section: dropped.
        ("a\r\n\r\nbody", "a\r\n\tbody"),
        ("a\r\n \r\n b", "a\r\n b"),
        ("\n\tfirst", "first"),
        ("a\u{0}b\u{7}c", "abc"),
        ("lone\rCR", "lone\r\n\tCR"),
    ])
    func headerValuesAreNormalised(raw: String, expected: String) {
        #expect(FilterHeaderField.normalizedValue(Array(raw.utf8)) == expected)
    }

    @Test func headerNamesAreChecked() throws {
        #expect(FilterHeaderField.validatedName(Array("X-Spam-Flag".utf8)) == "X-Spam-Flag")
        for bad in ["", "X Spam", "X-Spam:", "X-\u{7f}", "Ä"] {
            #expect(FilterHeaderField.validatedName(Array(bad.utf8)) == nil)
        }
        #expect(throws: FilterError.self) {
            try FilterHeaderField.validated(name: Array("Bad Name".utf8), value: Array("v".utf8), from: "test")
        }
    }

    @Test func headerSectionSplitsFields() {
        let section = MessageHeaderSection(sampleMessage)
        #expect(section.fields.map(\.nameText) == ["Received", "From", "To", "Subject", "Message-ID"])
        #expect(
            String(decoding: section.fields[0].value, as: UTF8.self)
                == " from mail.sender.test\r\n\tby mx.example.test; Mon, 23 Nov 2026 10:00:00 +0000")
        let body = sampleMessage.getString(
            at: sampleMessage.readerIndex + section.bodyOffset, length: sampleMessage.readableBytes - section.bodyOffset
        )
        #expect(body == "Hi Bob,\r\nlunch tomorrow?\r\n")
    }

    @Test(arguments: [
        // Bare LF line ends, a name with white space before the colon.
        ("A: 1\nB : 2\n\nbody", ["A", "B"], "body"),
        // No empty line: the first line that is not a field starts the body (Postfix).
        ("A: 1\r\nnot a field\r\nmore", ["A"], "not a field\r\nmore"),
        // Only a header section.
        ("A: 1\r\n", ["A"], ""),
        ("A: 1", ["A"], ""),
        // No header section at all.
        ("\r\nbody", [], "body"),
        (" continuation first\r\n", [], " continuation first\r\n"),
    ])
    func headerSectionEdges(text: String, names: [String], body: String) {
        let buffer = ByteBuffer(string: text)
        let section = MessageHeaderSection(buffer)
        #expect(section.fields.map(\.nameText) == names)
        #expect(buffer.getString(at: section.bodyOffset, length: buffer.readableBytes - section.bodyOffset) == body)
    }

    @Test func verdictDescribesItself() {
        let verdict = FilterVerdict(
            filter: "spamd", score: 1003.3, threshold: 5, isSpam: true, symbols: ["GTUBE", "NO_RECEIVED"],
            headersToAdd: [FilterHeaderField(name: "X-Spam-Flag", value: "YES")])
        #expect(
            verdict.description
                == "spamd: spam score=1003.3/5.0 action=none symbols=GTUBE,NO_RECEIVED add=X-Spam-Flag")
        let rejected = FilterVerdict(
            filter: "milter", action: .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "No")),
            headerChanges: [.delete(name: "X-Spam", instance: 0)])
        #expect(rejected.description == "milter: action=reject (554 5.7.1 No) change=delete X-Spam")
    }

    // MARK: Connections and time limits

    @Test func refusedConnectionIsConnectFailed() async throws {
        // A port that was free a moment ago: nothing listens there.
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { _, _ in }
        let endpoint = server.endpoint
        server.stop()
        try await Task.sleep(for: .milliseconds(50))
        let filter = SpamdFilter(endpoint: endpoint)
        await #expect {
            _ = try await filter.check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .connectFailed(let detail) = error as? FilterError else { return false }
            return detail.contains("connection refused")
        }
    }

    @Test func missingUnixSocketIsConnectFailed() async {
        let filter = MilterFilter(endpoint: .unix(path: temporarySocketPath("missing")))
        await #expect {
            _ = try await filter.check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .connectFailed = error as? FilterError else { return false }
            return true
        }
    }

    @Test func silentFilterTimesOut() async throws {
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { inbound, _ in
            while try await inbound.next() != nil {}  // Reads everything, never answers.
        }
        defer { server.stop() }
        let timeouts = FilterTimeouts(connect: .seconds(2), total: .milliseconds(300))
        let filters: [any ContentFilter] = [
            SpamdFilter(endpoint: server.endpoint, timeouts: timeouts),
            RspamdFilter(endpoint: server.endpoint, timeouts: timeouts),
            MilterFilter(endpoint: server.endpoint, timeouts: timeouts),
        ]
        for filter in filters {
            let start = ContinuousClock.now
            await #expect {
                _ = try await filter.check(sampleMessage, envelope: sampleEnvelope)
            } throws: { error in
                guard case .timedOut = error as? FilterError else { return false }
                return true
            }
            #expect(ContinuousClock.now - start < .seconds(10))
        }
    }

    @Test func cancellationEndsTheCheck() async throws {
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { inbound, _ in
            while try await inbound.next() != nil {}
        }
        defer { server.stop() }
        let filter = SpamdFilter(endpoint: server.endpoint)
        let task = Task { try await filter.check(sampleMessage, envelope: sampleEnvelope) }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let result = await task.result
        guard case .failure(let error) = result else {
            Issue.record("a cancelled check returned a verdict")
            return
        }
        #expect(error as? FilterError == .cancelled)
    }
}
