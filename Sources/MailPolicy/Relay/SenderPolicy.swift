import SMTPProtocol

/// Decides MAIL FROM for authenticated clients (SPEC §2.4): a user may send only as an address
/// that belongs to them, like Postfix's `reject_sender_login_mismatch`. An address belongs to a
/// login when it is the login itself (with or without a `+detail`), a local alias that delivers
/// to the login, or one of the addresses `[auth.senders]` grants it (`@domain` grants a whole
/// domain). The null sender is always allowed: bounces and receipts a user's client sends.
public struct SenderPolicy: Sendable {
    public var directory: any LocalRecipientDirectory
    /// Off: authenticated users may use any envelope sender.
    public var restrictAuthenticatedSenders: Bool
    /// Login (lower case) → further addresses or `@domain`s it may use.
    public var extraSenders: [String: [String]]
    public var detailSeparator: Character

    public init(
        directory: any LocalRecipientDirectory, restrictAuthenticatedSenders: Bool = true,
        extraSenders: [String: [String]] = [:], detailSeparator: Character = "+"
    ) {
        self.directory = directory
        self.restrictAuthenticatedSenders = restrictAuthenticatedSenders
        self.extraSenders = Dictionary(
            extraSenders.map { ($0.key.lowercased(), $0.value.map { $0.lowercased() }) }, uniquingKeysWith: +)
        self.detailSeparator = detailSeparator
    }

    /// nil accepts the sender; a reply refuses it.
    public func verify(_ sender: ReversePath, client: ClientFacts) -> SMTPReply? {
        guard restrictAuthenticatedSenders, let user = client.authenticatedUser,
            let mailbox = sender.mailbox
        else { return nil }
        guard owns(user: user, mailbox) else {
            return SMTPReply(
                553, EnhancedStatusCode(5, 7, 1),
                "<\(mailbox)>: Sender address rejected: not owned by user \(user)")
        }
        return nil
    }

    public func owns(user rawUser: String, _ mailbox: Mailbox) -> Bool {
        let user = rawUser.lowercased()
        guard case .name = mailbox.domain else { return false }
        let domain = mailbox.domain.canonical
        var localPart = mailbox.localPart.lowercased()
        if let separator = localPart.firstIndex(of: detailSeparator), separator != localPart.startIndex {
            localPart = String(localPart[..<separator])
        }
        let address = "\(localPart)@\(domain)"
        if address == user { return true }
        if let granted = extraSenders[user],
            granted.contains(where: { $0 == address || $0 == "@\(domain)" || $0 == mailbox.description.lowercased() })
        {
            return true
        }
        guard directory.isLocalDomain(domain) else { return false }
        // A login without a domain owns that local part in every local domain.
        if !user.contains("@"), localPart == user { return true }
        guard let targets = directory.resolve(localPart: localPart, domain: domain) else { return false }
        return targets.contains {
            $0.lowercased() == user || (!user.contains("@") && $0.lowercased() == "\(user)@\(domain)")
        }
    }
}
