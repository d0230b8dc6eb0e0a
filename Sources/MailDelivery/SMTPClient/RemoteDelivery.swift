import DNSClient
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
    /// What the server's certificate was worth under TLS: `verified`, `verified (DANE-EE)`,
    /// `untrusted (certificate has expired)` (Postfix's "Verified/Untrusted TLS connection").
    public var tlsCertificate: String?
    /// The TLS policy the transfer ran under: `may`, `mta-sts`, `dane`, `policy:verify` ….
    public var tlsPolicy: String?
    /// What an MTA-STS policy in testing mode would have refused (RFC 8461 §5): the message
    /// went anyway, and the log says why it would not have.
    public var tlsPolicyFailure: String?
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
    /// The header says `TLS-Required: No` (RFC 8689 §5): TLS policy failures are ignored, unless
    /// the envelope asks for REQUIRETLS, which wins (§3).
    public var tlsOptional: Bool
    /// Reads the header to learn `tlsOptional`, asked only when a TLS policy could be enforced
    /// for this delivery: most deliveries are opportunistic either way and need not read it.
    public var readsTLSOptional: (@Sendable () async -> Bool)?

    public init(
        envelope: SMTPClientSession.Envelope, content: @escaping @Sendable () async throws -> MessageContentReader,
        tlsOptional: Bool = false, readsTLSOptional: (@Sendable () async -> Bool)? = nil
    ) {
        self.envelope = envelope
        self.content = content
        self.tlsOptional = tlsOptional
        self.readsTLSOptional = readsTLSOptional
    }

    /// What the message asks of TLS.
    public var tlsDemand: MessageTLSDemand {
        envelope.requireTLS ? .requireTLS : tlsOptional ? .optional : .policy
    }
}

/// Outbound TLS beyond opportunistic STARTTLS (SPEC §2.5): `[tls_policy]`, DANE, MTA-STS.
public struct OutboundTLSSettings: Sendable {
    /// `[tls_policy]`: a domain (`example.com`) or, with a leading dot, its subdomains
    /// (`.example.com`) → the level its mail gets. Keys in lower case.
    public var policies: [String: TLSSecurityLevel]
    /// `[dane] enabled`: look up TLSA records where the DNS answers are DNSSEC-validated.
    public var dane: Bool
    /// The certificate checks; nil loads the system bundle alone.
    public var verifier: CertificateVerifier?

    public init(policies: [String: TLSSecurityLevel] = [:], dane: Bool = true, verifier: CertificateVerifier? = nil) {
        self.policies = policies
        self.dane = dane
        self.verifier = verifier
    }

    /// The configured level for a destination: its own entry, else that of the nearest parent
    /// written with a leading dot.
    public func level(for destination: String) -> TLSSecurityLevel? {
        var name = destination.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        if let level = policies[name] { return level }
        var rest = Substring(name)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[dot...]
            if let level = policies[String(rest)] { return level }
            rest = rest.dropFirst()
        }
        return nil
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
        public var tls: OutboundTLSSettings

        public init(
            heloName: String, timeouts: SMTPClientTimeouts = SMTPClientTimeouts(), startTLS: Bool = true,
            destinationConcurrency: Int = 20, connectionCacheTime: TimeAmount = .seconds(5),
            recipientsPerTransaction: Int = 100, addressLimit: Int = 10,
            tls: OutboundTLSSettings = OutboundTLSSettings()
        ) {
            self.tls = tls
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
    /// For TLS that is required: TLS 1.2 at least (RFC 8996 retired 1.0 and 1.1).
    private let requiredTLSContext: NIOSSLContext?
    private let logger: Logger
    private let cache = Mutex<[String: [SMTPClientConnection]]>([:])
    private let limiter: DestinationLimiter
    /// Addresses whose TLS handshake failed lately: tried in plaintext for a while.
    private let plaintextOnly = Mutex<[String: NIODeadline]>([:])
    private let verifier: CertificateVerifier
    private let mtaSTS: MTASTSPolicyStore?
    private let tlsResults: (any TLSResultRecorder)?

    /// `mtaSTS` is nil when MTA-STS is off, `tlsResults` when TLS-RPT is.
    public init(
        settings: Settings, router: MXRouter, group: any EventLoopGroup, logger: Logger,
        mtaSTS: MTASTSPolicyStore? = nil, tlsResults: (any TLSResultRecorder)? = nil
    ) {
        self.tlsResults = tlsResults
        self.settings = settings
        self.router = router
        self.group = group
        self.logger = logger
        self.mtaSTS = mtaSTS
        self.limiter = DestinationLimiter(limit: settings.destinationConcurrency)
        self.verifier =
            settings.tls.verifier
            ?? CertificateVerifier(anchors: (try? TrustAnchors.load(extraFile: nil)) ?? TrustAnchors([]))
        // The context of every STARTTLS: BoringSSL's own verification is replaced by each
        // connection's `PeerCertificateCheck`, which records the verdict and refuses a bad
        // certificate only where the policy demands a good one (RFC 7435: opportunistic TLS takes
        // any). TLS 1.0 stays allowed for old exchangers: it still beats plaintext.
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv1
        self.tlsContext = try? NIOSSLContext(configuration: configuration)
        configuration.minimumTLSVersion = .tlsv12
        self.requiredTLSContext = try? NIOSSLContext(configuration: configuration)
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
        let policy = await tlsPolicy(for: message, domain: domain, route: route)
        let tlsResults = await reportRecorder(for: message, policy: policy)
        if let tlsResults, policy.mtaSTS == nil, policy.configured == nil, let mtaSTS,
            let failure = await mtaSTS.lookupFailure(for: MXRouter.normalized(domain))
        {
            // RFC 8460 §4.3.2.2: the domain announces a policy Tern could not get.
            let name = MXRouter.normalized(domain)
            tlsResults.record(
                TLSSessionResult(
                    domain: name, policy: TLSRPTPolicy(type: .sts, domain: name), failure: failure.type,
                    reason: failure.reason))
        }
        await limiter.acquire(key)
        defer { limiter.release(key) }
        var outcomes: [DeliveryOutcome] = []
        let chunk = settings.recipientsPerTransaction
        for start in stride(from: 0, to: message.envelope.recipients.count, by: chunk) {
            var part = message
            part.envelope.recipients = Array(
                message.envelope.recipients[start..<min(start + chunk, part.envelope.recipients.count)])
            outcomes += await deliver(part, route: route, policy: policy, tlsResults: tlsResults)
        }
        return outcomes
    }

    /// Where this delivery's TLS results go (RFC 8460): nowhere through a relayhost, nor for a
    /// message that is not bound by TLS policy because its header says `TLS-Required: No` —
    /// among them Tern's own reports, which must not feed the next report (§3). The header is
    /// read here only when results are recorded at all.
    private func reportRecorder(
        for message: OutboundMessage, policy: TLSPolicyDecision
    ) async -> (any TLSResultRecorder)? {
        guard let tlsResults, router.relayhost == nil, policy.demand != .optional else { return nil }
        if policy.demand == .policy, let reads = message.readsTLSOptional, await reads() { return nil }
        return tlsResults
    }

    /// The TLS policy of this delivery: `[tls_policy]` for the next hop (the relayhost, or the
    /// domain), the message's own demand, and the domain's MTA-STS policy where nothing
    /// configured overrides it. MTA-STS is about a domain's own MX hosts, so not for a
    /// relayhost or an address literal.
    private func tlsPolicy(for message: OutboundMessage, domain: String, route: Route) async -> TLSPolicyDecision {
        let nextHop = router.relayhost?.host ?? domain
        let configured = settings.tls.level(for: nextHop)
        var decision = TLSPolicyDecision(
            configured: configured, defaultLevel: settings.startTLS ? .may : .none, demand: message.tlsDemand,
            mxAuthenticated: route.mxAuthenticated, domain: domain)
        if let mtaSTS, configured == nil, decision.demand != .optional, router.relayhost == nil,
            !domain.hasPrefix("[")
        {
            decision.mtaSTS = await mtaSTS.policy(for: MXRouter.normalized(domain))
        }
        // `TLS-Required: No` only matters where something could be enforced: a stricter
        // `[tls_policy]`, an MTA-STS policy, or DANE on a DNSSEC-validated route.
        let enforceable =
            (configured.map { [.encrypt, .verify, .dane].contains($0) } ?? false) || decision.mtaSTS != nil
            || (settings.tls.dane && route.mxAuthenticated)
        if decision.demand == .policy, enforceable, let reads = message.readsTLSOptional, await reads() {
            decision.demand = .optional
        }
        return decision
    }

    /// The TLSA records of an exchanger, where DANE may use them (RFC 7672 §2.2): only when its
    /// MX and address answers were DNSSEC-validated; an answer without the AD bit counts as none.
    private func tlsa(for host: RouteHost, port: Int, policy: TLSPolicyDecision, route: Route) async -> TLSALookup {
        guard settings.tls.dane || policy.configured == .dane, policy.looksUpTLSA, route.mxAuthenticated,
            host.addressesAuthenticated, MXRouter.address(host.name) == nil
        else { return .insecure }
        do throws(DNSError) {
            let answer = try await router.resolver.tlsa(DANE.tlsaName(host: host.name, port: port))
            return answer.authenticated ? .records(answer.value) : .none
        } catch .nameNotFound, .noData, .invalidInput {
            return .none
        } catch {
            return .failed(error.description)
        }
    }

    /// Every exchanger and address in turn, until each recipient is decided (RFC 5321 §5.1).
    private func deliver(
        _ message: OutboundMessage, route: Route, policy: TLSPolicyDecision, tlsResults: (any TLSResultRecorder)?
    ) async -> [DeliveryOutcome] {
        var outcomes = [DeliveryOutcome?](repeating: nil, count: message.envelope.recipients.count)
        var lastProblem = route.problems.last ?? "no exchanger could be reached"
        var lastReply: SMTPReply?
        var tried = 0
        hosts: for host in route.hosts {
            guard tried < settings.addressLimit else { break hosts }
            let requirement: TLSRequirement
            let tlsa = await tlsa(for: host, port: route.port, policy: policy, route: route)
            let reportDomain = MXRouter.normalized(policy.domain)
            switch policy.decide(host: host.name, tlsa: tlsa) {
            case .connect(let decided):
                requirement = decided
            case .skip(let reason, let status, let permanent):
                if let tlsResults,
                    let result = TLSResultMapping.skipped(
                        host: host.name, status: status, decision: policy, tlsa: tlsa, domain: reportDomain)
                {
                    tlsResults.record(result)
                }
                lastProblem = reason
                lastReply = SMTPReply(permanent ? 550 : 450, Self.statusCode(status), reason)
                logger.info(
                    "host skipped", metadata: ["event": "host_failed", "relay": "\(host.name)", "reason": "\(reason)"])
                continue
            }
            let reportPolicy =
                router.relayhost == nil
                ? TLSResultMapping.policy(requirement: requirement, decision: policy, tlsa: tlsa, domain: reportDomain)
                : nil
            // One TLS-RPT session result for this exchanger (RFC 8460 §4.3).
            func report(_ failure: TLSRPTResultType?, localIP: String?, address: String, reason: String? = nil) {
                guard let tlsResults, let reportPolicy else { return }
                tlsResults.record(
                    TLSSessionResult(
                        domain: reportDomain, policy: reportPolicy, failure: failure, sendingIP: localIP,
                        mxHost: host.name, receivingIP: address, reason: reason))
            }
            for address in host.addresses {
                guard tried < settings.addressLimit else { break hosts }
                tried += 1
                let open = outcomes.indices.filter { outcomes[$0] == nil }
                guard !open.isEmpty else { break hosts }
                guard let socketAddress = try? SocketAddress(ipAddress: address.description, port: route.port) else {
                    continue
                }
                let client: SMTPClientConnection
                let opened = await connection(to: socketAddress, hostName: host.name, requirement: requirement) {
                    failure in
                    // The handshake of opportunistic TLS failed; a plaintext attempt follows.
                    report(
                        TLSResultMapping.failure(
                            requirement: requirement, tlsEstablished: false, startTLSMissing: false,
                            verdict: failure.verdict), localIP: failure.localIP, address: address.description)
                }
                switch opened {
                case .success(let opened):
                    client = opened
                    // A new session, not one from the cache, that tried STARTTLS.
                    if opened.transactions == 0, opened.triesTLS {
                        report(
                            TLSResultMapping.failure(
                                requirement: requirement, tlsEstablished: opened.tls != nil,
                                startTLSMissing: opened.tls == nil, verdict: opened.certificate),
                            localIP: opened.localIP, address: address.description)
                    }
                case .failure(let failure):
                    if failure.tlsFailed || failure.startTLSMissing {
                        report(
                            TLSResultMapping.failure(
                                requirement: requirement, tlsEstablished: false,
                                startTLSMissing: failure.startTLSMissing, verdict: failure.verdict),
                            localIP: failure.localIP, address: address.description)
                    }
                    lastProblem = failure.description
                    lastReply = failure.reply
                    logger.info(
                        "host failed",
                        metadata: ["event": "host_failed", "relay": "\(host.name)", "reason": "\(failure.description)"])
                    continue
                }
                let relay = client.connection.peer
                if requirement.requireTLS, !client.offersRequireTLS {
                    // RFC 8689 §4.2.1: not to a server that would not keep the requirement; the
                    // next exchanger may.
                    lastProblem = "host \(relay) does not offer REQUIRETLS"
                    lastReply = SMTPReply(550, EnhancedStatusCode(5, 7, 30), "REQUIRETLS support required")
                    logger.info(
                        "host failed",
                        metadata: ["event": "host_failed", "relay": "\(host.name)", "reason": "\(lastProblem)"])
                    checkIn(client, key: Self.cacheKey(socketAddress, host.name, requirement))
                    continue
                }
                var envelope = message.envelope
                envelope.recipients = open.map { message.envelope.recipients[$0] }
                envelope.requireTLS = requirement.requireTLS
                let result = await client.run(envelope, content: message.content)
                let testingFailure = Self.testingFailure(requirement, client)
                for (position, index) in open.enumerated() {
                    if let reply = result.replies[position] {
                        var outcome = DeliveryOutcome.from(reply, host: host.name, relay: relay)
                        outcome.tls = client.tls
                        outcome.tlsCertificate = client.certificate?.description
                        outcome.tlsPolicy = requirement.source
                        outcome.tlsPolicyFailure = testingFailure
                        outcome.dsnPassedOn = client.offersDSN
                        outcomes[index] = outcome
                    }
                }
                if let failure = result.failure {
                    lastProblem = "host \(relay) \(failure)"
                    lastReply = failure.reply
                } else {
                    checkIn(client, key: Self.cacheKey(socketAddress, host.name, requirement))
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

    /// What MTA-STS in enforce mode would have refused about this transfer, for the log.
    private static func testingFailure(_ requirement: TLSRequirement, _ client: SMTPClientConnection) -> String? {
        guard requirement.mtaSTSTesting else { return nil }
        var problems: [String] = []
        if !requirement.mxMatched { problems.append("MX host not in the policy") }
        if client.tls == nil {
            problems.append("no TLS")
        } else if let certificate = client.certificate, !certificate.isVerified {
            problems.append("certificate \(certificate)")
        }
        return problems.isEmpty ? nil : "MTA-STS testing: " + problems.joined(separator: ", ")
    }

    /// "4.7.5" as a status code.
    private static func statusCode(_ text: String) -> EnhancedStatusCode {
        let parts = text.split(separator: ".").compactMap { Int($0) }
        guard parts.count == 3 else { return EnhancedStatusCode(4, 0, 0) }
        return EnhancedStatusCode(parts[0], parts[1], parts[2])
    }

    private static func cacheKey(_ address: SocketAddress, _ hostName: String, _ requirement: TLSRequirement) -> String
    {
        "\(address)|\(hostName)|\(requirement.cacheKey)"
    }

    /// An idle cached session to this address, else a new one. When TLS is optional, a failed
    /// handshake is retried once in plaintext, as opportunistic TLS allows (RFC 7435 §3), and
    /// the address gets plaintext for an hour; when it is required, never.
    private func connection(
        to address: SocketAddress, hostName: String, requirement: TLSRequirement,
        fallingBack: (SMTPClientConnection.OpenFailure) -> Void
    ) async -> Result<SMTPClientConnection, SMTPClientConnection.OpenFailure> {
        let key = Self.cacheKey(address, hostName, requirement)
        if let cached = checkOut(key) { return .success(cached) }
        let configuration = SMTPClientSession.Configuration(
            heloName: settings.heloName, startTLS: requirement.level != .none)
        let plaintextKey = address.description
        let plaintext =
            !requirement.isMandatory
            && plaintextOnly.withLock { entries in
                if let until = entries[plaintextKey], until > .now() { return true }
                entries[plaintextKey] = nil
                return false
            }
        let check = PeerCertificateCheck(verifier: verifier, hostName: hostName, requirement: requirement)
        let result = await SMTPClientConnection.open(
            to: address, hostName: hostName, group: group, configuration: configuration, timeouts: settings.timeouts,
            tlsContext: plaintext ? nil : requirement.isMandatory ? requiredTLSContext : tlsContext,
            requirement: requirement, check: check)
        guard case .failure(let failure) = result, failure.tlsFailed, !plaintext, !requirement.isMandatory else {
            return result
        }
        fallingBack(failure)
        logger.info(
            "TLS failed, trying plaintext",
            metadata: [
                "event": "tls_failed", "relay": "\(hostName)[\(address.ipAddress ?? "")]",
                "reason": "\(failure.description)",
            ])
        plaintextOnly.withLock { $0[plaintextKey] = .now() + .hours(1) }
        return await SMTPClientConnection.open(
            to: address, hostName: hostName, group: group, configuration: configuration, timeouts: settings.timeouts,
            tlsContext: nil, requirement: requirement, check: nil)
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
