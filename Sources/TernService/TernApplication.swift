import DNSClient
import Foundation
import Logging
import MailDelivery
import MailPolicy
import MailQueue
import NIOCore
import NIOPosix
import SMTPServer
import ServiceLifecycle
import UnixSignals

/// Tern's main job, `tern serve`: opens the queue, then runs delivery, the control socket and
/// the SMTP listeners as services. SIGTERM/SIGINT shut them down in reverse order: the
/// listeners first (open sessions get `421 4.3.2`, messages being committed finish), then the
/// control socket and delivery; the queue closes last, after its final group commit.
public enum TernApplication {
    public static func serve(
        _ configuration: TernConfiguration, logger: Logger,
        onBound: @escaping @Sendable ([SMTPListener]) -> Void = { _ in }
    ) async throws {
        let dataDirectory = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let queue = try QueueStore.open(
            directory: "\(dataDirectory)/queue", logger: logger.component("queue"))
        defer { queue.close() }

        let users = configuration.userDatabase(logger: logger.component("auth"))
        let directory = ConfiguredDirectory(configuration, users: users)
        let policy = RecipientPolicy(directory: directory)
        let senderPolicy = SenderPolicy(
            directory: directory, restrictAuthenticatedSenders: configuration.auth.restrictSenders,
            extraSenders: configuration.auth.senders)
        let tls = try configuration.tls.map { tls in
            do {
                return try ServerTLS(certificatePath: tls.certificate, privateKeyPath: tls.privateKey)
            } catch {
                throw TernServiceError.tls(
                    "cannot use [tls] certificate \(tls.certificate) and key \(tls.privateKey): \(error)")
            }
        }
        let threadPool = NIOThreadPool(numberOfThreads: 4)
        threadPool.start()
        let authentication = users.map { users in
            SMTPAuthentication(
                users: users,
                throttle: AuthenticationThrottle(
                    limits: .init(
                        perAddress: configuration.auth.maxFailuresPerIP, perUser: configuration.auth.maxFailuresPerUser,
                        window: Int(configuration.auth.failureWindow.components.seconds))),
                threadPool: threadPool)
        }

        // `[dns] servers`, else /etc/resolv.conf. Each query is bounded (2 s × 2 attempts), and
        // the reverse lookup of a client as a whole by ReverseName's own limit. Answers and
        // permanent "no"s are cached for their TTL (DNSCache); failures never are.
        let servers = configuration.dns.servers?.map { "[\($0.host)]:\($0.port)" } ?? StubResolver.systemServers()
        let resolver = try StubResolver(servers: servers, timeout: .seconds(2), attempts: 2, cache: DNSCache())
        let deliveryLogger = logger.component("delivery")
        let reporting = configuration.outboundTLS.tlsReporting
        let tlsResults =
            reporting.enabled
            ? TLSReportStore(
                directory: "\(dataDirectory)/tls-rpt", period: Int(reporting.period.components.seconds),
                logger: logger.component("tls-rpt"))
            : nil
        let deliverySettings = configuration.deliverySettings(dataDirectory: dataDirectory)
        let scheduler = DeliveryScheduler(
            settings: deliverySettings, queue: queue, directory: directory,
            transport: try configuration.remoteDelivery(
                resolver: resolver, logger: deliveryLogger, tlsResults: tlsResults),
            threadPool: threadPool, logger: deliveryLogger)
        let reporter = try tlsResults.map { store in
            TLSReporter(
                settings: TLSReporter.Settings(
                    organization: reporting.organization ?? configuration.hostname,
                    contact: reporting.contact ?? deliverySettings.postmaster, submitter: configuration.hostname,
                    from: "noreply-tls-reports@\(configuration.hostname)"),
                store: store, resolver: resolver,
                uploader: try TLSReportUploader(
                    resolver: resolver, group: MultiThreadedEventLoopGroup.singleton, defaultPort: reporting.httpsPort,
                    timeout: TimeAmount(reporting.uploadTimeout), extraTrustFile: configuration.outboundTLS.caFile),
                scheduler: scheduler, logger: logger.component("tls-rpt"))
        }

        let checks = try await configuration.checkWiring(
            resolver: resolver, threadPool: threadPool, logger: logger.component("checks"))
        let server = SMTPServer(
            settings: configuration.smtpServerSettings, policy: policy, senderPolicy: senderPolicy, tls: tls,
            authentication: authentication, checks: checks.services, queue: queue,
            reverseLookup: { address in await ReverseName.confirmed(for: address, resolver: resolver) },
            immediateReverseName: { address in ReverseName.fromHosts(address) },
            onQueued: { scheduler.submit($0.id) }, logger: logger.component("smtpd"))

        let controlPath = ControlSocket.path(dataDirectory: dataDirectory)
        let hostname = configuration.hostname
        let maxMessageSize = configuration.limits.maxMessageSize
        var services: [any Service] = [
            TaskService { await scheduler.run() },
            TaskService {
                try await ControlSocket.serve(
                    path: controlPath, queue: queue, scheduler: scheduler, policy: policy, hostname: hostname,
                    maxMessageSize: maxMessageSize, logger: logger.component("control"))
            },
            TaskService { try await server.run(onBound: onBound) },
            TaskService {
                await reloadOnHangup(tls: tls, users: users, logger: logger.component("service"))
            },
        ]
        // Before the listeners in the list, so that they stop first and the last save follows.
        services.insert(contentsOf: checks.background, at: 1)
        if let reporter {
            // After delivery in the list, so that it stops first and its last save is before the
            // queue closes.
            services.insert(TaskService { await reporter.run() }, at: 1)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [], logger: logger.component("service")))
        logger.info(
            "starting", metadata: ["event": "start", "hostname": "\(hostname)", "data_dir": "\(dataDirectory)"])
        do {
            try await group.run()
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        try? await threadPool.shutdownGracefully()
        logger.info("stopped", metadata: ["event": "stop"])
    }
}

/// SIGHUP: read the certificate, its key and the users again (SPEC §2.5). Open sessions keep
/// the TLS context they began with; a certificate that does not load leaves the old one in use.
private func reloadOnHangup(tls: ServerTLS?, users: UserDatabase?, logger: Logger) async {
    for await _ in await UnixSignalsSequence(trapping: .sighup) {
        users?.refresh()
        guard let tls else {
            logger.info("reloaded", metadata: ["event": "reload"])
            continue
        }
        do {
            try tls.reload()
            logger.info(
                "TLS certificate reloaded", metadata: ["event": "reload", "certificate": "\(tls.certificatePath)"])
        } catch {
            logger.error(
                "TLS certificate reload failed; the previous one stays in use",
                metadata: ["event": "reload", "certificate": "\(tls.certificatePath)", "error": "\(error)"])
        }
    }
}

/// A service that is its body, cancelled on graceful shutdown.
struct TaskService: Service {
    let body: @Sendable () async throws -> Void

    init(_ body: @escaping @Sendable () async throws -> Void) {
        self.body = body
    }

    /// Being cancelled is how a graceful shutdown reaches the body: it is a clean end, not an
    /// error that would make the service group fail and `tern serve` exit non-zero.
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await body()
            }
        } catch is CancellationError {
        }
    }
}

public enum TernServiceError: Error, CustomStringConvertible {
    case tls(String)
    /// A configured file cannot serve (a DKIM key, say).
    case configuration(String)

    public var description: String {
        switch self {
        case .tls(let message), .configuration(let message): message
        }
    }
}

extension TernConfiguration {
    /// The users of `[auth] passwd_file`, nil without one. Lines it cannot use are logged
    /// (number and reason only).
    func userDatabase(logger: Logger) -> UserDatabase? {
        auth.passwdFile.map { path in
            UserDatabase(path: path) { problem in logger.warning("\(problem)", metadata: ["event": "passwd_file"]) }
        }
    }

    var clientTimeouts: SMTPClientTimeouts {
        SMTPClientTimeouts(
            connect: TimeAmount(delivery.connectTimeout), command: TimeAmount(delivery.commandTimeout),
            dataEnd: TimeAmount(delivery.dataTimeout))
    }

    func deliverySettings(dataDirectory: String) -> DeliveryScheduler.Settings {
        var lmtp: LMTPDelivery?
        switch delivery.local {
        case .maildir: break
        case .lmtpUnix(let path):
            lmtp = LMTPDelivery(
                target: .unix(path: path), heloName: hostname, group: MultiThreadedEventLoopGroup.singleton,
                timeouts: clientTimeouts)
        case .lmtpTCP(let address):
            lmtp = LMTPDelivery(
                target: .tcp(host: address.host, port: address.port), heloName: hostname,
                group: MultiThreadedEventLoopGroup.singleton, timeouts: clientTimeouts)
        }
        return DeliveryScheduler.Settings(
            hostname: hostname, mailRoot: "\(dataDirectory)/mail", retry: delivery.retry,
            maxQueueTime: delivery.maxQueueTime, delayWarning: delivery.delayWarning,
            postmaster: delivery.postmaster ?? "postmaster@\(domains.first?.name ?? hostname)", lmtp: lmtp,
            concurrency: delivery.concurrency)
    }

    /// SMTP to other domains: MX routing (or the relayhost) on `remote_port`. This host is
    /// known by its hostname and by the addresses it listens on at that port. Certificates are
    /// checked against the system's roots and `tls_ca_file`, loaded once here; MTA-STS policies
    /// are cached under `<data_dir>/mta-sts`.
    func remoteDelivery(
        resolver: any DNSClient.Resolver, logger: Logger, tlsResults: (any TLSResultRecorder)? = nil
    ) throws -> RemoteDelivery {
        let listening = listen.smtp + listen.submission + listen.submissions
        let router = MXRouter(
            resolver: resolver, port: delivery.remotePort, relayhost: delivery.relayhost,
            localNames: [hostname],
            localAddresses: Set(listening.filter { $0.port == delivery.remotePort }.map(\.host)))
        let anchors = try TrustAnchors.load(extraFile: outboundTLS.caFile)
        if anchors.count == 0 {
            logger.warning(
                "no trust anchors: every server certificate will be untrusted",
                metadata: ["event": "error", "file": "\(TrustAnchors.systemBundle)"])
        }
        var mtaSTS: MTASTSPolicyStore?
        if outboundTLS.mtaSTS {
            let fetcher = try MTASTSFetcher(
                resolver: resolver, group: MultiThreadedEventLoopGroup.singleton, port: outboundTLS.mtaSTSPort,
                timeout: TimeAmount(outboundTLS.mtaSTSFetchTimeout), extraTrustFile: outboundTLS.caFile)
            mtaSTS = MTASTSPolicyStore(
                resolver: resolver,
                fetch: { domain async throws(TLSPolicyError) in try await fetcher.fetch(domain: domain) },
                directory: "\(dataDirectory)/mta-sts", logger: logger)
        }
        return RemoteDelivery(
            settings: RemoteDelivery.Settings(
                heloName: hostname, timeouts: clientTimeouts, startTLS: delivery.startTLS,
                destinationConcurrency: delivery.destinationConcurrency,
                tls: OutboundTLSSettings(
                    policies: outboundTLS.policies, dane: outboundTLS.dane,
                    verifier: CertificateVerifier(anchors: anchors))),
            router: router, group: MultiThreadedEventLoopGroup.singleton, logger: logger, mtaSTS: mtaSTS,
            tlsResults: tlsResults)
    }
}

extension Logger {
    /// The same logger, its lines marked `component=name` (smtpd, queue, delivery …).
    func component(_ name: String) -> Logger {
        var logger = self
        logger[metadataKey: "component"] = "\(name)"
        return logger
    }
}
