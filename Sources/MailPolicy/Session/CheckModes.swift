/// `[checks] spf`: what an SPF `fail` does (RFC 7208 §8.4).
public enum SPFMode: String, Sendable, Hashable, CaseIterable {
    /// `fail` → `550 5.7.23`.
    case reject
    /// Record the result in `Authentication-Results:` only.
    case tag
    case off
}

/// `[checks] dmarc`: what a failing message under a DMARC policy gets (RFC 7489 §6.6.4).
public enum DMARCMode: String, Sendable, Hashable, CaseIterable {
    /// `p=reject` → `550 5.7.1`; `p=quarantine` → held in the queue.
    case enforce
    case tag
    case off
}

/// `[checks] helo`.
public enum HELOMode: String, Sendable, Hashable, CaseIterable {
    /// A HELO name that is not a domain or address literal, or that claims to be this server,
    /// gets `550 5.7.1` at the first RCPT.
    case reject
    case off
}
