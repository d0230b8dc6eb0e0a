import MailDelivery
import MailPolicy

/// Everything `tern.toml` says (SPEC §1.2), checked and with every default filled in.
/// Paths are absolute: relative ones were resolved against the configuration file's folder.
///
/// The defaults live here, one place each, as the initial values of the section structs;
/// `docs/configuration.md` lists them with their meaning.
public struct TernConfiguration: Sendable, Hashable {
    /// Banner, EHLO, `Received:`, `Message-ID:` and the bounce sender. Default: this machine's
    /// name (`MachineHostName.current()`).
    public var hostname: String
    /// Queue and state; Maildirs live under `<dataDirectory>/mail`.
    public var dataDirectory: String
    public var listen = Listen()
    public var limits = Limits()
    public var relay = Relay()
    /// `[tls]`; nil when the section is absent (no STARTTLS, no `submissions`).
    public var tls: TLS?
    public var auth = Auth()
    /// `[[domains]]`: the domains Tern is final destination for, names in lower case.
    public var domains: [LocalDomain] = []
    public var delivery = Delivery()
    /// `[tls_policy]`, `[mta_sts]`, `[dane]`, `[delivery] tls_ca_file`: see OutboundTLSConfiguration.swift.
    public var outboundTLS = OutboundTLS()
    public var dns = DNS()
    public var checks = Checks()
    /// `[[dkim]]`: the keys Tern signs with.
    public var dkim: [DKIMSigningKey] = []
    /// `[[rules]]`: checked in order at the stage each can be decided (SPEC §2.6).
    public var rules: [Rule] = []

    public init(hostname: String, dataDirectory: String) {
        self.hostname = hostname
        self.dataDirectory = dataDirectory
    }

    /// `[listen]`: where Tern accepts connections.
    public struct Listen: Sendable, Hashable {
        /// Inbound MX (RFC 5321): no AUTH; STARTTLS when `[tls]` is set.
        public var smtp: [ServiceAddress] = []
        /// Message submission (RFC 6409): STARTTLS, then AUTH before MAIL.
        public var submission: [ServiceAddress] = []
        /// Submission over implicit TLS (RFC 8314).
        public var submissions: [ServiceAddress] = []
        /// The admin HTTP API and `/metrics`; nil = off.
        public var admin: ServiceAddress?

        public init() {}
    }

    /// `[limits]`: what one client may ask of the server (SPEC §2.1).
    public struct Limits: Sendable, Hashable {
        /// Octets; advertised as SIZE (RFC 1870); larger → `552 5.3.4`.
        public var maxMessageSize = 26_214_400
        /// Per transaction; RFC 5321 §4.5.3.1.8 asks for at least 100; more → `452 4.5.3`.
        public var maxRecipients = 100
        public var maxConnections = 10_000
        public var maxConnectionsPerIP = 50
        /// Waiting for a command (RFC 5321 §4.5.3.2.7 asks for at least 5 minutes).
        public var commandTimeout: Duration = .seconds(5 * 60)
        /// Waiting for the next chunk of DATA (RFC 5321 §4.5.3.2.6: 3 minutes at least).
        public var dataTimeout: Duration = .seconds(10 * 60)
        /// All header lines of one message together, octets (Postfix's header_size_limit).
        public var maxHeaderSize = 102_400
        /// More `Received:` lines than this is a mail loop (RFC 5321 §6.3): bounced.
        public var maxReceivedHeaders = 100
        /// Errors in one session before it is closed with 421 (Postfix's smtpd_hard_error_limit).
        public var maxErrors = 20
        /// Octets per second DATA/BDAT must average; 0 = no minimum.
        public var minDataRate = 0
        /// How far into the content the rate is first judged.
        public var minDataRateGrace: Duration = .seconds(30)
        /// Per client (an IPv4 address, an IPv6 /64), clients in `trusted_networks` and
        /// authenticated sessions excepted: new connections, messages and recipients in a window
        /// (Postfix's anvil rates). nil = unlimited.
        public var connectionRate: RateLimit?
        public var messageRate: RateLimit?
        public var recipientRate: RateLimit?

        public init() {}
    }

    /// `[relay]`.
    public struct Relay: Sendable, Hashable {
        /// Clients that may relay without AUTH (SPEC §2.4).
        public var trustedNetworks: [NetworkRange] = []

        public init() {}
    }

    /// `[tls]`: the server's certificate (PEM chain) and key; absolute paths.
    public struct TLS: Sendable, Hashable {
        public var certificate: String
        public var privateKey: String

        public init(certificate: String, privateKey: String) {
            self.certificate = certificate
            self.privateKey = privateKey
        }
    }

    /// `[auth]`: SMTP AUTH on the submission ports (SPEC §2.4).
    public struct Auth: Sendable, Hashable {
        /// Dovecot passwd-file (`user@domain:{SCHEME}hash`); nil = no AUTH.
        public var passwdFile: String?
        /// Failed logins from one client address within `failureWindow` before it is shut out.
        public var maxFailuresPerIP = 10
        /// Failed logins for one user name within `failureWindow` before it is shut out.
        public var maxFailuresPerUser = 20
        public var failureWindow: Duration = .seconds(900)
        /// Failed attempts in one session before it ends with 421.
        public var maxFailuresPerSession = 3
        /// An authenticated user may only use their own addresses as envelope sender.
        public var restrictSenders = true
        /// `[auth.senders]`: login → further addresses (or `@domain`) it may send as.
        public var senders: [String: [String]] = [:]

        public init(passwdFile: String? = nil) {
            self.passwdFile = passwdFile
        }
    }

    /// `[delivery]`.
    public struct Delivery: Sendable, Hashable {
        public var local: LocalDelivery = .maildir
        /// The port used to reach MX hosts (RFC 5321 §4.5.4: 25; tests set another).
        public var remotePort = 25
        /// A smarthost that receives all outbound mail instead of MX routing; nil = MX routing.
        public var relayhost: Relayhost?
        /// The delay before attempt n+1; the last value repeats. Never empty.
        public var retry: [Duration] = [
            .seconds(60), .seconds(300), .seconds(900), .seconds(1800),
            .seconds(3600), .seconds(7200), .seconds(14400),
        ]
        /// Undeliverable for this long → bounced (RFC 5321 §4.5.4.1: 4–5 days).
        public var maxQueueTime: Duration = .seconds(5 * 86400)
        /// A delay warning is sent once after this long; nil = never.
        public var delayWarning: Duration? = .seconds(4 * 3600)
        /// TCP connect to an exchanger or LMTP server.
        public var connectTimeout: Duration = .seconds(30)
        /// Each reply before the end of data, and each write of content (RFC 5321 §4.5.3.2).
        public var commandTimeout: Duration = .seconds(300)
        /// The reply after the end of data (RFC 5321 §4.5.3.2.6: 10 minutes).
        public var dataTimeout: Duration = .seconds(600)
        /// Connections at once to one destination domain (or the relayhost).
        public var destinationConcurrency = 20
        /// Messages in delivery at once.
        public var concurrency = 64
        /// Opportunistic STARTTLS to servers that offer it.
        public var startTLS = true
        /// Where a failed notice from the null sender is reported once; nil = `postmaster@`
        /// the first `[[domains]]` name (or the hostname without domains).
        public var postmaster: String?

        public init() {}
    }

    /// `[dns]`.
    public struct DNS: Sendable, Hashable {
        /// Recursive resolvers to ask; nil = the nameservers of `/etc/resolv.conf`.
        public var servers: [ServiceAddress]?

        public init(servers: [ServiceAddress]? = nil) {
            self.servers = servers
        }
    }

    /// `[checks]`: anti-spam and sender authentication (SPEC §2.6). Everything is off unless
    /// the file turns it on, so that a fresh install never rejects mail on a DNS hiccup.
    public struct Checks: Sendable, Hashable {
        /// DNS blocklists: a listed client adds the weight to the score.
        public var dnsbl: [DNSListZone] = []
        /// DNS allowlists: usually negative weights.
        public var dnswl: [DNSListZone] = []
        /// Score at or above this: `550 5.7.1`.
        public var rejectScore = 10
        public var spf: SPFMode = .off
        public var dkimVerify = false
        public var dmarc: DMARCMode = .off
        /// Greylisting delay; nil = off.
        public var greylisting: Duration?
        /// SpamAssassin spamd; nil = off.
        public var spamd: ServiceAddress?
        /// rspamd's HTTP base URL (`http://127.0.0.1:11333`); nil = off.
        public var rspamd: String?
        /// A milter (Sendmail's filter protocol, as Postfix speaks it); nil = off.
        public var milter: FilterEndpoint?
        /// Content larger than this is not sent to the filters (spamc's `-s`, 500 KB, is the
        /// usual practice; large mail is rarely spam).
        public var filterMaxSize = 1_048_576
        /// How long one filter may take for one message, connecting included.
        public var filterTimeout: Duration = .seconds(30)
        /// What a filter that fails or times out means for the message.
        public var filterFailure: FilterFailureAction = .defer
        /// Wait this long before the greeting; a client that talks first is refused
        /// (postscreen's pregreet test). nil = greet at once.
        public var greetPause: Duration?
        /// What an invalid HELO name, or one that claims to be us, does.
        public var helo: HELOMode = .off

        public init() {}
    }
}

/// `[delivery] local`: where mail for local mailboxes goes.
public enum LocalDelivery: Sendable, Hashable {
    /// `<data_dir>/mail/<domain>/<user>/` (SPEC §1.3).
    case maildir
    /// LMTP (RFC 2033) over a Unix socket, e.g. Dovecot's `/run/dovecot/lmtp`.
    case lmtpUnix(path: String)
    /// LMTP over TCP.
    case lmtpTCP(ServiceAddress)
}

/// `[delivery] relayhost`: the router's own type, so that the configuration hands it over as is.
public typealias Relayhost = MXRouter.Relayhost

/// `[checks] filter_failure`.
public enum FilterFailureAction: String, Sendable, Hashable, CaseIterable {
    /// Take the message unfiltered, and log it.
    case accept
    /// `451 4.7.1`: the client tries again later (Postfix's `milter_default_action`).
    case `defer`
}

/// `"100/1h"`: at most `count` events per `window`.
public struct RateLimit: Sendable, Hashable, CustomStringConvertible {
    public var count: Int
    public var window: Duration

    public init(count: Int, window: Duration) {
        self.count = count
        self.window = window
    }

    public var description: String { "\(count)/\(window)" }
}

/// One DNSBL or DNSWL zone with the weight a listing adds to the score.
public struct DNSListZone: Sendable, Hashable {
    public var zone: String
    public var weight: Int

    public init(zone: String, weight: Int) {
        self.zone = zone
        self.weight = weight
    }
}

/// `[[dkim]]`: a key Tern signs mail from `domain` with (RFC 6376).
public struct DKIMSigningKey: Sendable, Hashable {
    public var domain: String
    public var selector: String
    /// PEM file: RSA (2048 bits or more) or Ed25519; absolute path.
    public var privateKey: String

    public init(domain: String, selector: String, privateKey: String) {
        self.domain = domain
        self.selector = selector
        self.privateKey = privateKey
    }
}

extension TernConfiguration {
    /// The configuration `tern serve` runs without a file (SPEC §1.4): SMTP on
    /// 127.0.0.1:2525, submission on 127.0.0.1:5587, final destination for `localhost`
    /// with the mailbox `postmaster`, `127.0.0.0/8` trusted, data in `./tern-data`.
    public static func embeddedDefault(currentDirectory: String) -> TernConfiguration {
        var configuration = TernConfiguration(
            hostname: MachineHostName.current(),
            dataDirectory: ConfigurationPath.resolve("tern-data", against: currentDirectory))
        configuration.listen.smtp = [ServiceAddress(host: "127.0.0.1", port: 2525)]
        configuration.listen.submission = [ServiceAddress(host: "127.0.0.1", port: 5587)]
        configuration.relay.trustedNetworks = [try! NetworkRange("127.0.0.0/8")]
        configuration.domains = [LocalDomain(name: "localhost", mailboxes: ["postmaster"])]
        return configuration
    }

    /// The local domain called `name` (case-insensitive, a trailing dot ignored), if Tern is its
    /// final destination.
    public func localDomain(named name: String) -> LocalDomain? {
        var key = name.lowercased()
        if key.hasSuffix(".") { key.removeLast() }
        return domains.first { $0.name == key }
    }

    /// `trusted_networks` contains `address` (an IPv4-mapped IPv6 address matches IPv4 blocks).
    public func isTrusted(_ address: IPAddress) -> Bool {
        relay.trustedNetworks.contains { $0.contains(address) }
    }
}
