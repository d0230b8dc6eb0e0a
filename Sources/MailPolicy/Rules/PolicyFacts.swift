/// When a fact becomes known in an SMTP session, and so the earliest point a rule that needs
/// it can be decided.
public enum PolicyStage: Int, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible {
    /// The client's address, confirmed name and DNS list results.
    case connect
    /// The HELO/EHLO name and what the HELO checks found.
    case helo
    /// The envelope sender, the SPF result and whether the client authenticated.
    case mail
    /// One recipient (a rule at this stage is decided for each RCPT on its own).
    case recipient
    /// The header, DKIM, DMARC, the content filters and the final score.
    case data

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .connect: "connect"
        case .helo: "helo"
        case .mail: "mail"
        case .recipient: "rcpt"
        case .data: "data"
        }
    }
}

/// What the server knows about a session and its message when rules are checked. Facts that
/// are not known yet (the header before DATA) are nil; a rule that needs them waits.
public struct PolicyFacts: Sendable {
    public var client: IPAddress?
    /// The forward-confirmed reverse name; nil when there is none.
    public var clientName: String?
    public var helo: String?
    /// What the HELO checks found (`HELOFinding` names such as `not_fqdn`).
    public var heloFindings: Set<String> = []
    public var authenticated = false
    /// The reverse path without angle brackets; `""` for `<>`.
    public var sender: String?
    /// The recipients a rule is checked against: the current one at the RCPT stage, all of
    /// them at DATA.
    public var recipients: [String] = []
    /// The header fields, unfolded, in order; nil before the header section is complete.
    public var header: [(name: String, value: String)]?
    /// RFC 8601 result names.
    public var spf: String?
    /// `pass` when any signature verified, else `fail` when one failed, else `none`.
    public var dkim: String?
    public var dmarc: String?
    /// The DNSBL/DNSWL zones that list the client.
    public var listedZones: Set<String> = []
    /// The sum of DNS list weights and content filter scores so far.
    public var score: Double = 0
    /// A content filter called the message spam.
    public var spam = false

    public init() {}
}
