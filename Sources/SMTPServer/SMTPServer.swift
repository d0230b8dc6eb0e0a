import Logging
import MailPolicy
import MailQueue
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SMTPProtocol

#if canImport(Glibc)
    import Glibc
#endif

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
    /// How long into the content before the rate is judged (then every 5 s at most).
    public var minimumDataRateGrace: TimeAmount
    public var maxConnections: Int
    public var maxConnectionsPerIP: Int
    public var trustedNetworks: [NetworkRange]
    /// Failed AUTH attempts in one session before it ends with 421.
    public var authFailuresPerSession = 3
    /// Wait this long before the greeting; a client that talks first is refused (postscreen's
    /// pregreet test). Trusted networks are greeted at once. nil = greet at once.
    public var greetPause: TimeAmount?

    public init(
        hostname: String, listeners: [SMTPListener], limits: SMTPLimits = SMTPLimits(),
        commandTimeout: TimeAmount = .minutes(5), dataTimeout: TimeAmount = .minutes(10),
        minimumDataRate: Int = 0, minimumDataRateGrace: TimeAmount = .seconds(30), maxConnections: Int = 10_000,
        maxConnectionsPerIP: Int = 50,
        trustedNetworks: [NetworkRange] = []
    ) {
        self.hostname = hostname
        self.listeners = listeners
        self.limits = limits
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.minimumDataRate = minimumDataRate
        self.minimumDataRateGrace = minimumDataRateGrace
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
        var senderPolicy: SenderPolicy?
        var tls: ServerTLS?
        var authentication: SMTPAuthentication?
        var queue: QueueStore
        var reverseLookup: @Sendable (String) async -> String?
        /// The answer the hosts file gives at once, if any (no task, no wait).
        var immediateReverseName: @Sendable (String) -> String?
        var onQueued: @Sendable (QueuedMessage) -> Void
        var clock: @Sendable () -> Int
        /// Anti-spam and sender authentication (SPEC §2.6); nil runs none of them.
        var checks: CheckServices?
    }

    /// Sent down every open connection's pipeline when the server shuts down.
    struct ShutdownEvent: Sendable {}

    private let context: Context
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections = ConnectionCounter()
    private let openChannels = NIOLockedValueBox([ObjectIdentifier: any Channel]())

    /// `reverseLookup` maps a client address to its confirmed host name (FCrDNS) or nil; it
    /// must bound its own time. `onQueued` is told about every message the queue accepted.
    /// Without `tls` there is no STARTTLS and `submissions` cannot be served; without
    /// `authentication` there is no AUTH, and the submission ports do not require it.
    public init(
        settings: SMTPServerSettings, policy: RecipientPolicy, senderPolicy: SenderPolicy? = nil,
        tls: ServerTLS? = nil, authentication: SMTPAuthentication? = nil, checks: CheckServices? = nil,
        queue: QueueStore,
        reverseLookup: @escaping @Sendable (String) async -> String?,
        immediateReverseName: @escaping @Sendable (String) -> String? = { _ in nil },
        onQueued: @escaping @Sendable (QueuedMessage) -> Void,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.context = Context(
            settings: settings, policy: policy, senderPolicy: senderPolicy, tls: tls,
            authentication: authentication, queue: queue, reverseLookup: reverseLookup,
            immediateReverseName: immediateReverseName, onQueued: onQueued, clock: { Int(time(nil)) },
            checks: checks)
        self.group = group
        self.logger = logger
    }

    /// Binds every listener, reports the bound addresses (port 0 becomes a real port), and
    /// serves until the task is cancelled. Then it stops accepting, ends every open session
    /// (`421 4.3.2`; a message being committed gets its answer first) and returns once they
    /// are gone, or after `drainTime` at the most.
    public func run(
        drainTime: TimeAmount = .seconds(10), onBound: @Sendable ([SMTPListener]) -> Void = { _ in }
    ) async throws {
        var bound: [(SMTPListener, any Channel)] = []
        do {
            for listener in context.settings.listeners {
                let channel = try await bind(listener)
                var actual = listener
                actual.port = channel.localAddress?.port ?? listener.port
                logger.info("listening", metadata: ["event": "listen", "listener": "\(actual)"])
                bound.append((actual, channel))
            }
        } catch {
            for (_, channel) in bound { try? await channel.close() }
            throw error
        }
        if context.authentication != nil, context.tls == nil,
            context.settings.listeners.contains(where: { $0.kind == .submission })
        {
            logger.warning(
                "no [tls]: AUTH is never offered in plaintext, so submission takes mail like smtp",
                metadata: ["event": "config"])
        }
        onBound(bound.map(\.0))
        // Serve until cancelled.
        let stop = AsyncStream<Void>.makeStream()
        await withTaskCancellationHandler {
            for await _ in stop.stream {}
        } onCancel: {
            stop.continuation.finish()
        }
        for (_, channel) in bound { try? await channel.close() }
        let open = openChannels.withLockedValue { Array($0.values) }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ShutdownEvent())
        }
        // Each session gets until the deadline; whatever is still open then is closed, so that
        // nothing runs on once the queue below it closes.
        let deadline = NIODeadline.now() + drainTime
        for channel in open {
            let timer = channel.eventLoop.scheduleTask(deadline: deadline) { channel.close(promise: nil) }
            try? await channel.closeFuture.get()
            timer.cancel()
        }
    }

    private func bind(_ listener: SMTPListener) async throws -> any Channel {
        if listener.kind == .submissions, context.tls == nil {
            throw SMTPServerError.submissionsWithoutTLS(listener)
        }
        let settings = context.settings
        let context = self.context
        let connections = self.connections
        let openChannels = self.openChannels
        let logger = self.logger
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let ip = channel.remoteAddress?.ipAddress
                var logger = logger
                logger[metadataKey: "client"] = "\(ip ?? "unknown")"
                guard connections.admit(ip, total: settings.maxConnections, perIP: settings.maxConnectionsPerIP) else {
                    // RFC 5321 §3.8: 421 and close when the server cannot take the session.
                    logger.warning("too many connections", metadata: ["event": "reject", "reply": "421 4.7.0"])
                    let reply = SMTPReply(
                        421, EnhancedStatusCode(4, 7, 0), "\(settings.hostname) Error: too many connections")
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RefuseConnectionHandler(reply: reply))
                    }
                }
                let key = ObjectIdentifier(channel)
                openChannels.withLockedValue { $0[key] = channel }
                channel.closeFuture.whenComplete { _ in
                    connections.release(ip)
                    _ = openChannels.withLockedValue { $0.removeValue(forKey: key) }
                }
                let address = ip.flatMap { IPAddress($0) }
                let trusted =
                    address.map { address in settings.trustedNetworks.contains { $0.contains(address) } } ?? false
                return channel.eventLoop.makeCompletedFuture {
                    if listener.kind == .submissions, let tls = context.tls {
                        // RFC 8314 §3: the session begins with the handshake.
                        try channel.pipeline.syncOperations.addHandlers(tls.makeHandlers())
                    }
                    try channel.pipeline.syncOperations.addHandlers(
                        SMTPTimeoutHandler(
                            hostname: settings.hostname, commandTimeout: settings.commandTimeout,
                            dataTimeout: settings.dataTimeout, minimumDataRate: settings.minimumDataRate,
                            rateGracePeriod: settings.minimumDataRateGrace),
                        SMTPSessionHandler(
                            server: context, listener: listener,
                            client: ClientFacts(address: address, isTrusted: trusted),
                            clientAddress: ip, logger: logger))
                }
            }
            .bind(host: listener.host, port: listener.port).get()
    }
}

public enum SMTPServerError: Error, CustomStringConvertible {
    case submissionsWithoutTLS(SMTPListener)

    public var description: String {
        switch self {
        case .submissionsWithoutTLS(let listener): "\(listener) needs [tls]: implicit TLS has no plaintext start"
        }
    }
}

/// Answers a connection the server cannot take with one reply and closes it.
final class RefuseConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let reply: SMTPReply

    init(reply: SMTPReply) {
        self.reply = reply
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 80)
        reply.write(to: &buffer)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
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
