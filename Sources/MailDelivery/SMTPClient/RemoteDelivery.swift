import Logging
import NIOCore
import NIOSSL
import SMTPProtocol
import Synchronization

/// What became of one recipient in one delivery attempt.
public struct DeliveryOutcome: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case delivered, deferred, bounced
    }

    public var kind: Kind
    /// RFC 3463 status, e.g. `5.1.1`.
    public var status: String
    /// The server's reply quoted with who said it, or Tern's own reason: the log's `reason`, the
    /// queue's last error and the bounce's diagnostic.
    public var text: String
    /// The server that answered, for a DSN's Remote-MTA.
    public var remoteMTA: String?
    /// `text` is a reply from `remoteMTA` (a DSN's `smtp;` diagnostic) rather than Tern's own.
    public var fromServer: Bool
    /// `mx1.example.net[192.0.2.1]:25`, for the log's `relay`.
    public var relay: String?
    /// `TLSv1.3` when the transfer ran under TLS.
    public var tls: String?
    /// Delivered to a server that took the DSN parameters (RFC 3461 §5.2.2): a success notice,
    /// if one was asked for, is its business. False for a final delivery (Maildir, LMTP) and a
    /// relay to a server without DSN, after which Tern sends it ("delivered" or "relayed").
    public var dsnPassedOn = false

    public init(
        kind: Kind, status: String, text: String, remoteMTA: String? = nil, fromServer: Bool = false,
        relay: String? = nil
    ) {
        self.kind = kind
        self.status = status
        self.text = text
        self.remoteMTA = remoteMTA
        self.fromServer = fromServer
        self.relay = relay
    }

    /// What the log and the queue's last error say: who said what, or Tern's own reason.
    public var logText: String {
        guard fromServer else { return text }
        return "host \(relay ?? remoteMTA ?? "?") said: \(text)"
    }

    /// An outcome as the queue keeps it: `status text` (the form `lastError` has).
    public var recorded: String { "\(status) \(logText)" }

    /// The outcome a reply gives: 2xx delivered, 4xx deferred, 5xx bounced (RFC 5321 §4.2.1).
    static func from(_ reply: SMTPReply, host: String, relay: String) -> DeliveryOutcome {
        let kind: Kind = reply.code < 400 ? .delivered : reply.code < 500 ? .deferred : .bounced
        let fallback = reply.code < 400 ? "2.0.0" : reply.code < 500 ? "4.0.0" : "5.0.0"
        return DeliveryOutcome(
            kind: kind, status: reply.enhanced?.description ?? fallback, text: reply.fullText, remoteMTA: host,
            fromServer: true, relay: relay)
    }
}

/// Takes a message to the servers of one domain; `RemoteDelivery` over SMTP, a fake in tests.
public protocol RemoteTransport: Sendable {
    /// One outcome per recipient of `message`, in order.
    func deliver(_ message: OutboundMessage, domain: String) async -> [DeliveryOutcome]
    /// Ends idle cached connections (all of them at shutdown).
    func closeIdleConnections(all: Bool) async
}

/// The message a remote delivery sends: its envelope for one destination, and its content.
public struct OutboundMessage: Sendable {
    public var envelope: SMTPClientSession.Envelope
    /// Opens the content from its start; called once per transfer attempt.
    public var content: @Sendable () async throws -> MessageContentReader

    public init(
        envelope: SMTPClientSession.Envelope, content: @escaping @Sendable () async throws -> MessageContentReader
    ) {
        self.envelope = envelope
        self.content = content
    }
}

/// Delivers to remote domains over SMTP (SPEC §2.3): routes by MX, tries every exchanger and
/// every address in turn until each recipient is decided, keeps idle connections for the next
/// message to the same server, and bounds the connections per destination.
public final class RemoteDelivery: RemoteTransport {
    public struct Settings: Sendable {
        public var heloName: String
        public var timeouts: SMTPClientTimeouts
        /// Opportunistic STARTTLS (RFC 3207).
        public var startTLS: Bool
        /// `[delivery] destination_concurrency`: connections at once to one destination.
        public var destinationConcurrency: Int
        /// How long an idle connection waits for another message (Postfix: 2 s).
        public var connectionCacheTime: TimeAmount
        /// RFC 5321 §4.5.3.1.8 requires servers to take 100 recipients per transaction; more go
        /// in further transactions.
        public var recipientsPerTransaction: Int
        /// Addresses tried per delivery at most, across all exchangers.
        public var addressLimit: Int

        public init(
            heloName: String, timeouts: SMTPClientTimeouts = SMTPClientTimeouts(), startTLS: Bool = true,
            destinationConcurrency: Int = 20, connectionCacheTime: TimeAmount = .seconds(5),
            recipientsPerTransaction: Int = 100, addressLimit: Int = 10
        ) {
            self.heloName = heloName
            self.timeouts = timeouts
            self.startTLS = startTLS
            self.destinationConcurrency = max(1, destinationConcurrency)
            self.connectionCacheTime = connectionCacheTime
            self.recipientsPerTransaction = max(1, recipientsPerTransaction)
            self.addressLimit = max(1, addressLimit)
        }
    }

    private let settings: Settings
    private let router: MXRouter
    private let group: any EventLoopGroup
    private let tlsContext: NIOSSLContext?
    private let logger: Logger
    private let cache = Mutex<[String: [SMTPClientConnection]]>([:])
    private let limiter: DestinationLimiter
    /// Addresses whose TLS handshake failed lately: tried in plaintext for a while.
    private let plaintextOnly = Mutex<[String: NIODeadline]>([:])

    public init(settings: Settings, router: MXRouter, group: any EventLoopGroup, logger: Logger) {
        self.settings = settings
        self.router = router
        self.group = group
        self.logger = logger
        self.limiter = DestinationLimiter(limit: settings.destinationConcurrency)
        if settings.startTLS {
            // Opportunistic TLS: encryption against passive listeners; any certificate does,
            // as RFC 7435 says. Verification policy (MTA-STS, DANE) comes with its own settings.
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            configuration.minimumTLSVersion = .tlsv1
            self.tlsContext = try? NIOSSLContext(configuration: configuration)
        } else {
            self.tlsContext = nil
        }
    }

    /// Delivers `message` to its recipients, all in `domain`; one outcome per recipient, in order.
    public func deliver(_ message: OutboundMessage, domain: String) async -> [DeliveryOutcome] {
        let route: Route
        do {
            route = try await router.route(domain)
        } catch {
            let outcome = DeliveryOutcome(
                kind: error.isPermanent ? .bounced : .deferred, status: error.status,
                text: String(error.description.drop { $0 != " " }.dropFirst()))
            return Array(repeating: outcome, count: message.envelope.recipients.count)
        }
        let key = router.relayhost.map { "relayhost \($0)" } ?? domain
        await limiter.acquire(key)
        defer { limiter.release(key) }
        var outcomes: [DeliveryOutcome] = []
        let chunk = settings.recipientsPerTransaction
        for start in stride(from: 0, to: message.envelope.recipients.count, by: chunk) {
            var part = message
            part.envelope.recipients = Array(
                message.envelope.recipients[start..<min(start + chunk, part.envelope.recipients.count)])
            outcomes += await deliver(part, route: route)
        }
        return outcomes
    }

    /// Every exchanger and address in turn, until each recipient is decided (RFC 5321 §5.1).
    private func deliver(_ message: OutboundMessage, route: Route) async -> [DeliveryOutcome] {
        var outcomes = [DeliveryOutcome?](repeating: nil, count: message.envelope.recipients.count)
        var lastProblem = route.problems.last ?? "no exchanger could be reached"
        var lastReply: SMTPReply?
        var tried = 0
        hosts: for host in route.hosts {
            for address in host.addresses {
                guard tried < settings.addressLimit else { break hosts }
                tried += 1
                let open = outcomes.indices.filter { outcomes[$0] == nil }
                guard !open.isEmpty else { break hosts }
                guard let socketAddress = try? SocketAddress(ipAddress: address.description, port: route.port) else {
                    continue
                }
                let client: SMTPClientConnection
                switch await connection(to: socketAddress, hostName: host.name) {
                case .success(let opened):
                    client = opened
                case .failure(let failure):
                    lastProblem = failure.description
                    lastReply = failure.reply
                    logger.info(
                        "host failed",
                        metadata: ["event": "host_failed", "relay": "\(host.name)", "reason": "\(failure.description)"])
                    continue
                }
                var envelope = message.envelope
                envelope.recipients = open.map { message.envelope.recipients[$0] }
                let result = await client.run(envelope, content: message.content)
                let relay = client.connection.peer
                for (position, index) in open.enumerated() {
                    if let reply = result.replies[position] {
                        var outcome = DeliveryOutcome.from(reply, host: host.name, relay: relay)
                        outcome.tls = client.tls
                        outcome.dsnPassedOn = client.offersDSN
                        outcomes[index] = outcome
                    }
                }
                if let failure = result.failure {
                    lastProblem = "host \(relay) \(failure)"
                    lastReply = failure.reply
                } else {
                    checkIn(client, key: socketAddress.description)
                }
            }
        }
        return outcomes.map { outcome in
            if let outcome { return outcome }
            // Nobody decided: a refusal in 5xx from the last server tried is final; anything
            // else (no answer, 4xx, a dropped connection) is tried again later.
            if let lastReply, lastReply.code >= 500 {
                return DeliveryOutcome(
                    kind: .bounced, status: lastReply.enhanced?.description ?? "5.0.0", text: lastProblem,
                    fromServer: false)
            }
            let status = lastReply?.enhanced?.description ?? "4.4.1"
            return DeliveryOutcome(kind: .deferred, status: status, text: lastProblem)
        }
    }

    /// An idle cached session to this address, else a new one; a failed TLS handshake is
    /// retried once in plaintext, as opportunistic TLS allows (RFC 7435 §3).
    private func connection(
        to address: SocketAddress, hostName: String
    ) async -> Result<SMTPClientConnection, SMTPClientConnection.OpenFailure> {
        let key = address.description
        if let cached = checkOut(key) { return .success(cached) }
        let configuration = SMTPClientSession.Configuration(heloName: settings.heloName, startTLS: settings.startTLS)
        let plaintext = plaintextOnly.withLock { entries in
            if let until = entries[key], until > .now() { return true }
            entries[key] = nil
            return false
        }
        let result = await SMTPClientConnection.open(
            to: address, hostName: hostName, group: group, configuration: configuration, timeouts: settings.timeouts,
            tlsContext: plaintext ? nil : tlsContext)
        guard case .failure(let failure) = result, failure.tlsFailed, !plaintext else { return result }
        logger.info(
            "TLS failed, trying plaintext",
            metadata: [
                "event": "tls_failed", "relay": "\(hostName)[\(address.ipAddress ?? "")]",
                "reason": "\(failure.description)",
            ])
        plaintextOnly.withLock { $0[key] = .now() + .hours(1) }
        return await SMTPClientConnection.open(
            to: address, hostName: hostName, group: group, configuration: configuration, timeouts: settings.timeouts,
            tlsContext: nil)
    }

    private func checkOut(_ key: String) -> SMTPClientConnection? {
        let cutoff = NIODeadline.now() - settings.connectionCacheTime
        var stale: [SMTPClientConnection] = []
        let found: SMTPClientConnection? = cache.withLock { cache in
            while var idle = cache[key], let last = idle.popLast() {
                cache[key] = idle.isEmpty ? nil : idle
                if last.isReusable, last.idleSince > cutoff { return last }
                stale.append(last)
            }
            return nil
        }
        for connection in stale { connection.connection.close() }
        return found
    }

    private func checkIn(_ client: SMTPClientConnection, key: String) {
        guard client.isReusable else { return client.connection.close() }
        let overflow: SMTPClientConnection? = cache.withLock { cache in
            var idle = cache[key] ?? []
            idle.append(client)
            let overflow = idle.count > settings.destinationConcurrency ? idle.removeFirst() : nil
            cache[key] = idle
            return overflow
        }
        if let overflow { Task { await overflow.quit() } }
    }

    /// Ends the sessions idle for longer than the cache time; the scheduler calls this every
    /// second or so.
    public func closeIdleConnections(all: Bool = false) async {
        let cutoff = all ? NIODeadline.distantFuture : NIODeadline.now() - settings.connectionCacheTime
        let expired: [SMTPClientConnection] = cache.withLock { cache in
            var expired: [SMTPClientConnection] = []
            for (key, idle) in cache {
                var keep: [SMTPClientConnection] = []
                for connection in idle {
                    if connection.idleSince > cutoff && connection.isReusable {
                        keep.append(connection)
                    } else {
                        expired.append(connection)
                    }
                }
                cache[key] = keep.isEmpty ? nil : keep
            }
            return expired
        }
        await withTaskGroup(of: Void.self) { group in
            for connection in expired { group.addTask { await connection.quit() } }
        }
    }
}

/// At most `limit` deliveries at once per destination; the rest wait their turn in order.
final class DestinationLimiter: Sendable {
    private struct Destination {
        var active = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let limit: Int
    private let destinations = Mutex<[String: Destination]>([:])

    init(limit: Int) { self.limit = limit }

    func acquire(_ key: String) async {
        await withCheckedContinuation { continuation in
            let admitted = destinations.withLock { destinations in
                var destination = destinations[key] ?? Destination()
                defer { destinations[key] = destination }
                guard destination.active < limit else {
                    destination.waiting.append(continuation)
                    return false
                }
                destination.active += 1
                return true
            }
            if admitted { continuation.resume() }
        }
    }

    func release(_ key: String) {
        let next: CheckedContinuation<Void, Never>? = destinations.withLock { destinations in
            guard var destination = destinations[key] else { return nil }
            defer { destinations[key] = destination.active == 0 && destination.waiting.isEmpty ? nil : destination }
            if !destination.waiting.isEmpty { return destination.waiting.removeFirst() }
            destination.active -= 1
            return nil
        }
        next?.resume()
    }
}
