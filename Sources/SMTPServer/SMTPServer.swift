import Logging
import MailPolicy
import MailQueue
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif
import SMTPProtocol

/// One address the server listens on, and what kind of port it is (SPEC §1.2 `[listen]`).
public struct SMTPListener: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// Port 25: inbound MX (RFC 5321).
        case smtp
        /// Port 587: message submission (RFC 6409).
        case submission
        /// Port 465: submission over implicit TLS (RFC 8314).
        case submissions
    }

    public var kind: Kind
    public var host: String
    public var port: Int

    public init(kind: Kind, host: String, port: Int) {
        self.kind = kind
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "\(kind)=[\(host)]:\(port)" : "\(kind)=\(host):\(port)" }
}

/// Everything the SMTP server needs to know, resolved from the configuration.
public struct SMTPServerSettings: Sendable {
    public var hostname: String
    public var listeners: [SMTPListener]
    public var limits: SMTPLimits
    public var commandTimeout: TimeAmount
    public var dataTimeout: TimeAmount
    /// Octets per second that DATA/BDAT content must average; 0 = no minimum.
    public var minimumDataRate: Int
    public var maxConnections: Int
    public var maxConnectionsPerIP: Int
    public var trustedNetworks: [NetworkRange]

    public init(
        hostname: String, listeners: [SMTPListener], limits: SMTPLimits = SMTPLimits(),
        commandTimeout: TimeAmount = .minutes(5), dataTimeout: TimeAmount = .minutes(10),
        minimumDataRate: Int = 0, maxConnections: Int = 10_000, maxConnectionsPerIP: Int = 50,
        trustedNetworks: [NetworkRange] = []
    ) {
        self.hostname = hostname
        self.listeners = listeners
        self.limits = limits
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.minimumDataRate = minimumDataRate
        self.maxConnections = maxConnections
        self.maxConnectionsPerIP = maxConnectionsPerIP
        self.trustedNetworks = trustedNetworks
    }
}

/// The SMTP server: binds every listener, runs one task per connection in a discarding task
/// group (a connection's failure never takes the server down), and on cancellation stops
/// accepting and ends every open session with `421 4.3.2`.
public final class SMTPServer: Sendable {
    /// What every connection shares.
    struct Context: Sendable {
        var settings: SMTPServerSettings
        var policy: RecipientPolicy
        var queue: QueueStore
        var reverseLookup: @Sendable (String) async -> String?
        var onQueued: @Sendable (QueuedMessage) -> Void
        var clock: @Sendable () -> Int
    }

    private let context: Context
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections = ConnectionCounter()

    /// `reverseLookup` maps a client address to its confirmed host name (FCrDNS) or nil; it
    /// must bound its own time. `onQueued` is told about every message the queue accepted.
    public init(
        settings: SMTPServerSettings, policy: RecipientPolicy, queue: QueueStore,
        reverseLookup: @escaping @Sendable (String) async -> String?,
        onQueued: @escaping @Sendable (QueuedMessage) -> Void,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.context = Context(
            settings: settings, policy: policy, queue: queue, reverseLookup: reverseLookup, onQueued: onQueued,
            clock: { Int(time(nil)) })
        self.group = group
        self.logger = logger
    }

    /// Binds every listener, reports the bound addresses (port 0 becomes a real port), and
    /// serves until the task is cancelled.
    public func run(onBound: @Sendable ([SMTPListener]) -> Void = { _ in }) async throws {
        var bound: [(SMTPListener, NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>)] = []
        for listener in context.settings.listeners {
            let channel = try await bind(listener)
            var actual = listener
            actual.port = channel.channel.localAddress?.port ?? listener.port
            logger.info("listening", metadata: ["event": "listen", "listener": "\(actual)"])
            bound.append((actual, channel))
        }
        onBound(bound.map(\.0))
        let channels = bound.map { $0.1.channel }
        try await withTaskCancellationHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for (listener, channel) in bound {
                    group.addTask {
                        try await self.accept(on: channel, listener: listener)
                    }
                }
            }
        } onCancel: {
            for channel in channels { channel.close(promise: nil) }
        }
    }

    private func bind(_ listener: SMTPListener) async throws
        -> NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    {
        let settings = context.settings
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: listener.host, port: listener.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SMTPTimeoutHandler(
                            hostname: settings.hostname, commandTimeout: settings.commandTimeout,
                            dataTimeout: settings.dataTimeout, minimumDataRate: settings.minimumDataRate))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }

    private func accept(
        on server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, listener: SMTPListener
    ) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask {
                        await self.serve(connection, listener: listener)
                    }
                }
            }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, listener: SMTPListener) async {
        let remote = connection.channel.remoteAddress
        let ip = remote?.ipAddress
        var logger = self.logger
        logger[metadataKey: "client"] = "\(ip ?? "unknown")"
        guard connections.admit(ip, total: context.settings.maxConnections, perIP: context.settings.maxConnectionsPerIP)
        else {
            // RFC 5321 §3.8: 421 and close when the server cannot take the session.
            logger.warning("too many connections", metadata: ["event": "reject", "reply": "421 4.7.0"])
            var buffer = ByteBuffer()
            SMTPReply(421, EnhancedStatusCode(4, 7, 0), "\(context.settings.hostname) Error: too many connections")
                .write(to: &buffer)
            try? await connection.channel.writeAndFlush(buffer)
            try? await connection.channel.close()
            return
        }
        defer { connections.release(ip) }
        let address = ip.flatMap { IPAddress($0) }
        let trusted = address.map { address in context.settings.trustedNetworks.contains { $0.contains(address) } } ?? false
        logger.info("connect", metadata: ["event": "connect", "listener": "\(listener.kind)"])
        let lookup = context.reverseLookup
        let reverseName = Task<String?, Never> { () async -> String? in
            guard let ip else { return nil }
            return await lookup(ip)
        }
        defer { reverseName.cancel() }
        let driver = SMTPConnection(
            context: context, listener: listener, channel: connection.channel,
            client: ClientFacts(address: address, isTrusted: trusted), clientAddress: ip,
            reverseName: reverseName, logger: logger)
        do {
            try await connection.executeThenClose { inbound, outbound in
                await driver.run(inbound: inbound, outbound: outbound)
            }
        } catch {
            logger.debug("connection closed with error", metadata: ["error": "\(error)"])
        }
    }
}

/// Counts open connections, in total and per client address (SPEC §1.2 `max_connections`,
/// `max_connections_per_ip`).
final class ConnectionCounter: Sendable {
    private struct State {
        var total = 0
        var perIP: [String: Int] = [:]
    }

    private let state = NIOLockedValueBox(State())

    func admit(_ ip: String?, total: Int, perIP: Int) -> Bool {
        state.withLockedValue { state in
            guard state.total < total else { return false }
            if let ip {
                guard state.perIP[ip, default: 0] < perIP else { return false }
                state.perIP[ip, default: 0] += 1
            }
            state.total += 1
            return true
        }
    }

    func release(_ ip: String?) {
        state.withLockedValue { state in
            state.total -= 1
            if let ip {
                let count = state.perIP[ip, default: 1] - 1
                state.perIP[ip] = count > 0 ? count : nil
            }
        }
    }
}
