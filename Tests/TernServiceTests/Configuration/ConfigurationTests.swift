import MailPolicy
import Testing

@testable import TernService

/// Both code blocks of SPEC §1.2, as written there.
let specExample = """
    hostname = "mx.example.test"      # banner, EHLO, Received, Message-ID and bounce sender
    data_dir = "/var/lib/tern"        # queue and state; default Maildir root

    [listen]
    smtp        = ["0.0.0.0:25"]      # inbound MX: no AUTH; STARTTLS offered when [tls] is set
    submission  = ["0.0.0.0:587"]     # STARTTLS, then AUTH required before MAIL
    submissions = ["0.0.0.0:465"]     # implicit TLS (RFC 8314), AUTH required before MAIL
    admin       = "127.0.0.1:8025"    # HTTP: admin API, /metrics (when that exists)

    [limits]
    max_message_size       = 26214400 # bytes; advertised as SIZE; larger → 552 5.3.4
    max_recipients         = 100      # per transaction; more → 452 4.5.3
    max_connections        = 10000
    max_connections_per_ip = 50
    command_timeout        = "5m"
    data_timeout           = "10m"

    [relay]
    trusted_networks = ["127.0.0.0/8"]  # CIDRs (v4/v6) that may relay without AUTH; default []

    [tls]
    certificate = "cert.pem"          # PEM chain
    private_key = "key.pem"

    [auth]
    passwd_file = "users.passwd"      # Dovecot passwd-file format: user@domain:{SCHEME}hash
                                      # schemes at least SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, PLAIN

    [[domains]]                       # the domains Tern is final destination for
    name      = "example.test"
    mailboxes = ["alice", "bob"]      # local parts that exist (users in passwd_file exist too)
    aliases   = { postmaster = "alice", sales = ["alice", "carol@elsewhere.test"] }

    [delivery]
    local        = "maildir"          # or "lmtp:unix:/run/dovecot/lmtp", "lmtp:127.0.0.1:24"
    remote_port  = 25                 # port used to reach MX hosts (tests set another)
    relayhost    = ""                 # optional smarthost "[host]:port"; empty = MX routing
    retry        = ["1m", "5m", "15m", "30m", "1h", "2h", "4h"]   # last value repeats
    max_queue_time = "5d"             # then bounce
    delay_warning  = "4h"             # "" disables

    [dns]
    servers = ["127.0.0.1:53"]        # default: nameservers of /etc/resolv.conf

    [checks]                          # anti-spam and sender authentication (section 2.6)
    dnsbl = [{ zone = "zen.spamhaus.org", weight = 10 }]     # listed client IP adds weight
    dnswl = [{ zone = "list.dnswl.org", weight = -10 }]
    reject_score = 10                 # score >= this: 550 5.7.1 (before DATA when possible)
    spf = "reject"                    # "reject" (fail → 550 5.7.23), "tag", "off"
    dkim_verify = true
    dmarc = "enforce"                 # "enforce" (p=reject → 550 5.7.1, quarantine → held), "tag", "off"
    greylisting = ""                  # e.g. "5m"; "" = off
    spamd = ""                        # SpamAssassin spamd "127.0.0.1:783"; "" = off
    rspamd = ""                       # "http://127.0.0.1:11333"; "" = off

    [[dkim]]                          # sign mail from this domain (authenticated or trusted senders)
    domain = "example.test"
    selector = "s2026"
    private_key = "dkim-example.test.pem"   # RSA (2048+) or Ed25519 PEM
    """

/// The problems `text` has, as their descriptions; [] when it is valid.
func problems(_ text: String) -> [String] {
    do {
        _ = try TernConfiguration.parse(text, baseDirectory: "/etc/tern")
        return []
    } catch {
        return error.problems.map(\.description)
    }
}

func parsed(_ text: String) throws -> TernConfiguration {
    try TernConfiguration.parse(text, baseDirectory: "/etc/tern")
}

@Suite struct ConfigurationTests {
    @Test func specExampleIsValid() throws {
        #expect(problems(specExample) == [])
        let configuration = try parsed(specExample)
        #expect(configuration.hostname == "mx.example.test")
        #expect(configuration.dataDirectory == "/var/lib/tern")
        #expect(configuration.listen.smtp == [ServiceAddress(host: "0.0.0.0", port: 25)])
        #expect(configuration.listen.submission == [ServiceAddress(host: "0.0.0.0", port: 587)])
        #expect(configuration.listen.submissions == [ServiceAddress(host: "0.0.0.0", port: 465)])
        #expect(configuration.listen.admin == ServiceAddress(host: "127.0.0.1", port: 8025))
        #expect(configuration.limits.maxMessageSize == 26_214_400)
        #expect(configuration.limits.commandTimeout == .seconds(300))
        #expect(configuration.limits.dataTimeout == .seconds(600))
        #expect(configuration.relay.trustedNetworks == [try NetworkRange("127.0.0.0/8")])
        #expect(configuration.tls == .init(certificate: "/etc/tern/cert.pem", privateKey: "/etc/tern/key.pem"))
        #expect(configuration.auth.passwdFile == "/etc/tern/users.passwd")
        #expect(configuration.domains.map(\.name) == ["example.test"])
        #expect(configuration.domains.first?.mailboxes == ["alice", "bob"])
        #expect(
            configuration.domains.first?.aliases == [
                "postmaster": ["alice"], "sales": ["alice", "carol@elsewhere.test"],
            ])
        #expect(configuration.delivery.local == .maildir)
        #expect(configuration.delivery.relayhost == nil)
        #expect(configuration.delivery.retry.map(\.configurationText) == ["1m", "5m", "15m", "30m", "1h", "2h", "4h"])
        #expect(configuration.delivery.maxQueueTime == .seconds(5 * 86400))
        #expect(configuration.delivery.delayWarning == .seconds(4 * 3600))
        #expect(configuration.dns.servers == [ServiceAddress(host: "127.0.0.1", port: 53)])
        #expect(configuration.checks.dnsbl == [DNSListZone(zone: "zen.spamhaus.org", weight: 10)])
        #expect(configuration.checks.dnswl == [DNSListZone(zone: "list.dnswl.org", weight: -10)])
        #expect(configuration.checks.rejectScore == 10)
        #expect(configuration.checks.spf == .reject)
        #expect(configuration.checks.dkimVerify)
        #expect(configuration.checks.dmarc == .enforce)
        #expect(configuration.checks.greylisting == nil)
        #expect(configuration.checks.spamd == nil)
        #expect(configuration.checks.rspamd == nil)
        #expect(
            configuration.dkim == [
                DKIMSigningKey(domain: "example.test", selector: "s2026", privateKey: "/etc/tern/dkim-example.test.pem")
            ])
    }

    /// One bad snippet → the problems it must give, in order.
    static let badSnippets: [(String, [String])] = [
        ("[limits]\nmax_mesage_size = 5", ["line 2: limits.max_mesage_size: unknown key"]),
        ("\n\n[limits]\nmax_recipients = \"many\"", ["line 4: limits.max_recipients: expected an integer"]),
        ("frobnicate = 1", ["line 1: frobnicate: unknown key"]),
        ("[listn]\nsmtp = []", ["line 1: listn: unknown key"]),
        ("[listen]\nsmpt = [\"127.0.0.1:25\"]", ["line 2: listen.smpt: unknown key"]),
        ("[limits.extra]\nx = 1", ["line 1: limits.extra: unknown key"]),
        ("[relay]\ntrusted = []", ["line 2: relay.trusted: unknown key"]),
        ("[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\nchain = \"x\"", ["line 4: tls.chain: unknown key"]),
        ("[auth]\nusers = \"x\"", ["line 2: auth.users: unknown key"]),
        ("[auth]\nmax_failures_per_ip = 0", ["line 2: auth.max_failures_per_ip: must be at least 1"]),
        ("[auth]\nfailure_window = \"0s\"", ["line 2: auth.failure_window: must be longer than 0s"]),
        ("[auth]\nrestrict_senders = \"yes\"", ["line 2: auth.restrict_senders: expected true or false"]),
        (
            "[auth.senders]\n\"alice@example.test\" = [\"bob\"]",
            [
                "line 2: auth.senders.alice@example.test[0]: \"bob\" is neither an address (user@domain) nor a whole domain (@domain)"
            ]
        ),
        (
            "[listen]\nsubmissions = [\"127.0.0.1:465\"]",
            ["line 2: listen.submissions: needs [tls]: implicit TLS (RFC 8314) has no plaintext start"]
        ),
        ("[delivery]\nretries = []", ["line 2: delivery.retries: unknown key"]),
        ("[dns]\nserver = []", ["line 2: dns.server: unknown key"]),
        ("[checks]\nspam = \"\"", ["line 2: checks.spam: unknown key"]),
        (
            "[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nprivate_key = \"k\"\nalgorithm = \"rsa\"",
            ["line 5: dkim[0].algorithm: unknown key"]
        ),
        ("hostname = \"bad host\"", ["line 1: hostname: \"bad host\" is not a valid domain name"]),
        ("hostname = 7", ["line 1: hostname: expected a string"]),
        ("limits = 5", ["line 1: limits: expected a table ([limits])"]),
        ("[limits]\nmax_message_size = 0", ["line 2: limits.max_message_size: must be greater than 0"]),
        ("[limits]\nmax_message_size = 1.5", ["line 2: limits.max_message_size: expected an integer"]),
        ("[limits]\nmin_data_rate = -1", ["line 2: limits.min_data_rate: must not be negative"]),
        (
            "[limits]\ncommand_timeout = \"5\"",
            ["line 2: limits.command_timeout: \"5\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")"]
        ),
        (
            "[limits]\ndata_timeout = 600",
            ["line 2: limits.data_timeout: expected a duration such as \"90s\", \"5m\", \"4h\" or \"5d\""]
        ),
        ("[limits]\ndata_timeout = \"0s\"", ["line 2: limits.data_timeout: must be longer than 0s"]),
        ("[limits]\nmin_data_rate_grace = \"0s\"", ["line 2: limits.min_data_rate_grace: must be longer than 0s"]),
        ("[listen]\nsmtp = \"0.0.0.0:25\"", ["line 2: listen.smtp: expected an array of strings"]),
        ("[listen]\nsmtp = [25]", ["line 2: listen.smtp[0]: expected a string"]),
        (
            "[listen]\nsmtp = [\n  \"0.0.0.0:25\",\n  \"0.0.0.0:0\",\n]",
            ["line 4: listen.smtp[1]: \"0.0.0.0:0\": port must be a number from 1 to 65535"]
        ),
        (
            "[listen]\nsmtp = [\"0.0.0.0:65536\"]",
            ["line 2: listen.smtp[0]: \"0.0.0.0:65536\": port must be a number from 1 to 65535"]
        ),
        (
            "[listen]\nsmtp = [\"0.0.0.0\"]",
            ["line 2: listen.smtp[0]: \"0.0.0.0\" has no port (write host:port, or [v6]:port)"]
        ),
        (
            "[listen]\nsmtp = [\"::1:25\"]",
            ["line 2: listen.smtp[0]: \"::1:25\": an IPv6 address needs brackets, as in \"[::1]:25\""]
        ),
        (
            "[listen]\nsmtp = [\"[1.2.3.4]:25\"]",
            ["line 2: listen.smtp[0]: \"1.2.3.4\" in brackets is not an IPv6 address"]
        ),
        (
            "[listen]\nsmtp = [\"bad_host:25\"]",
            ["line 2: listen.smtp[0]: \"bad_host\" is not an IP address or host name"]
        ),
        (
            "[listen]\nsmtp = [\"127.0.0.1:25\"]\nsubmission = [\"127.0.0.1:25\"]",
            ["line 3: listen.submission[0]: 127.0.0.1:25 is already used by listen.smtp[0]"]
        ),
        (
            "[relay]\ntrusted_networks = [\"10.1.2.3/8\"]",
            ["line 2: relay.trusted_networks[0]: \"10.1.2.3/8\" has host bits set (did you mean 10.0.0.0?)"]
        ),
        (
            "[relay]\ntrusted_networks = [\"10.0.0.0/40\"]",
            ["line 2: relay.trusted_networks[0]: \"10.0.0.0/40\" has an invalid prefix length"]
        ),
        (
            "[tls]\ncertificate = \"cert.pem\"",
            ["line 1: tls.private_key: missing ([tls] needs both certificate and private_key)"]
        ),
        ("[auth]\npasswd_file = \"\"", ["line 2: auth.passwd_file: must not be empty"]),
        ("[[domains]]\nmailboxes = [\"a\"]", ["line 1: domains[0].name: missing"]),
        ("[[domains]]\nname = \"a..b\"", ["line 2: domains[0].name: \"a..b\" is not a valid domain name"]),
        (
            "[[domains]]\nname = \"a.test\"\n\n[[domains]]\nname = \"A.test\"",
            ["line 5: domains[1].name: duplicate domain \"a.test\" (also domains[0])"]
        ),
        ("[[domains]]\nname = \"a.test\"\nmailbox = [\"x\"]", ["line 3: domains[0].mailbox: unknown key"]),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\"ok\", \"no/slash\", \"OK\"]",
            [
                "line 3: domains[0].mailboxes[1]: \"no/slash\" is not a valid local part",
                "line 3: domains[0].mailboxes[2]: duplicate mailbox \"OK\"",
            ]
        ),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\".x\"]",
            ["line 3: domains[0].mailboxes[0]: \".x\" is not a valid local part"]
        ),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\"x\"]\naliases = { y = 5 }",
            ["line 4: domains[0].aliases.y: expected a string or an array of strings"]
        ),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\"x\"]\naliases = { y = [\"x\", 5] }",
            ["line 4: domains[0].aliases.y[1]: expected a string"]
        ),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\"x\"]\naliases = { y = \"x@\" }",
            ["line 4: domains[0].aliases.y: \"x@\" is not a local part or an address"]
        ),
        (
            "[[domains]]\nname = \"a.test\"\nmailboxes = [\"x\"]\naliases = { y = \"nobody\" }",
            ["line 4: domains[0].aliases.y: \"nobody\" is neither a mailbox nor an alias of a.test"]
        ),
        (
            "[[domains]]\nname = \"a.test\"\n[domains.aliases]\nloop1 = \"loop2\"\nloop2 = \"loop1\"",
            [
                "line 4: domains[0].aliases.loop1: alias loop: loop1@a.test → loop2@a.test → loop1@a.test",
                "line 5: domains[0].aliases.loop2: alias loop: loop2@a.test → loop1@a.test → loop2@a.test",
            ]
        ),
        (
            "[[domains]]\nname = \"a.test\"\naliases = [\"x\"]",
            ["line 3: domains[0].aliases: expected a table of aliases ({ alias = \"target\" })"]
        ),
        ("[domains]\nname = \"a.test\"", ["line 1: domains: expected an array of tables ([[domains]] or [{ … }])"]),
        (
            "[delivery]\nlocal = \"mbox\"",
            ["line 2: delivery.local: \"mbox\": expected \"maildir\", \"lmtp:unix:/path\" or \"lmtp:host:port\""]
        ),
        (
            "[delivery]\nlocal = \"lmtp:unix:\"",
            ["line 2: delivery.local: \"lmtp:unix:\": the LMTP socket path is missing"]
        ),
        (
            "[delivery]\nlocal = \"lmtp:127.0.0.1\"",
            ["line 2: delivery.local: \"127.0.0.1\" has no port (write host:port, or [v6]:port)"]
        ),
        ("[delivery]\nremote_port = 70000", ["line 2: delivery.remote_port: must be a port number from 1 to 65535"]),
        ("[delivery]\nretry = []", ["line 2: delivery.retry: must list at least one duration"]),
        (
            "[delivery]\nretry = [\"1m\", \"-5m\"]",
            ["line 2: delivery.retry[1]: \"-5m\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")"]
        ),
        (
            "[delivery]\nrelayhost = \"[smtp.example.test]:0\"",
            ["line 2: delivery.relayhost: \"[smtp.example.test]:0\": port must be a number from 1 to 65535"]
        ),
        (
            "[delivery]\ndelay_warning = \"soon\"",
            ["line 2: delivery.delay_warning: \"soon\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")"]
        ),
        (
            "[dns]\nservers = [\"ns.example.test\"]",
            [
                "line 2: dns.servers[0]: \"ns.example.test\" must be an IP address (a resolver cannot look up its own servers)"
            ]
        ),
        (
            "[dns]\nservers = []",
            ["line 2: dns.servers: must list at least one server (leave it out to use /etc/resolv.conf)"]
        ),
        (
            "[checks]\ndnsbl = [{ zone = \"zen.spamhaus.org\" }]",
            ["line 2: checks.dnsbl[0].weight: missing"]
        ),
        (
            "[checks]\ndnsbl = [{ zone = \"zen.spamhaus.org\", weight = 1, wieght = 2 }]",
            ["line 2: checks.dnsbl[0].wieght: unknown key"]
        ),
        (
            "[checks]\ndnsbl = [\n  { zone = \"a.test\", weight = 1 },\n  { zone = \"b..test\", weight = 1 },\n]",
            ["line 4: checks.dnsbl[1].zone: \"b..test\" is not a valid domain name"]
        ),
        ("[checks]\nspf = \"softfail\"", ["line 2: checks.spf: \"softfail\": expected \"reject\", \"tag\" or \"off\""]),
        ("[checks]\ndmarc = \"none\"", ["line 2: checks.dmarc: \"none\": expected \"enforce\", \"tag\" or \"off\""]),
        ("[checks]\ndkim_verify = \"yes\"", ["line 2: checks.dkim_verify: expected true or false"]),
        (
            "[checks]\ngreylisting = \"5\"",
            ["line 2: checks.greylisting: \"5\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")"]
        ),
        (
            "[checks]\nrspamd = \"127.0.0.1:11333\"",
            ["line 2: checks.rspamd: \"127.0.0.1:11333\" is not an http:// URL"]
        ),
        (
            "[checks]\nspamd = \"[::1]:99999\"",
            ["line 2: checks.spamd: \"[::1]:99999\": port must be a number from 1 to 65535"]
        ),
        ("[[dkim]]\ndomain = \"example.test\"\nselector = \"s1\"", ["line 1: dkim[0].private_key: missing"]),
        (
            "[[dkim]]\ndomain = \"example.test\"\nselector = \"s 1\"\nprivate_key = \"k.pem\"",
            ["line 3: dkim[0].selector: \"s 1\" is not a valid selector (RFC 6376 §3.1)"]
        ),
        ("limits.max_recipients = \"x\"", ["line 1: limits.max_recipients: expected an integer"]),
        ("[limits]\nmax_recipients = 5\nmax_recipients = 6", ["line 3: "]),
    ]

    @Test(arguments: badSnippets)
    func badSnippet(_ text: String, _ expected: [String]) {
        let found = problems(text)
        if expected == ["line 3: "] {
            // A TOML syntax error: toml++ words it, we only pin the line.
            #expect(found.count == 1 && found[0].hasPrefix("line 3: "), "\(found)")
        } else {
            #expect(found == expected)
        }
    }

    @Test func everyProblemIsReportedAtOnceInLineOrder() {
        let text = """
            hostname = "mx.example.test"

            [limits]
            max_recipients = "many"
            max_mesage_size = 10

            [listen]
            smtp = ["0.0.0.0:99999"]

            [[domains]]
            name = "example.test"
            mailboxes = ["alice"]
            aliases = { sales = "nobody" }
            """
        #expect(
            problems(text) == [
                "line 4: limits.max_recipients: expected an integer",
                "line 5: limits.max_mesage_size: unknown key",
                "line 8: listen.smtp[0]: \"0.0.0.0:99999\": port must be a number from 1 to 65535",
                "line 13: domains[0].aliases.sales: \"nobody\" is neither a mailbox nor an alias of example.test",
            ])
    }

    @Test func syntaxErrorCarriesItsLine() throws {
        let error = #expect(throws: ConfigurationError.self) {
            try TernConfiguration.parse("hostname = \"a.test\"\n\n[limits\n", baseDirectory: "/")
        }
        #expect(error?.problems.count == 1)
        #expect(error?.problems.first?.line == 3)
        #expect(error?.problems.first?.key == "")
    }

    @Test func emptyFileGetsDefaults() throws {
        let configuration = try parsed("")
        #expect(configuration.dataDirectory == "/etc/tern/tern-data")
        #expect(configuration.hostname == MachineHostName.current())
        #expect(configuration.listen == TernConfiguration.Listen())
        #expect(configuration.listen.smtp.isEmpty)
        #expect(configuration.limits == TernConfiguration.Limits())
        #expect(configuration.limits.maxHeaderSize == 102_400)
        #expect(configuration.limits.maxReceivedHeaders == 100)
        #expect(configuration.limits.maxErrors == 20)
        #expect(configuration.limits.minDataRate == 0)
        #expect(configuration.limits.minDataRateGrace == .seconds(30))
        #expect(configuration.relay.trustedNetworks.isEmpty)
        #expect(configuration.tls == nil)
        #expect(configuration.auth.passwdFile == nil)
        #expect(configuration.dns.servers == nil)
        #expect(configuration.delivery.retry.count == 7)
        #expect(configuration.delivery.delayWarning == .seconds(4 * 3600))
        #expect(configuration.checks.spf == .off)
    }

    @Test func authKeys() throws {
        let configuration = try parsed(
            """
            [auth]
            passwd_file = "users.passwd"
            max_failures_per_ip = 5
            max_failures_per_user = 7
            failure_window = "1h"
            max_failures_per_session = 2
            restrict_senders = false

            [auth.senders]
            "Alice@Example.test" = ["info@example.test", "@alice.example"]
            """)
        let auth = configuration.auth
        #expect(auth.passwdFile == "/etc/tern/users.passwd")
        #expect(auth.maxFailuresPerIP == 5 && auth.maxFailuresPerUser == 7 && auth.maxFailuresPerSession == 2)
        #expect(auth.failureWindow == .seconds(3600))
        #expect(auth.restrictSenders == false)
        #expect(auth.senders == ["alice@example.test": ["info@example.test", "@alice.example"]])
        let defaults = try parsed("").auth
        #expect(defaults.passwdFile == nil && defaults.restrictSenders && defaults.maxFailuresPerIP == 10)
    }

    @Test func ourFurtherKeys() throws {
        let configuration = try parsed(
            """
            [limits]
            max_header_size = 65536
            max_received_headers = 50
            max_errors = 5
            min_data_rate = 100
            min_data_rate_grace = "10s"
            """)
        #expect(configuration.limits.minDataRateGrace == .seconds(10))
        #expect(configuration.limits.maxHeaderSize == 65536)
        #expect(configuration.limits.maxReceivedHeaders == 50)
        #expect(configuration.limits.maxErrors == 5)
        #expect(configuration.limits.minDataRate == 100)
    }

    @Test func relativePathsResolveAgainstTheFilesFolder() throws {
        let configuration = try TernConfiguration.parse(
            """
            data_dir = "./data"
            [tls]
            certificate = "certs/../cert.pem"
            private_key = "/abs/key.pem"
            [auth]
            passwd_file = "users.passwd"
            [delivery]
            local = "lmtp:unix:run/lmtp"
            [[dkim]]
            domain = "a.test"
            selector = "s"
            private_key = "keys//dkim.pem"
            """, baseDirectory: "/srv/tern/")
        #expect(configuration.dataDirectory == "/srv/tern/data")
        #expect(configuration.tls?.certificate == "/srv/tern/certs/../cert.pem")
        #expect(configuration.tls?.privateKey == "/abs/key.pem")
        #expect(configuration.auth.passwdFile == "/srv/tern/users.passwd")
        #expect(configuration.delivery.local == .lmtpUnix(path: "/srv/tern/run/lmtp"))
        #expect(configuration.dkim.first?.privateKey == "/srv/tern/keys/dkim.pem")
    }

    @Test func deliveryForms() throws {
        let tcp = try parsed("[delivery]\nlocal = \"lmtp:127.0.0.1:24\"\nrelayhost = \"[smtp.example.test]:587\"")
        #expect(tcp.delivery.local == .lmtpTCP(ServiceAddress(host: "127.0.0.1", port: 24)))
        #expect(tcp.delivery.relayhost == Relayhost(host: "smtp.example.test", port: 587, lookupMX: false))
        let v6 = try parsed("[delivery]\nlocal = \"lmtp:[::1]:24\"\nrelayhost = \"example.test\"\ndelay_warning = \"\"")
        #expect(v6.delivery.local == .lmtpTCP(ServiceAddress(host: "::1", port: 24)))
        #expect(v6.delivery.relayhost == Relayhost(host: "example.test", port: 25, lookupMX: true))
        #expect(v6.delivery.delayWarning == nil)
        let bracketed = try parsed("[delivery]\nrelayhost = \"[2001:db8::1]\"")
        #expect(bracketed.delivery.relayhost == Relayhost(host: "2001:db8::1", port: 25, lookupMX: false))
    }

    @Test func checksForms() throws {
        let configuration = try parsed(
            """
            [checks]
            greylisting = "5m"
            spamd = "127.0.0.1"
            rspamd = "http://127.0.0.1:11333"
            """)
        #expect(configuration.checks.greylisting == .seconds(300))
        #expect(configuration.checks.spamd == ServiceAddress(host: "127.0.0.1", port: 783))
        #expect(configuration.checks.rspamd == "http://127.0.0.1:11333")
    }

    @Test func embeddedDefault() throws {
        let configuration = TernConfiguration.embeddedDefault(currentDirectory: "/home/me")
        #expect(configuration.dataDirectory == "/home/me/tern-data")
        #expect(configuration.hostname == MachineHostName.current())
        #expect(!configuration.hostname.isEmpty)
        #expect(configuration.listen.smtp == [ServiceAddress(host: "127.0.0.1", port: 2525)])
        #expect(configuration.listen.submission == [ServiceAddress(host: "127.0.0.1", port: 5587)])
        #expect(configuration.listen.submissions.isEmpty)
        #expect(configuration.relay.trustedNetworks == [try NetworkRange("127.0.0.0/8")])
        #expect(configuration.isTrusted(try #require(IPAddress("::ffff:127.0.0.1"))))
        #expect(!configuration.isTrusted(try #require(IPAddress("192.0.2.1"))))
        #expect(configuration.domains == [LocalDomain(name: "localhost", mailboxes: ["postmaster"])])
        #expect(configuration.resolve(localPart: "Postmaster", domain: "LOCALHOST") == ["postmaster@localhost"])
        #expect(configuration.dns.servers == nil)
        #expect(configuration.tls == nil)
        #expect(configuration.auth.passwdFile == nil)
        #expect(configuration.delivery.local == .maildir)
    }

    @Test func loadReadsAFileAndResolvesAgainstItsFolder() throws {
        let folder = "/tmp/tern-config-test-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdirForTest(folder))
        let file = folder + "/tern.toml"
        try #require(writeForTest(file, "data_dir = \"spool\"\n[limits]\nmax_recipients = 7\n"))
        let configuration = try TernConfiguration.load(contentsOf: file)
        #expect(configuration.dataDirectory == folder + "/spool")
        #expect(configuration.limits.maxRecipients == 7)

        let error = #expect(throws: ConfigurationError.self) {
            try TernConfiguration.load(contentsOf: folder + "/missing.toml")
        }
        #expect(error?.problems.first?.description.hasPrefix("cannot read \(folder)/missing.toml") == true)
    }
}
