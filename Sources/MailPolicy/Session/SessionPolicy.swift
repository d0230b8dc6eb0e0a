import SMTPProtocol

/// The decisions of the anti-spam and sender-authentication checks for one SMTP session
/// (SPEC §2.6), stage by stage. It holds the facts the checks found and applies the rules, the
/// reject score and the SPF/DMARC/HELO modes to them. Pure: the server runs the lookups and
/// filters, hands their results in, and carries out the verdicts.
///
/// Refusals found before the envelope (a DNS list, a HELO rule) are given at the first RCPT,
/// as Postfix's `smtpd_delay_reject` does: clients cope with a refused recipient better than
/// with a refused greeting, and the log then names who the mail was for.
public struct SessionPolicy: Sendable {
    public struct Configuration: Sendable {
        public var hostname: String
        public var rules: [Rule]
        /// Score at or above this: `550 5.7.1`.
        public var rejectScore: Double
        public var spf: SPFMode
        public var dmarc: DMARCMode
        public var helo: HELOMode

        public init(
            hostname: String, rules: [Rule] = [], rejectScore: Double = 10, spf: SPFMode = .off,
            dmarc: DMARCMode = .off, helo: HELOMode = .off
        ) {
            self.hostname = hostname
            self.rules = rules
            self.rejectScore = rejectScore
            self.spf = spf
            self.dmarc = dmarc
            self.helo = helo
        }
    }

    /// What happens to a message that is taken.
    public enum Disposition: Sendable, Hashable {
        case deliver
        /// Held in the queue until `tern queue release`.
        case quarantine(reason: String)
        /// Delivered to this address instead of the envelope recipients.
        case redirect(String)
        /// Acknowledged and dropped.
        case discard(reason: String)
    }

    /// The end-of-content verdict.
    public enum ContentDecision: Sendable, Hashable {
        case refuse(SMTPReply, reason: String)
        case accept(Disposition, tags: [String], subjectPrefix: String?)
    }

    /// A content filter's verdict in the terms the decision needs.
    public struct FilterResult: Sendable, Hashable {
        public enum Request: Sendable, Hashable {
            case none
            case reject(SMTPReply)
            case `defer`(SMTPReply)
            case discard
            case quarantine(String)
        }

        public var name: String
        public var score: Double?
        public var isSpam: Bool
        public var request: Request

        public init(name: String, score: Double?, isSpam: Bool, request: Request = .none) {
            self.name = name
            self.score = score
            self.isSpam = isSpam
            self.request = request
        }
    }

    /// The DMARC outcome: RFC 7489's result and the disposition the policy asks for after `pct`.
    public struct DMARCOutcome: Sendable, Hashable {
        public enum Requested: Sendable, Hashable { case none, quarantine, reject }
        public var result: String
        public var requested: Requested
        public var domain: String

        public init(result: String, requested: Requested, domain: String) {
            self.result = result
            self.requested = requested
            self.domain = domain
        }
    }

    public let configuration: Configuration
    public private(set) var facts = PolicyFacts()
    /// What the connect and HELO rules (and `helo = "reject"`) decided: for the whole session.
    /// An `accept` there lets every transaction through; a refusal is given at RCPT.
    private var session = RuleEffects()
    /// What the rules of the current transaction decided.
    private var transaction = RuleEffects()
    /// The weight of the DNS lists that list the client.
    private var listScore: Double = 0
    /// The content filters' scores for the current message.
    private var filterScore: Double = 0
    /// Session-stage rules already applied: a second EHLO (after STARTTLS) must not tag or
    /// score twice.
    private var appliedSessionRules: Set<String> = []
    private var appliedTransactionRules: Set<String> = []
    /// The rules that matched since the last transaction began, for the log.
    public private(set) var matchedRules: [String] = []

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Whether an `accept` rule lets this transaction through every later check.
    public var isAccepted: Bool { session.accepted || transaction.accepted }

    // MARK: Stages

    /// The client connected; `listedZones` and `listScore` come from the DNS lists.
    public mutating func connected(
        client: IPAddress?, clientName: String?, listedZones: Set<String>, listScore: Double, authenticated: Bool
    ) {
        facts.client = client
        facts.clientName = clientName
        facts.listedZones = listedZones
        facts.authenticated = authenticated
        self.listScore = listScore
        updateScore()
        applySessionRules(at: .connect)
    }

    /// HELO/EHLO; `findings` are the HELO check's names (`not_fqdn`, `impersonation` …).
    public mutating func helo(_ name: String, findings: Set<String>) {
        facts.helo = name
        facts.heloFindings = findings
        if configuration.helo == .reject, session.refusal == nil,
            let finding = Self.refusedHELOFindings.first(where: { findings.contains($0.rawValue) })
        {
            session.refusal = (
                SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Helo command rejected: \(Self.heloText(finding))"),
                "helo_\(finding.rawValue)"
            )
        }
        applySessionRules(at: .helo)
    }

    /// What `[checks] helo = "reject"` refuses: names that are no names, and lies about who
    /// the client is (Postfix's reject_invalid_helo_hostname and reject_non_fqdn_helo_hostname,
    /// and the claim to be us). A name that does not resolve is left to rules: many honest
    /// servers have one.
    static let refusedHELOFindings: [HELOFinding] = [
        .invalidSyntax, .bareAddress, .addressMismatch, .notFullyQualified, .claimsOurName, .claimsOurAddress,
        .localhost,
    ]

    private static func heloText(_ finding: HELOFinding) -> String {
        switch finding {
        case .invalidSyntax: "Invalid name"
        case .bareAddress: "An address needs brackets, as in [192.0.2.1]"
        case .addressMismatch: "The address literal is not your address"
        case .notFullyQualified: "Need a fully qualified host name"
        case .claimsOurName, .claimsOurAddress: "You are not me"
        case .localhost: "You are not localhost"
        case .unresolvable, .lookupFailed: "Host not found"
        }
    }

    /// A client that authenticated (SPEC §2.4) is past the connection checks.
    public mutating func authenticated() {
        facts.authenticated = true
    }

    /// MAIL FROM; `spf` is the RFC 8601 result name, nil when SPF is off or not asked.
    /// Returns a refusal for the sender.
    public mutating func mail(sender: String, spf: String?, spfExplanation: String? = nil) -> (
        reply: SMTPReply, reason: String
    )? {
        resetTransaction()
        facts.sender = sender
        facts.spf = spf
        applyTransactionRules(at: .mail)
        if let refusal = transaction.refusal, !isAccepted { return refusal }
        // RFC 7208 §8.4: a fail may be refused with 550 5.7.23 (RFC 7372 §3.2).
        if spf == "fail", configuration.spf == .reject, !isAccepted, !facts.authenticated {
            let text = spfExplanation.map { "SPF check failed: \($0)" } ?? "SPF check failed for \(sender)"
            return (SMTPReply(550, EnhancedStatusCode(5, 7, 23), text), "spf_fail")
        }
        return nil
    }

    /// One RCPT TO, already accepted by the recipient policy. Returns a refusal for it.
    public mutating func recipient(_ recipient: String) -> (reply: SMTPReply, reason: String)? {
        guard !isAccepted else { return nil }
        if let refusal = transaction.refusal ?? session.refusal { return refusal }
        var perRecipient = facts
        perRecipient.recipients = [recipient]
        for rule in configuration.rules.matching(at: .recipient, perRecipient) {
            switch rule.action {
            case .accept:
                matchedRules.append(rule.name)
                return nil
            case .reject(let reply), .defer(let reply):
                matchedRules.append(rule.name)
                return (reply, "rule \"\(rule.name)\"")
            default:
                // Tags, scores and dispositions are the message's, whichever recipient matched.
                guard !appliedTransactionRules.contains(rule.name) else { continue }
                appliedTransactionRules.insert(rule.name)
                matchedRules.append(rule.name)
                transaction.apply(rule)
                updateScore()
            }
        }
        // "Before DATA when possible" (SPEC §1.2): the connection's score is known now.
        if facts.score >= configuration.rejectScore {
            return (
                SMTPReply(
                    550, EnhancedStatusCode(5, 7, 1),
                    "Service unavailable; client [\(facts.client.map { "\($0)" } ?? "unknown")] blocked by DNS list policy"
                ),
                "score \(Self.format(facts.score))"
            )
        }
        return nil
    }

    /// The recipients the transaction ended up with, before the content.
    public mutating func recipientsAccepted(_ recipients: [String]) {
        facts.recipients = recipients
    }

    /// The end of the content: header fields, DKIM summary, DMARC and the filters' verdicts.
    public mutating func content(
        header: [(name: String, value: String)], dkim: String?, dmarc: DMARCOutcome?, filters: [FilterResult]
    ) -> ContentDecision {
        facts.header = header
        facts.dkim = dkim
        facts.dmarc = dmarc?.result
        filterScore = filters.reduce(0) { $0 + ($1.score ?? 0) }
        facts.spam = filters.contains { $0.isSpam }
        updateScore()
        if !isAccepted {
            for rule in configuration.rules.matching(at: .data, facts) {
                matchedRules.append(rule.name)
                transaction.apply(rule)
            }
            updateScore()
            if let refusal = transaction.refusal { return .refuse(refusal.reply, reason: refusal.reason) }
        }
        var disposition = transaction.disposition ?? session.disposition
        if !isAccepted {
            // A filter's own request (a milter's reject, rspamd's soft reject) stands unless a
            // rule accepted the message.
            for filter in filters {
                switch filter.request {
                case .none: continue
                case .reject(let reply), .defer(let reply): return .refuse(reply, reason: "filter \(filter.name)")
                case .discard: disposition = disposition ?? .discard(reason: "filter \(filter.name)")
                case .quarantine(let why):
                    disposition = disposition ?? .quarantine(reason: "filter \(filter.name): \(why)")
                }
            }
            if let dmarc, dmarc.result == "fail", configuration.dmarc == .enforce, !facts.authenticated {
                switch dmarc.requested {
                case .reject:
                    // RFC 7489 §6.6.4 / §10.3: 550 5.7.1 in the SMTP session.
                    return .refuse(
                        SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Rejected by the DMARC policy of \(dmarc.domain)"),
                        reason: "dmarc_reject")
                case .quarantine:
                    disposition = disposition ?? .quarantine(reason: "DMARC policy of \(dmarc.domain)")
                case .none: break
                }
            }
            if facts.score >= configuration.rejectScore {
                return .refuse(
                    SMTPReply(
                        550, EnhancedStatusCode(5, 7, 1), "Message refused as spam (score \(Self.format(facts.score)))"),
                    reason: "score \(Self.format(facts.score))")
            }
        }
        return .accept(
            disposition ?? .deliver, tags: session.tags + transaction.tags,
            subjectPrefix: transaction.subjectPrefix ?? session.subjectPrefix)
    }

    /// The score with at most one decimal.
    public static func format(_ score: Double) -> String {
        let tenths = (score * 10).rounded() / 10
        return tenths == tenths.rounded() ? "\(Int(tenths))" : "\(tenths)"
    }

    /// RSET, a new MAIL, or a finished message.
    public mutating func resetTransaction() {
        matchedRules = []
        appliedTransactionRules = []
        transaction = RuleEffects()
        filterScore = 0
        facts.sender = nil
        facts.spf = nil
        facts.recipients = []
        facts.header = nil
        facts.dkim = nil
        facts.dmarc = nil
        facts.spam = false
        updateScore()
    }

    private mutating func updateScore() {
        facts.score = listScore + session.score + transaction.score + filterScore
    }

    // MARK: Rules

    private mutating func applySessionRules(at stage: PolicyStage) {
        guard !session.accepted else { return }
        for rule in configuration.rules.matching(at: stage, facts) where !appliedSessionRules.contains(rule.name) {
            appliedSessionRules.insert(rule.name)
            matchedRules.append(rule.name)
            session.apply(rule)
        }
        updateScore()
    }

    private mutating func applyTransactionRules(at stage: PolicyStage) {
        guard !session.accepted else { return }
        for rule in configuration.rules.matching(at: stage, facts) {
            appliedTransactionRules.insert(rule.name)
            matchedRules.append(rule.name)
            transaction.apply(rule)
        }
        updateScore()
    }
}

/// What matching rules decided for a session or a transaction.
struct RuleEffects: Sendable {
    var accepted = false
    /// The first `reject` or `defer`.
    var refusal: (reply: SMTPReply, reason: String)?
    var disposition: SessionPolicy.Disposition?
    var tags: [String] = []
    var subjectPrefix: String?
    /// Points of `score` rules.
    var score: Double = 0

    mutating func apply(_ rule: Rule) {
        switch rule.action {
        case .accept: accepted = true
        case .reject(let reply), .defer(let reply):
            if refusal == nil { refusal = (reply, "rule \"\(rule.name)\"") }
        case .tag(let header, let subjectPrefix):
            if let header { tags.append(header) }
            if let subjectPrefix { self.subjectPrefix = subjectPrefix }
        case .addScore(let points): score += points
        case .quarantine: disposition = .quarantine(reason: "rule \"\(rule.name)\"")
        case .redirect(let target): disposition = .redirect(target)
        case .discard: disposition = .discard(reason: "rule \"\(rule.name)\"")
        }
    }
}
