import SMTPProtocol

/// What Tern knows about its local domains: which exist, and where a local part delivers.
/// TernService adapts the configuration's `[[domains]]` to this.
public protocol LocalRecipientDirectory: Sendable {
    /// Whether Tern is the final destination for `domain` (lower-case, no trailing dot).
    func isLocalDomain(_ domain: String) -> Bool
    /// The addresses a local part of a local domain delivers to, aliases expanded: mailboxes of
    /// local domains as `user@domain` (lower case) and external addresses as written. nil when
    /// the local part exists neither as a mailbox nor as an alias. `localPart` has no `+detail`.
    func resolve(localPart: String, domain: String) -> [String]?
    /// Whether `localPart` (lower case, no `+detail`) is a mailbox of `domain`: a Maildir.
    func isMailbox(localPart: String, domain: String) -> Bool
    /// The domain `<Postmaster>` without a domain refers to (RFC 5321 §4.1.1.3).
    var primaryDomain: String { get }
}

/// The facts about a client that relay control needs.
public struct ClientFacts: Sendable, Hashable {
    public var address: IPAddress?
    /// In `trusted_networks` (SPEC §2.4): may relay without AUTH.
    public var isTrusted: Bool
    public var authenticatedUser: String?

    public init(address: IPAddress?, isTrusted: Bool, authenticatedUser: String? = nil) {
        self.address = address
        self.isTrusted = isTrusted
        self.authenticatedUser = authenticatedUser
    }

    /// RFC 5321 §3.6.2 / SPEC §2.4: only trusted networks and authenticated users may relay.
    public var mayRelay: Bool { isTrusted || authenticatedUser != nil }
}

/// Decides RCPT TO: local recipients are verified against the directory, everything else is
/// relaying and needs `ClientFacts.mayRelay`. Each recipient is judged on its own.
///
/// The address tricks that get mail relayed through naive servers all come down to a local
/// part that names another host (`user%remote@us`, `remote!user@us`, `"user@remote"@us`) or a
/// route (`@us:user@remote`). The parser drops source routes, so `@us:user@remote` is judged
/// as `user@remote`; and a local part holding `@`, `%` or `!` is never a local mailbox here:
/// from a client that may not relay it is refused as relaying, never resolved.
public struct RecipientPolicy: Sendable {
    public var directory: any LocalRecipientDirectory
    /// The separator of `user+detail` addresses (RFC 5233 subaddressing).
    public var detailSeparator: Character

    public init(directory: any LocalRecipientDirectory, detailSeparator: Character = "+") {
        self.directory = directory
        self.detailSeparator = detailSeparator
    }

    public func verify(_ recipient: ForwardPath, client: ClientFacts) -> Result<[String], RecipientRefusal> {
        let mailbox: Mailbox
        switch recipient {
        case .postmaster:
            // RFC 5321 §4.5.1: <Postmaster> must always be accepted.
            guard let targets = directory.resolve(localPart: "postmaster", domain: directory.primaryDomain) else {
                return .failure(Self.unknownUser("Postmaster"))
            }
            return .success(targets)
        case .mailbox(let value):
            mailbox = value
        }

        guard case .name = mailbox.domain, directory.isLocalDomain(mailbox.domain.canonical) else {
            // Not ours (address literals never are): relaying.
            guard client.mayRelay else { return .failure(Self.relayingDenied) }
            return .success([mailbox.description])
        }

        let domain = mailbox.domain.canonical
        if mailbox.localPart.contains(where: { $0 == "@" || $0 == "%" || $0 == "!" }) {
            return .failure(client.mayRelay ? Self.unknownUser(mailbox.description) : Self.relayingDenied)
        }
        let localPart = mailbox.localPart.lowercased()
        if let targets = directory.resolve(localPart: localPart, domain: domain) {
            return .success(targets)
        }
        // user+detail delivers to user; the detail survives in the recipient address and so in
        // Delivered-To (SPEC §1.3).
        if let separator = localPart.firstIndex(of: detailSeparator), separator != localPart.startIndex {
            let base = String(localPart[..<separator])
            if let targets = directory.resolve(localPart: base, domain: domain) {
                return .success(targets.map { $0 == "\(base)@\(domain)" ? "\(localPart)@\(domain)" : $0 })
            }
        }
        return .failure(Self.unknownUser(mailbox.description))
    }

    static let relayingDenied = RecipientRefusal(
        SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Relaying denied"))

    static func unknownUser(_ address: String) -> RecipientRefusal {
        RecipientRefusal(
            SMTPReply(550, EnhancedStatusCode(5, 1, 1), "<\(address)>: Recipient address rejected: User unknown"))
    }
}
