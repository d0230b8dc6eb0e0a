import MailPolicy
import NIOCore
import SMTPProtocol
import SMTPServer

/// The configuration's `[[domains]]` as the directory relay control and delivery consult. The
/// users of `[auth] passwd_file` in a local domain have mailboxes too (SPEC §1.2), as the file
/// says at the moment of asking.
struct ConfiguredDirectory: LocalRecipientDirectory {
    let configuration: TernConfiguration
    let users: UserDatabase?

    init(_ configuration: TernConfiguration, users: UserDatabase? = nil) {
        self.configuration = configuration
        self.users = users
    }

    var primaryDomain: String { configuration.domains.first?.name ?? configuration.hostname.lowercased() }

    func isLocalDomain(_ domain: String) -> Bool {
        configuration.localDomain(named: domain) != nil
    }

    func isMailbox(localPart: String, domain: String) -> Bool {
        guard let local = configuration.localDomain(named: domain) else { return false }
        return local.hasMailbox(localPart) || users?.contains("\(localPart)@\(local.name)") == true
    }

    /// RFC 5321 §4.5.1: every domain Tern serves has a postmaster. A domain without its own
    /// postmaster mailbox or alias hands it to the primary domain's.
    func resolve(localPart: String, domain: String) -> [String]? {
        if let targets = configuration.resolve(localPart: localPart, domain: domain) { return targets }
        if let local = configuration.localDomain(named: domain), users?.contains("\(localPart)@\(local.name)") == true {
            return ["\(localPart.lowercased())@\(local.name)"]
        }
        if localPart == "postmaster", isLocalDomain(domain), domain != primaryDomain {
            return configuration.resolve(localPart: "postmaster", domain: primaryDomain)
        }
        return nil
    }
}

extension TernConfiguration {
    /// The SMTP server's settings: listeners, limits and timeouts from the file.
    var smtpServerSettings: SMTPServerSettings {
        var listeners: [SMTPListener] = []
        listeners += listen.smtp.map { SMTPListener(kind: .smtp, host: $0.host, port: $0.port) }
        listeners += listen.submission.map { SMTPListener(kind: .submission, host: $0.host, port: $0.port) }
        listeners += listen.submissions.map { SMTPListener(kind: .submissions, host: $0.host, port: $0.port) }
        let smtpLimits = SMTPLimits(
            messageSize: limits.maxMessageSize, recipients: limits.maxRecipients, headerSize: limits.maxHeaderSize,
            receivedHeaders: limits.maxReceivedHeaders, errorsPerSession: limits.maxErrors)
        var settings = SMTPServerSettings(
            hostname: hostname, listeners: listeners, limits: smtpLimits,
            commandTimeout: TimeAmount(limits.commandTimeout), dataTimeout: TimeAmount(limits.dataTimeout),
            minimumDataRate: limits.minDataRate, minimumDataRateGrace: TimeAmount(limits.minDataRateGrace),
            maxConnections: limits.maxConnections,
            maxConnectionsPerIP: limits.maxConnectionsPerIP, trustedNetworks: relay.trustedNetworks)
        settings.authFailuresPerSession = auth.maxFailuresPerSession
        settings.greetPause = checks.greetPause.map(TimeAmount.init)
        return settings
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
