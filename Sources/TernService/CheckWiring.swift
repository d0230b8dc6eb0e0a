import DNSClient
import Foundation
import Logging
import MailPolicy
import NIOCore
import NIOPosix
import SMTPProtocol
import SMTPServer
import ServiceLifecycle

/// `[checks]`, `[[rules]]`, `[[dkim]]` and the rate limits of `[limits]`, made into the
/// services the SMTP sessions ask (SPEC §2.6).
struct CheckWiring {
    var services: CheckServices?
    /// Background work the checks need while the server runs (the greylist's saves).
    var background: [any Service] = []
}

extension TernConfiguration {
    /// Whether any check, rule or signing key is configured: without one, sessions run none
    /// of the check machinery (and pay nothing for it).
    var hasChecks: Bool {
        let checks = self.checks
        return !checks.dnsbl.isEmpty || !checks.dnswl.isEmpty || checks.spf != .off || checks.dkimVerify
            || checks.dmarc != .off || checks.greylisting != nil || checks.spamd != nil || checks.rspamd != nil
            || checks.milter != nil || checks.helo != .off || !rules.isEmpty || !dkim.isEmpty
            || limits.connectionRate != nil || limits.messageRate != nil || limits.recipientRate != nil
    }

    func checkWiring(resolver: any DNSClient.Resolver, threadPool: NIOThreadPool, logger: Logger) async throws
        -> CheckWiring
    {
        guard hasChecks else { return CheckWiring() }
        var services = CheckServices(
            policy: SessionPolicy.Configuration(
                hostname: hostname, rules: rules, rejectScore: Double(checks.rejectScore), spf: checks.spf,
                dmarc: checks.dmarc, helo: checks.helo),
            filterMaxSize: checks.filterMaxSize)
        var background: [any Service] = []

        let lists = try (checks.dnsbl + checks.dnswl).map { try DNSList(zone: $0.zone, weight: $0.weight) }
        if !lists.isEmpty {
            let check = DNSListCheck(lists: lists, resolver: resolver)
            services.dnsLists = { client in
                let outcome = await check.check(client: client)
                for failure in outcome.failures {
                    logger.warning(
                        "DNS list failed",
                        metadata: ["event": "dnsbl_error", "zone": "\(failure.zone)", "error": "\(failure.reason)"])
                }
                return DNSListFacts(
                    listedZones: Set(outcome.hits.map(\.zone)), score: Double(outcome.score),
                    detail: outcome.hits.map { "\($0.zone)=\($0.answers.map { "\($0)" }.joined(separator: "+"))" })
            }
        }

        // Every HELO is checked when anything can use the findings: the `helo` mode or a rule.
        let heloRules = rules.contains { $0.conditions.contains { if case .heloFinding = $0 { true } else { false } } }
        if checks.helo == .reject || heloRules {
            let ourNames = Set([hostname.lowercased()] + domains.map(\.name))
            let ourAddresses = Set(
                (listen.smtp + listen.submission + listen.submissions).compactMap { IPAddress($0.host) }
                    .filter { $0.bytes.contains { $0 != 0 } })  // not 0.0.0.0 or ::
            let lookUp = heloRules  // the DNS finding only matters to rules
            services.heloFindings = { helo, client in
                guard let client = client.flatMap({ IPAddress($0) }) else { return [] }
                let findings =
                    lookUp
                    ? await HELOCheck.findings(
                        helo: helo, client: client, ourNames: ourNames, ourAddresses: ourAddresses, resolver: resolver)
                    : HELOCheck.findings(helo: helo, client: client, ourNames: ourNames, ourAddresses: ourAddresses)
                return Set(findings.map(\.rawValue))
            }
        }

        if let delay = checks.greylisting {
            let greylist = try await Greylist.load(
                directory: "\(dataDirectory)/greylist", settings: Greylist.Settings(delay: delay),
                logger: logger.component("greylist"), threadPool: threadPool)
            background.append(TaskService { await greylist.run(threadPool: threadPool) })
            services.greylist = { client, sender, recipient in
                guard let address = IPAddress(client) else { return .pass }
                switch greylist.check(client: address, sender: sender, recipient: recipient) {
                case .pass: return .pass
                case .deferred(let retryAfter):
                    // RFC 6647 §2.1: a temporary failure the sender's retry will get past.
                    return .refuse(
                        SMTPReply(
                            451, EnhancedStatusCode(4, 7, 1),
                            "Greylisted: please try again in \(max(1, retryAfter.components.seconds)) seconds"))
                }
            }
        }

        if checks.spf != .off {
            let checker = SPFChecker(resolver: resolver)
            let receiver = hostname
            services.spf = { client, sender, helo in
                let verdict = await checker.check(client: client, sender: sender, helo: helo, receiver: receiver)
                let mailFrom = verdict.identity == .mailfrom
                return SPFFacts(
                    result: verdict.result.rawValue, property: mailFrom ? "mailfrom" : "helo",
                    value: mailFrom ? sender : helo, domain: verdict.domain,
                    explanation: verdict.explanation ?? verdict.problem,
                    receivedSPF: verdict.receivedSPFField().withoutFinalCRLF)
            }
        }

        var content = ContentChecks(
            spf: checks.spf != .off, dkimVerify: checks.dkimVerify, resolver: resolver, logger: logger)
        for signing in dkim {
            do {
                content.signing.append(
                    DKIMSigningIdentity(
                        domain: signing.domain, selector: signing.selector,
                        key: try DKIMKey(contentsOfFile: signing.privateKey)))
            } catch {
                throw TernServiceError.configuration(
                    "[[dkim]] \(signing.domain): cannot sign with \(signing.privateKey): \(error)")
            }
        }
        if checks.dmarc != .off {
            let list = try await threadPool.runIfActive { try PublicSuffixList() }
            content.dmarc = DMARCEvaluator(resolver: resolver, publicSuffixList: list)
        }
        content.hostname = hostname
        content.filterFailure = checks.filterFailure
        let timeouts = FilterTimeouts(
            connect: .seconds(min(10, max(1, checks.filterTimeout.components.seconds))),
            total: TimeAmount(checks.filterTimeout))
        if let spamd = checks.spamd {
            content.filters.append(SpamdFilter(endpoint: .tcp(host: spamd.host, port: spamd.port), timeouts: timeouts))
        }
        if let rspamd = checks.rspamd, let endpoint = FilterEndpoint(rspamd) {
            content.filters.append(RspamdFilter(endpoint: endpoint, timeouts: timeouts))
        }
        if let milter = checks.milter {
            content.filters.append(MilterFilter(endpoint: milter, timeouts: timeouts))
        }
        if content.filters.isEmpty { services.filterMaxSize = 0 }
        if content.isActive {
            let contentChecks = content
            let headerLimit = limits.maxHeaderSize
            services.content = { input in await contentChecks.run(input) }
            services.makeContentObserver = { inbound in
                contentChecks.makeObserver(inbound: inbound, headerLimit: headerLimit)
            }
        }

        /// One limiter per rate: each has its own window.
        func limiter(_ rate: RateLimit?, _ kind: RateLimitKind) -> RateLimiter? {
            guard let rate else { return nil }
            var limits = RateLimits(window: rate.window)
            switch kind {
            case .connections: limits.connections = rate.count
            case .messages: limits.messages = rate.count
            case .recipients: limits.recipients = rate.count
            case .concurrentConnections: limits.concurrentConnections = rate.count
            }
            return RateLimiter(limits: limits)
        }
        if let connections = limiter(limits.connectionRate, .connections) {
            services.admitConnection = { client in
                IPAddress(client).map { connections.admitConnection($0) == .admitted } ?? true
            }
        }
        if let messages = limiter(limits.messageRate, .messages) {
            services.admitMessage = { client in IPAddress(client).map { messages.admitMessage($0) == .admitted } ?? true
            }
        }
        if let recipients = limiter(limits.recipientRate, .recipients) {
            services.admitRecipient = { client in
                IPAddress(client).map { recipients.admitRecipients($0) == .admitted } ?? true
            }
        }
        return CheckWiring(services: services, background: background)
    }
}
